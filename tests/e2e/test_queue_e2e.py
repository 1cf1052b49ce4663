"""End to end: fork pull requests cannot starve a release tag, and a waiting one says why.

A real `isorunner serve` with one build slot and a cap of two fork builds per author:
Mallory opens three fork pull requests (the first keeps the slot busy), then the
maintainer pushes a release tag. The tag builds next, before Mallory's second pull
request; her third waits, and its pending status says why.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import (
    GITHUB_TOKEN,
    Isorunner,
    Repos,
    github_pull_request,
    github_push,
    make_profile,
    make_server,
    new_sha,
)
from tests.e2e.fakeforge import FakeForge
from tests.runner.packages.upstream import UpstreamServer

pytestmark = pytest.mark.integration

ADMIN_TOKEN = "e2e-queue-admin-token-0123456789"
REPO = "acme/queue"
FORK = "mallory/queue"


@pytest.fixture(scope="module")
def server(state_root: Path, forge: FakeForge, upstream: UpstreamServer) -> Iterator[Isorunner]:
    """A real `isorunner serve`, one build at a time, two fork builds per author."""
    running = make_server(
        state_root,
        forge,
        Repos(github=[REPO]),
        upstream,
        server_extra=f'admin_token = "{ADMIN_TOKEN}"\n',
        sandbox_extra="max_untrusted_per_author = 2\nmax_untrusted_per_repo = 4\n",
    )
    running.start()
    yield running
    running.close()


def test_a_release_tag_builds_before_queued_fork_pull_requests(
    server: Isorunner, forge: FakeForge, profiles: Path
) -> None:
    """The tag runs right after the fork build in progress; the third fork PR waits, saying why."""
    busy, queued, waiting, tag = new_sha(), new_sha(), new_sha(), new_sha()
    forge.seed_github(
        FORK,
        token=GITHUB_TOKEN,
        commits={
            busy: make_profile(profiles, "busy", append="sleep 8"),
            queued: make_profile(profiles, "queued"),
            waiting: make_profile(profiles, "waiting"),
        },
    )
    # Fork commits are reachable in the base too (refs/pull/N/head): statuses go there.
    base = make_profile(profiles, "tag")
    forge.seed_github(
        REPO, token=GITHUB_TOKEN, commits={sha: base for sha in (busy, queued, waiting, tag)}
    )
    first = server.github("pull_request", github_pull_request(REPO, FORK, busy, number=1))
    server.wait_in_container(first)
    second = server.github("pull_request", github_pull_request(REPO, FORK, queued, number=2))
    third = server.github("pull_request", github_pull_request(REPO, FORK, waiting, number=3))
    release = server.github("push", github_push(REPO, tag, "refs/tags/v1.0"))

    tagged = server.wait_finished(release, timeout=120)
    assert tagged["state"] == "succeeded"
    # The second fork PR came first, but starts only once the tag has run.
    started = server.build(second)["started_at"]
    assert started is None or str(started) >= str(tagged["finished_at"])
    held = server.build(third)
    assert held["state"] == "queued"
    reason = (
        "waiting: 2 untrusted builds of mallory are queued or running ahead of it"
        " (sandbox.max_untrusted_per_author = 2)"
    )
    assert held["detail"] == reason
    pending = server.wait_statuses(forge, "github", REPO, waiting, bool)
    assert (pending[0].state, pending[0].description) == ("pending", reason)
    for build_id in (second, third):
        httpx.post(
            f"{server.url}/api/builds/{build_id}/cancel",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            timeout=30,
        )
    server.wait_finished(third)

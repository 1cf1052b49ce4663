"""End to end when things go wrong around a build: a flaky forge, a newer push.

One `isorunner serve` and one fake forge serve the module; faults are armed on each
test's own repository paths, so they never hit another test's requests.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import (
    GITHUB_TOKEN,
    Isorunner,
    Repos,
    final_status,
    github_push,
    make_profile,
    make_server,
    new_sha,
    release_settled,
    sandbox_leftovers,
)
from tests.e2e.fakeforge import FakeForge
from tests.runner.packages.upstream import UpstreamServer

pytestmark = pytest.mark.integration

FLAKY_STATUS = "acme/flaky-statuses"
FLAKY_UPLOAD = "acme/flaky-uploads"
BUSY = "acme/busy"
REPOS = Repos(github=[FLAKY_STATUS, FLAKY_UPLOAD, BUSY])
SLOW_SECONDS = 20
DONE = final_status("success", "failure", "error")


@pytest.fixture(scope="module")
def server(state_root: Path, forge: FakeForge, upstream: UpstreamServer) -> Iterator[Isorunner]:
    """A real `isorunner serve` for this module, stopped at its end."""
    running = make_server(state_root, forge, REPOS, upstream)
    running.start()
    yield running
    running.close()


def test_statuses_survive_5xx_and_429_in_order(
    server: Isorunner, forge: FakeForge, profiles: Path
) -> None:
    """Statuses refused with 502 twice and 429 (Retry-After: 1) still all arrive, in order."""
    sha = new_sha()
    forge.seed_github(FLAKY_STATUS, token=GITHUB_TOKEN, commits={sha: make_profile(profiles, "s")})
    path = f"/github/api/repos/{FLAKY_STATUS}/statuses/*"
    forge.fail("POST", path, status=502, times=2)
    forge.fail("POST", path, status=429, times=1, retry_after=1)
    build_id = server.github("push", github_push(FLAKY_STATUS, sha, "refs/heads/main"))

    statuses = server.wait_statuses(forge, "github", FLAKY_STATUS, sha, DONE)

    assert [(s.state, s.description) for s in statuses[:2]] == [
        ("pending", "Queued"),
        ("pending", "Building the ISO"),
    ]
    assert [s.state for s in statuses] == ["pending", "pending", "success"]
    answers = [r.status for r in forge.requests("POST", path)]
    assert answers == [502, 502, 429, 201, 201, 201], answers
    assert forge.pending_faults() == []
    assert server.build(build_id)["state"] == "succeeded"
    assert forge.violations() == []


def test_release_upload_5xx_ends_with_one_complete_copy_of_each_asset(
    server: Isorunner, forge: FakeForge, profiles: Path
) -> None:
    """Upload 5xx (one after the asset was stored) still end in one complete copy of each asset."""
    sha = new_sha()
    profile = make_profile(profiles, "u")
    forge.seed_github(FLAKY_UPLOAD, token=GITHUB_TOKEN, commits={sha: profile}, refs={"v2": sha})
    uploads = f"/github/uploads/repos/{FLAKY_UPLOAD}/releases/*/assets"
    forge.fail("POST", uploads, status=502, times=1, after_handling=True)
    forge.fail("POST", uploads, status=503, times=1)
    build_id = server.github("push", github_push(FLAKY_UPLOAD, sha, "refs/tags/v2.0"))

    statuses = server.wait_statuses(forge, "github", FLAKY_UPLOAD, sha, release_settled)
    assert statuses[-1].state == "success", statuses[-1]
    assert server.wait_release(build_id)["state"] == "published"

    (release,) = forge.releases("github", FLAKY_UPLOAD)
    assert not release.draft
    names = [asset.name for asset in release.assets]
    assert len(names) == len(set(names)) == 3, names
    artifacts = server.root / "artifacts" / str(build_id)
    for asset in release.assets:
        assert asset.state == "uploaded"
        assert asset.size == (artifacts / asset.name).stat().st_size, asset
        assert asset.path.stat().st_size == asset.size
    answers = [r.status for r in forge.requests("POST", uploads)]
    assert answers.count(502) == 1, answers
    assert answers.count(503) == 1, answers
    assert forge.pending_faults() == []
    assert forge.violations() == []


def test_newer_push_supersedes_the_running_build(
    server: Isorunner, forge: FakeForge, profiles: Path
) -> None:
    """A newer push to the branch cancels the running build ("superseded by <sha7>") and builds."""
    old, new = new_sha(), new_sha()
    slow = make_profile(profiles, "slow", append=f"sleep {SLOW_SECONDS}")
    forge.seed_github(
        BUSY, token=GITHUB_TOKEN, commits={old: slow, new: make_profile(profiles, "n")}
    )
    first = server.github("push", github_push(BUSY, old, "refs/heads/main"))
    server.wait_in_container(first)
    started = time.monotonic()
    second = server.github("push", github_push(BUSY, new, "refs/heads/main"))

    old_statuses = server.wait_statuses(forge, "github", BUSY, old, DONE)
    new_statuses = server.wait_statuses(forge, "github", BUSY, new, DONE)

    assert time.monotonic() - started < SLOW_SECONDS, "the old build was not stopped"
    cancelled = server.build(first)
    assert cancelled["state"] == "cancelled", cancelled
    assert cancelled["detail"] == f"superseded by {new[:7]}"
    assert old_statuses[-1].state == "error"
    assert old_statuses[-1].description == f"superseded by {new[:7]}"
    assert [s.state for s in new_statuses] == ["pending", "pending", "success"]
    assert server.wait_finished(second)["state"] == "succeeded"
    server.wait_for(
        f"the sandbox of build {first} to be gone",
        lambda: sandbox_leftovers(server, first) == [],
        timeout=10,
    )

"""End to end: force-pushes and replayed deliveries against a real `isorunner serve`.

A, B, then A forced back (B -> A) must build A and stop B, on GitHub and on GitLab
(which sends no `forced` flag); a delivery answered "duplicate" keeps that answer when
it is sent again byte for byte, after its build was cancelled.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import (
    COMMIT_TIME,
    GITHUB_SECRET,
    GITHUB_TOKEN,
    GITLAB_TOKEN,
    Isorunner,
    Repos,
    github_push,
    gitlab_push,
    make_profile,
    make_server,
    new_sha,
)
from tests.e2e.fakeforge import FakeForge
from tests.runner.packages.upstream import UpstreamServer

pytestmark = pytest.mark.integration

ADMIN_TOKEN = "e2e-lines-admin-token-0123456789"
GH_REPO = "acme/lines"
GL_PROJECT = "lab/lines"
GL_PROJECT_ID = 5151
# Build B sleeps in its profile, so that it is still running when A comes back.
SLOW = "sleep 30"


@pytest.fixture(scope="module")
def server(state_root: Path, forge: FakeForge, upstream: UpstreamServer) -> Iterator[Isorunner]:
    """A real `isorunner serve` with an admin token, for this module."""
    running = make_server(
        state_root,
        forge,
        Repos(github=[GH_REPO], gitlab=[GL_PROJECT]),
        upstream,
        server_extra=f'admin_token = "{ADMIN_TOKEN}"\n',
    )
    running.start()
    yield running
    running.close()


def _outcome(server: Isorunner, build_id: int) -> tuple[object, object]:
    record = server.wait_finished(build_id, timeout=120)
    return record["state"], record["detail"]


def test_github_force_push_back_builds_it_and_stops_the_replaced_commit(
    server: Isorunner, forge: FakeForge, profiles: Path
) -> None:
    """GitHub push A, push B, force-push A (before = B): A builds, B is cancelled."""
    a, b = new_sha(), new_sha()
    forge.seed_github(
        GH_REPO,
        token=GITHUB_TOKEN,
        commits={
            a: make_profile(profiles, "gh-a"),
            b: make_profile(profiles, "gh-b", append=SLOW),
        },
    )
    first = server.github("push", github_push(GH_REPO, a, "refs/heads/main"))
    second = server.github("push", github_push(GH_REPO, b, "refs/heads/main", before=a))
    back = server.github("push", github_push(GH_REPO, a, "refs/heads/main", before=b, forced=True))

    assert _outcome(server, back)[0] == "succeeded"
    assert _outcome(server, second) == ("cancelled", f"superseded by {a[:7]}")
    assert _outcome(server, first)[0] == "cancelled"
    final = forge.statuses("github", GH_REPO, a)[-1]
    assert (final.state, final.target_url) == ("success", f"{server.url}/builds/{back}")


def test_gitlab_force_push_back_builds_it_and_stops_the_replaced_commit(
    server: Isorunner, forge: FakeForge, profiles: Path
) -> None:
    """GitLab push A, push B, push A with before = B (no forced flag): A builds, B stops."""
    a, b = new_sha(), new_sha()
    forge.seed_gitlab(
        GL_PROJECT,
        token=GITLAB_TOKEN,
        commits={
            a: make_profile(profiles, "gl-a"),
            b: make_profile(profiles, "gl-b", append=SLOW),
        },
        refs={"main": a},
        project_id=GL_PROJECT_ID,
    )
    ref = "refs/heads/main"
    server.gitlab("Push Hook", gitlab_push(GL_PROJECT, GL_PROJECT_ID, a, ref))
    second = server.gitlab("Push Hook", gitlab_push(GL_PROJECT, GL_PROJECT_ID, b, ref, before=a))
    back = server.gitlab("Push Hook", gitlab_push(GL_PROJECT, GL_PROJECT_ID, a, ref, before=b))

    assert _outcome(server, back)[0] == "succeeded"
    assert _outcome(server, second) == ("cancelled", f"superseded by {a[:7]}")
    assert forge.statuses("gitlab", GL_PROJECT, a)[-1].state == "success"


def _pull_request_delivery(sha: str) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(
        {
            "action": "opened",
            "number": 12,
            "pull_request": {
                "number": 12,
                "title": "Same commit as main",
                "updated_at": COMMIT_TIME,
                "head": {"ref": "feature", "sha": sha, "repo": {"full_name": GH_REPO}},
                "base": {"ref": "main", "repo": {"full_name": GH_REPO}},
            },
            "sender": {"login": "alice"},
        }
    ).encode()
    digest = hmac.new(GITHUB_SECRET.encode(), body, hashlib.sha256).hexdigest()
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": "pull_request",
        "X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958",
        "X-GitHub-Hook-ID": "1",
        "X-Hub-Signature-256": f"sha256={digest}",
    }
    return body, headers


def test_a_duplicate_delivery_sent_again_after_its_build_was_cancelled_keeps_its_answer(
    server: Isorunner, forge: FakeForge, profiles: Path
) -> None:
    """A PR delivery answered "duplicate of build N", replayed after N was cancelled, is N."""
    sha = new_sha()
    forge.seed_github(
        GH_REPO, token=GITHUB_TOKEN, commits={sha: make_profile(profiles, "dup", append=SLOW)}
    )
    build_id = server.github("push", github_push(GH_REPO, sha, "refs/heads/main"))
    body, headers = _pull_request_delivery(sha)
    url = f"{server.url}/webhooks/github"
    first = httpx.post(url, content=body, headers=headers, timeout=30)
    assert (first.status_code, first.json()["build_id"]) == (200, build_id)

    cancel = httpx.post(
        f"{server.url}/api/builds/{build_id}/cancel",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        timeout=30,
    )
    assert cancel.status_code == 200, cancel.text
    server.wait_finished(build_id)
    again = httpx.post(url, content=body, headers=headers, timeout=30)

    assert again.status_code == 200, again.text
    assert again.json() == {**first.json(), "duplicate": True}
    newest = httpx.get(f"{server.url}/api/builds", timeout=30).json()["builds"][0]
    assert newest["id"] == build_id  # no new build was made

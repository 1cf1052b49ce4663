"""End to end on GitLab: token-checked webhooks → real server and sandbox → the fake GitLab.

The fake enforces GitLab's commit status state machine: a transition GitLab refuses is
answered 400, and these tests check that isorunner never posts one.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import (
    CONTEXT,
    GITLAB_TOKEN,
    Isorunner,
    Repos,
    checksums,
    final_status,
    gitlab_push,
    make_profile,
    make_server,
    new_sha,
    release_settled,
)
from tests.e2e.fakeforge import FakeForge
from tests.runner.packages.upstream import UpstreamServer

pytestmark = pytest.mark.integration

PROJECT = "lab/sub/archlive"
PROJECT_ID = 4242
REPOS = Repos(gitlab=[PROJECT])
DONE = final_status("success", "failed", "canceled")


@pytest.fixture(scope="module")
def server(state_root: Path, forge: FakeForge, upstream: UpstreamServer) -> Iterator[Isorunner]:
    """A real `isorunner serve` for this module, stopped at its end."""
    running = make_server(state_root, forge, REPOS, upstream)
    running.start()
    yield running
    running.close()


@pytest.fixture(scope="module")
def commits(forge: FakeForge, profiles: Path) -> dict[str, str]:
    """The project, seeded with a branch commit and a tagged commit: ref name → sha."""
    refs = {"main": new_sha(), "v1.0": new_sha()}
    forge.seed_gitlab(
        PROJECT,
        token=GITLAB_TOKEN,
        commits={sha: make_profile(profiles, name) for name, sha in refs.items()},
        refs=refs,
        project_id=PROJECT_ID,
    )
    return refs


def _refused(forge: FakeForge) -> list[tuple[int, object]]:
    return [
        (r.status, r.json)
        for r in forge.requests("POST", "/gitlab/api/v4/projects/*/statuses/*")
        if r.status >= 400
    ]


def test_push_reports_pending_running_success_without_refused_transitions(
    server: Isorunner, forge: FakeForge, commits: dict[str, str]
) -> None:
    """A GitLab push shows pending, running, then success, and no status is refused."""
    sha = commits["main"]
    build_id = server.gitlab("Push Hook", gitlab_push(PROJECT, PROJECT_ID, sha, "refs/heads/main"))

    statuses = server.wait_statuses(forge, "gitlab", PROJECT, sha, DONE)
    record = server.wait_finished(build_id)

    assert record["state"] == "succeeded", record
    assert [s.state for s in statuses] == ["pending", "running", "success"]
    assert {(s.context, s.ref) for s in statuses} == {(CONTEXT, "main")}
    assert statuses[-1].target_url == f"{server.url}/builds/{build_id}"
    assert _refused(forge) == []
    assert forge.packages(PROJECT) == []
    assert forge.releases("gitlab", PROJECT) == []


def test_tag_push_publishes_package_files_and_a_release_with_links(
    server: Isorunner, forge: FakeForge, commits: dict[str, str]
) -> None:
    """A GitLab release tag stores the ISO and sums as package files linked from a release."""
    sha = commits["v1.0"]
    body = gitlab_push(PROJECT, PROJECT_ID, sha, "refs/tags/v1.0")
    build_id = server.gitlab("Tag Push Hook", body)

    statuses = server.wait_statuses(forge, "gitlab", PROJECT, sha, release_settled)
    record = server.wait_finished(build_id)

    assert record["state"] == "succeeded", record
    assert [s.state for s in statuses] == ["pending", "running", "success", "success"]
    assert str(statuses[-1].description).endswith("; release published")
    assert server.wait_release(build_id)["url"] == (
        f"{forge.base_url}/gitlab/{PROJECT}/-/releases/v1.0"
    )
    assert _refused(forge) == []
    files = {f.name: f for f in forge.packages(PROJECT)}
    (iso,) = [name for name in files if name.endswith(".iso")]
    assert sorted(files) == sorted([iso, "sha256sums", "b2sums"])
    assert {f.version for f in files.values()} == {"v1.0"}
    assert checksums(files["sha256sums"].path.read_text())[iso] == files[iso].sha256
    assert iso in checksums(files["b2sums"].path.read_text())
    (release,) = forge.releases("gitlab", PROJECT)
    assert release.tag_name == "v1.0"
    links = {link.name: link for link in release.links}
    assert sorted(links) == sorted(files)
    for name, link in links.items():
        assert link.url.endswith(f"/packages/generic/{files[name].package}/v1.0/{name}"), link
        assert link.direct_asset_path == f"/{name}"

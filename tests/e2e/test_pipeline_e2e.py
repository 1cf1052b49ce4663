"""End to end on GitHub: signed webhook → real server → real sandbox → the fake forge.

One `isorunner serve` and one fake forge serve the whole module; each test uses its own
repository, so their statuses and releases never mix.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import (
    CONTEXT,
    GITHUB_TOKEN,
    Isorunner,
    Repos,
    checksums,
    final_status,
    github_pull_request,
    github_push,
    make_profile,
    make_server,
    new_sha,
    release_settled,
)
from tests.e2e.fakeforge import FakeForge
from tests.runner.packages.upstream import UpstreamServer

pytestmark = pytest.mark.integration

BRANCH = "acme/branch"
TAG = "acme/tagged"
PR_BASE = "acme/upstream"
PR_FORK = "mallory/upstream"
HOSTILE = "acme/hostile"
BROKEN = "acme/broken"
REPOS = Repos(github=[BRANCH, TAG, PR_BASE, HOSTILE, BROKEN])
DONE = final_status("success", "failure", "error")


@pytest.fixture(scope="module")
def server(state_root: Path, forge: FakeForge, upstream: UpstreamServer) -> Iterator[Isorunner]:
    """A real `isorunner serve` for this module, stopped at its end."""
    running = make_server(state_root, forge, REPOS, upstream)
    running.start()
    yield running
    running.close()


def test_branch_push_reports_queued_running_success_and_serves_the_log(
    server: Isorunner, forge: FakeForge, profiles: Path
) -> None:
    """A branch push ends with pending, pending, success statuses linking the build page."""
    sha = new_sha()
    forge.seed_github(BRANCH, token=GITHUB_TOKEN, commits={sha: make_profile(profiles, "branch")})
    build_id = server.github("push", github_push(BRANCH, sha, "refs/heads/main"))

    statuses = server.wait_statuses(forge, "github", BRANCH, sha, final_status("success"))
    record = server.wait_finished(build_id)

    assert record["state"] == "succeeded", record
    assert [s.state for s in statuses] == ["pending", "pending", "success"]
    assert [s.description for s in statuses[:2]] == ["Queued", "Building the ISO"]
    assert {s.context for s in statuses} == {CONTEXT}
    assert {s.target_url for s in statuses} == {f"{server.url}/builds/{build_id}"}
    assert forge.releases("github", BRANCH) == []
    log = server.build_log(build_id)
    assert "[mkarchiso] INFO:" in log
    assert f"[isorunner] build {build_id}: github {BRANCH}" in log
    assert forge.violations() == []


def test_release_tag_publishes_iso_and_checksums(
    server: Isorunner, forge: FakeForge, profiles: Path
) -> None:
    """A release tag publishes a non-draft release with the ISO, sha256sums and b2sums."""
    sha = new_sha()
    profile = make_profile(profiles, "tagged")
    forge.seed_github(TAG, token=GITHUB_TOKEN, commits={sha: profile}, refs={"v1.0": sha})
    build_id = server.github("push", github_push(TAG, sha, "refs/tags/v1.0"))

    statuses = server.wait_statuses(forge, "github", TAG, sha, release_settled)
    assert [(s.state, s.description) for s in statuses[-2:]] == [
        ("success", f"{server.build(build_id)['detail']}; publishing the release"),
        ("success", f"{server.build(build_id)['detail']}; release published"),
    ]
    published = server.wait_release(build_id)
    assert published["state"] == "published"
    assert published["url"] == f"{forge.base_url}/github/web/{TAG}/releases/tag/v1.0"

    (release,) = forge.releases("github", TAG)
    assert release.tag_name == "v1.0"
    assert not release.draft
    assert release.published_at
    assets = {asset.name: asset for asset in release.assets}
    (iso,) = [name for name in assets if name.endswith(".iso")]
    assert sorted(assets) == sorted([iso, "sha256sums", "b2sums"])
    assert {asset.state for asset in assets.values()} == {"uploaded"}
    sha256sums = checksums(assets["sha256sums"].path.read_text())
    assert sha256sums[iso] == assets[iso].sha256
    assert iso in checksums(assets["b2sums"].path.read_text())
    assert forge.violations() == []


def test_fork_pull_request_builds_from_the_fork_and_only_posts_statuses(
    server: Isorunner, forge: FakeForge, profiles: Path
) -> None:
    """A fork's pull request builds from the fork's archive; only the base gets statuses."""
    sha = new_sha()
    # The base holds a profile that cannot build at that commit: success proves the
    # archive came from the fork.
    broken = make_profile(profiles, "pr-base", packages="no-such-package\n")
    forge.seed_github(PR_BASE, token=GITHUB_TOKEN, commits={sha: broken})
    fork = make_profile(profiles, "pr-fork")
    forge.seed_github(PR_FORK, token=GITHUB_TOKEN, commits={sha: fork}, refs={"feature": sha})
    body = github_pull_request(PR_BASE, PR_FORK, sha, number=7)
    build_id = server.github("pull_request", body)

    statuses = server.wait_statuses(forge, "github", PR_BASE, sha, DONE)
    record = server.wait_finished(build_id)

    assert [s.state for s in statuses] == ["pending", "pending", "success"], statuses
    assert record["state"] == "succeeded"
    request = record["request"]
    assert isinstance(request, dict)
    assert (request["trusted"], request["source_repo"]) == (False, PR_FORK)
    assert forge.statuses("github", PR_FORK, sha) == []
    tarballs = [r.path for r in forge.requests("GET", "/github/api/repos/*/tarball/*")]
    assert f"/github/api/repos/{PR_FORK}/tarball/{sha}" in tarballs
    assert f"/github/api/repos/{PR_BASE}/tarball/{sha}" not in tarballs
    assert forge.releases("github", PR_BASE) == []
    assert forge.releases("github", PR_FORK) == []
    assert forge.requests("POST", f"/github/api/repos/{PR_BASE}/releases") == []


def _hostile_archive(path: Path, profile: Path, top: str, evil: list[tarfile.TarInfo]) -> Path:
    """A tar.gz of `profile` under `top/`, followed by the `evil` members."""
    with tarfile.open(path, "w:gz") as tar:
        tar.add(profile, arcname=top)
        for member in evil:
            data = b"pwned\n" if member.isfile() else b""
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data) if data else None)
    return path


@pytest.mark.parametrize("attack", ["dotdot", "symlink-then-write"])
def test_hostile_archive_fails_naming_the_entry_and_writes_nothing_outside(
    server: Isorunner, forge: FakeForge, profiles: Path, attack: str
) -> None:
    """A profile archive escaping its directory fails the build, the status naming the entry."""
    sha = new_sha()
    top = f"acme-hostile-{sha[:7]}"
    outside = profiles / f"outside-{attack}"
    outside.mkdir()
    if attack == "dotdot":
        escaped = f"escaped-{sha[:8]}"
        entry = f"{top}/../../{escaped}"
        member = tarfile.TarInfo(entry)
        evil = [member]
    else:
        link = tarfile.TarInfo(f"{top}/airootfs/out")
        link.type = tarfile.SYMTYPE
        link.linkname = str(outside)
        entry = f"{top}/airootfs/out/evil"
        evil = [link, tarfile.TarInfo(entry)]
    archive = _hostile_archive(
        profiles / f"hostile-{attack}.tar.gz",
        make_profile(profiles, f"hostile-{attack}"),
        top,
        evil,
    )
    forge.seed_github(HOSTILE, token=GITHUB_TOKEN, commits={sha: archive})
    build_id = server.github("push", github_push(HOSTILE, sha, "refs/heads/main"))

    statuses = server.wait_statuses(forge, "github", HOSTILE, sha, DONE)
    record = server.wait_finished(build_id)

    assert record["state"] == "failed", record
    assert statuses[-1].state == "failure"
    description = statuses[-1].description or ""
    assert description.startswith("profile archive rejected"), description
    assert repr(entry) in description, description
    assert list(outside.iterdir()) == []
    if attack == "dotdot":
        leaks = [p for p in server.root.rglob(escaped)] + list(profiles.rglob(escaped))
        assert leaks == []
    assert "[mkarchiso]" not in server.build_log(build_id)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ("no-profiledef", "profiledef.sh"),
        ("missing-package", "package not found: no-such-package (searched core)"),
    ],
)
def test_broken_profile_fails_with_the_reason(
    server: Isorunner, forge: FakeForge, profiles: Path, change: str, reason: str
) -> None:
    """A profile without profiledef.sh, or naming a package no repository has, fails with why."""
    sha = new_sha()
    if change == "no-profiledef":
        profile = make_profile(profiles, change)
        (profile / "profiledef.sh").unlink()
    else:
        profile = make_profile(profiles, change, packages="isorunner-base\nno-such-package\n")
    forge.seed_github(BROKEN, token=GITHUB_TOKEN, commits={sha: profile})
    build_id = server.github("push", github_push(BROKEN, sha, "refs/heads/main"))

    statuses = server.wait_statuses(forge, "github", BROKEN, sha, DONE)
    record = server.wait_finished(build_id)

    assert record["state"] == "failed", record
    assert statuses[-1].state == "failure"
    assert reason in (statuses[-1].description or ""), statuses[-1]
    assert forge.releases("github", BROKEN) == []

"""End to end: tag builds publish through the durable outbox, on both forges, through faults.

A real `isorunner serve` builds in the real sandbox and publishes to the fake forge,
which plays the faults a forge shows around releases: a create or an upload answered
502/504 after the forge stored it, an upload cut halfway, a release or its files deleted
by a person between attempts, and `kill -9` of isorunner between two uploads. Each case
must end with exactly one published release of the tag holding each file of the build
once, whole, byte for byte the file on disk, and the ISO built once.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.e2e.conftest import (
    ADMIN_TOKEN,
    GITHUB_TOKEN,
    GITLAB_TOKEN,
    Isorunner,
    Repos,
    github_push,
    gitlab_push,
    make_profile,
    make_server,
    new_sha,
    release_settled,
)
from tests.e2e.fakeforge import FakeForge
from tests.e2e.fakeforge_state import Forge, RecordedRequest
from tests.runner.packages.upstream import UpstreamServer

pytestmark = pytest.mark.integration

TAG = "v1.0"
CASES = ("create502", "upload504", "half", "deleted", "crash")
PROJECT_IDS = {name: 7100 + n for n, name in enumerate(CASES)}
FORGES: tuple[Forge, ...] = ("github", "gitlab")


def repo_of(kind: Forge, case: str) -> str:
    """The repository (GitHub) or project (GitLab) a case publishes to."""
    return f"acme/{case}" if kind == "github" else f"lab/rel/{case}"


REPOS = Repos(
    github=[repo_of("github", case) for case in CASES],
    gitlab=[repo_of("gitlab", case) for case in CASES],
)


@dataclass(frozen=True)
class Tagged:
    """A tag pushed to a case's repository: where, which commit, which build."""

    kind: Forge
    repo: str
    sha: str
    build_id: int

    @property
    def api(self) -> str:
        """The raw path prefix of the repository's API on the fake forge."""
        if self.kind == "github":
            return f"/github/api/repos/{self.repo}"
        return f"/gitlab/api/v4/projects/{quote(self.repo, safe='')}"

    @property
    def uploads(self) -> tuple[str, str]:
        """The method and path glob of the repository's file uploads."""
        if self.kind == "github":
            return "POST", f"/github/uploads/repos/{self.repo}/releases/*/assets"
        return "PUT", f"{self.api}/packages/generic/isorunner/{TAG}/*"


def seed(forge: FakeForge, profiles: Path, kind: Forge, case: str) -> tuple[str, str]:
    """Seed a case's repository with one commit tagged v1.0; return (repo, sha)."""
    repo, sha = repo_of(kind, case), new_sha()
    profile = make_profile(profiles, f"{kind}-{case}")
    if kind == "github":
        forge.seed_github(repo, token=GITHUB_TOKEN, commits={sha: profile}, refs={TAG: sha})
    else:
        forge.seed_gitlab(
            repo,
            token=GITLAB_TOKEN,
            commits={sha: profile},
            refs={TAG: sha},
            project_id=PROJECT_IDS[case],
        )
    return repo, sha


def push_tag(server: Isorunner, kind: Forge, repo: str, sha: str, case: str) -> Tagged:
    """Deliver the tag push of `sha` as `TAG`; return what was pushed and its build."""
    if kind == "github":
        build_id = server.github("push", github_push(repo, sha, f"refs/tags/{TAG}"))
    else:
        body = gitlab_push(repo, PROJECT_IDS[case], sha, f"refs/tags/{TAG}")
        build_id = server.gitlab("Tag Push Hook", body)
    return Tagged(kind, repo, sha, build_id)


def on_disk(server: Isorunner, build_id: int) -> dict[str, str]:
    """The build's release files on disk (hidden ones, e.g. its notes, are not) and SHA-256."""
    folder = server.root / "artifacts" / str(build_id)
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in folder.iterdir()
        if not p.name.startswith(".")
    }


def assert_one_whole_release(server: Isorunner, forge: FakeForge, tagged: Tagged) -> None:
    """The tag has one published release holding each file of the build once, whole."""
    wanted = on_disk(server, tagged.build_id)
    (release,) = forge.releases(tagged.kind, tagged.repo)
    assert release.tag_name == TAG
    if tagged.kind == "github":
        assert not release.draft
        stored = [(a.name, a.sha256, a.state) for a in release.assets]
        assert sorted(stored) == sorted(
            (name, digest, "uploaded") for name, digest in wanted.items()
        )
        assert all(a.path.read_bytes() for a in release.assets)
    else:
        files = forge.packages(tagged.repo)
        assert sorted((f.name, f.sha256) for f in files) == sorted(wanted.items())
        assert sorted(link.name for link in release.links) == sorted(wanted)
    published = server.wait_release(tagged.build_id)
    assert published["state"] == "published", published
    listed = published["files"]
    assert isinstance(listed, list)
    assert {f["name"] for f in listed} == set(wanted)
    assert forge.violations() == []


def uploads_of(forge: FakeForge, tagged: Tagged, name: str) -> list[RecordedRequest]:
    """The upload requests the forge received for the file `name` of the tag."""
    method, path = tagged.uploads
    return [
        r
        for r in forge.requests(method, path)
        if r.path.endswith(f"/{name}") or f"name={name}" in r.query
    ]


def iso_name(server: Isorunner, build_id: int) -> str:
    """The build's ISO file name."""
    (name,) = [n for n in on_disk(server, build_id) if n.endswith(".iso")]
    return name


@pytest.fixture(scope="module")
def server(state_root: Path, forge: FakeForge, upstream: UpstreamServer) -> Iterator[Isorunner]:
    """A real `isorunner serve` for this module, stopped at its end."""
    (state_root / "main").mkdir()
    running = make_server(
        state_root / "main", forge, REPOS, upstream, server_extra=f'admin_token = "{ADMIN_TOKEN}"\n'
    )
    running.start()
    yield running
    running.close()


def publish(
    server: Isorunner, forge: FakeForge, profiles: Path, kind: Forge, case: str
) -> Callable[[], Tagged]:
    """Seed a case, then return what pushes its tag (faults are armed in between)."""
    repo, sha = seed(forge, profiles, kind, case)
    return lambda: push_tag(server, kind, repo, sha, case)


@pytest.mark.parametrize("kind", FORGES)
def test_a_create_answered_502_after_the_forge_stored_it_makes_one_release(
    server: Isorunner, forge: FakeForge, profiles: Path, kind: Forge
) -> None:
    """A release create answered 502 once the forge stored it is looked up, never re-sent."""
    push = publish(server, forge, profiles, kind, "create502")
    api = Tagged(kind, repo_of(kind, "create502"), "", 0).api
    forge.fail("POST", f"{api}/releases", status=502, after_handling=True)
    tagged = push()
    server.wait_statuses(forge, kind, tagged.repo, tagged.sha, release_settled)
    assert_one_whole_release(server, forge, tagged)
    # One create, answered 502; never a second one (GitHub: a second draft; GitLab: a
    # 409): the release was looked up by tag instead.
    assert [r.status for r in forge.requests("POST", f"{api}/releases")] == [502]
    assert forge.pending_faults() == []


@pytest.mark.parametrize("kind", FORGES)
def test_an_upload_answered_504_after_the_forge_stored_it_is_not_sent_again(
    server: Isorunner, forge: FakeForge, profiles: Path, kind: Forge
) -> None:
    """The ISO stored despite a 504 is found whole and kept: it goes up once."""
    push = publish(server, forge, profiles, kind, "upload504")
    method, path = Tagged(kind, repo_of(kind, "upload504"), "", 0).uploads
    forge.fail(method, path, status=504, after_handling=True)
    tagged = push()
    server.wait_statuses(forge, kind, tagged.repo, tagged.sha, release_settled)
    assert_one_whole_release(server, forge, tagged)
    iso = iso_name(server, tagged.build_id)
    assert [r.status for r in uploads_of(forge, tagged, iso)] == [504]


@pytest.mark.parametrize("kind", FORGES)
def test_an_upload_cut_halfway_with_a_502_is_replaced_by_a_whole_copy(
    server: Isorunner, forge: FakeForge, profiles: Path, kind: Forge
) -> None:
    """Half the ISO stored and a 502: the half copy is deleted, the ISO sent again, once."""
    push = publish(server, forge, profiles, kind, "half")
    method, path = Tagged(kind, repo_of(kind, "half"), "", 0).uploads
    forge.fail_half_stored(method, path, status=502)
    tagged = push()
    server.wait_statuses(forge, kind, tagged.repo, tagged.sha, release_settled)
    assert_one_whole_release(server, forge, tagged)
    iso = iso_name(server, tagged.build_id)
    answers = [r.status for r in uploads_of(forge, tagged, iso)]
    assert len(answers) == 2, answers
    assert answers[-1] == 201


@pytest.mark.parametrize("kind", FORGES)
def test_what_a_person_deletes_between_attempts_is_published_again(
    server: Isorunner, forge: FakeForge, profiles: Path, kind: Forge
) -> None:
    """A draft (GitHub) or files (GitLab) deleted mid-publishing, then the published release.

    The next attempt starts from what the forge has, and the admin's publish after the
    release was deleted too: one release, every file, whole, the ISO never rebuilt.
    """
    push = publish(server, forge, profiles, kind, "deleted")
    outage = threading.Event()
    outage.set()
    probe = Tagged(kind, repo_of(kind, "deleted"), "", 0)
    if kind == "github":
        method, path = probe.uploads
        forge.outage(method, path, active=outage.is_set)
    else:
        forge.outage("POST", f"{probe.api}/releases", active=outage.is_set)
    tagged = push()

    def retrying() -> bool:
        release = server.build(tagged.build_id).get("release")
        return isinstance(release, dict) and release["state"] == "retrying"

    server.wait_for("the first attempt to fail", retrying)
    if kind == "github":
        assert forge.delete_release("github", tagged.repo, TAG) == 1
    else:
        assert forge.delete_packages(tagged.repo) >= 1
    outage.clear()
    server.wait_statuses(forge, kind, tagged.repo, tagged.sha, release_settled)
    assert_one_whole_release(server, forge, tagged)
    release = server.build(tagged.build_id)["release"]
    assert isinstance(release, dict)
    assert release["attempts"] >= 1

    # Deleted once published: the admin publishes the files on disk again, no rebuild;
    # only what the forge lost goes up (GitLab keeps package files without a release).
    iso = iso_name(server, tagged.build_id)
    sent = len(uploads_of(forge, tagged, iso))
    seen = len(forge.statuses(kind, tagged.repo, tagged.sha))
    assert forge.delete_release(kind, tagged.repo, TAG) == 1
    queued = server.admin_publish(tagged.build_id)["release"]
    assert isinstance(queued, dict)
    # The publisher may have started already (its own poll), never with the old record.
    assert queued["state"] in ("queued", "publishing"), queued
    assert queued["attempts"] == 0, queued
    server.wait_statuses(
        forge, kind, tagged.repo, tagged.sha, lambda s: len(s) > seen and release_settled(s)
    )
    assert_one_whole_release(server, forge, tagged)
    assert len(uploads_of(forge, tagged, iso)) == sent + (1 if kind == "github" else 0)
    assert server.build_log(tagged.build_id).count(f"[isorunner] build {tagged.build_id}:") == 1


@pytest.fixture
def crash_server(
    state_root: Path, forge: FakeForge, upstream: UpstreamServer, request: pytest.FixtureRequest
) -> Iterator[Isorunner]:
    """A server of its own (it is killed), with its own state and sandbox root."""
    root = state_root / f"crash-{request.node.callspec.id}"
    root.mkdir(parents=True)
    running = make_server(
        root, forge, REPOS, upstream, server_extra=f'admin_token = "{ADMIN_TOKEN}"\n'
    )
    running.start()
    yield running
    running.close()


@pytest.mark.parametrize("kind", FORGES)
def test_kill_9_between_uploads_publishes_the_iso_on_disk_after_the_restart(
    crash_server: Isorunner, forge: FakeForge, profiles: Path, kind: Forge
) -> None:
    """Killed after the ISO went up: after the restart the rest is sent, nothing is rebuilt."""
    server = crash_server
    repo, sha = seed(forge, profiles, kind, "crash")
    probe = Tagged(kind, repo, sha, 0)
    method, path = probe.uploads
    if kind == "github":
        forge.hang(method, path, seconds=120, query="name=sha256sums*")
        sums_path = path
    else:
        sums_path = path.replace("/*", "/sha256sums")
        forge.hang(method, sums_path, seconds=120)
    tagged = push_tag(server, kind, repo, sha, "crash")

    def hanging() -> bool:
        return any(r.fault == "hang" for r in forge.requests(method, sums_path))

    server.wait_for("the upload of sha256sums to start", hanging)
    iso = iso_name(server, tagged.build_id)
    before = on_disk(server, tagged.build_id)
    assert len(uploads_of(forge, tagged, iso)) == 1
    server.kill()
    server.start()

    statuses = server.wait_statuses(forge, kind, repo, sha, release_settled, timeout=90)
    assert_one_whole_release(server, forge, tagged)
    assert on_disk(server, tagged.build_id) == before, "the build ran again"
    assert len(uploads_of(forge, tagged, iso)) == 1, "the ISO was sent again"
    running = "Building the ISO"
    assert [s.description for s in statuses].count(running) == 1, statuses
    log = server.build_log(tagged.build_id)
    assert log.count(f"[isorunner] build {tagged.build_id}:") == 1

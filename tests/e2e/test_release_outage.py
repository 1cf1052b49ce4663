"""A ten-minute forge outage on asset uploads, in simulated time, on both forges.

The real store, publisher, forge clients and transport talk HTTP to the fake forge on
127.0.0.1; only time is simulated: one clock drives the store, the publisher's backoff
and the transport's retries (its sleeps move the clock), and the fake forge's outage
ends when that clock passes ten minutes. The build's files are made by the runner's
own `collect_artifacts` (the sandbox is not the subject here; tests/e2e/test_release_e2e.py
builds for real).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from runner.artifacts import collect_artifacts
from runner.forges.client import ForgeTransport
from runner.forges.github_client import GitHubClient
from runner.forges.gitlab_client import GitLabClient
from runner.forges.protocol import ForgeClient
from runner.forges.tokens import StaticToken
from runner.jobs import STATUS, Event
from runner.notifications import status_notifier
from runner.publish import Publisher
from runner.store import SQLiteStore
from tests.e2e.conftest import GITHUB_TOKEN, GITLAB_TOKEN
from tests.e2e.fakeforge import FakeForge
from tests.e2e.fakeforge_state import Forge as ForgeName
from tests.runner.store.samples import make_request
from webhooks.build import BuildRecord, Forge, RefKind, ReleaseState, artifacts_dir

pytestmark = pytest.mark.anyio

BASE = "https://ci.example.org"
OUTAGE = timedelta(minutes=10)
START = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
GITLAB_PROJECT_ID = 7300


class SimulatedClock:
    """One simulated time for the store, the publisher and the transport."""

    def __init__(self) -> None:
        self.now = START
        self.sleeps: list[float] = []

    def __call__(self) -> datetime:
        return self.now

    def epoch(self) -> float:
        """The time as Unix seconds (the transport's clock)."""
        return self.now.timestamp()

    async def sleep(self, seconds: float) -> None:
        """Move time on instead of waiting (the transport's backoff)."""
        self.sleeps.append(seconds)
        self.now += timedelta(seconds=seconds)


@dataclass
class Rig:
    clock: SimulatedClock
    store: SQLiteStore
    publisher: Publisher
    root: Path


@pytest.fixture
async def rig(tmp_path: Path, forge: FakeForge) -> AsyncIterator[Rig]:
    """Store, publisher and both forge clients over real HTTP, in simulated time."""
    clock = SimulatedClock()
    notify = status_notifier(BASE)
    async with (
        SQLiteStore(tmp_path / "db.sqlite", clock=clock, notify=notify) as store,
        httpx.AsyncClient(timeout=30) as http,
    ):
        transport = ForgeTransport(http, sleep=clock.sleep, clock=clock.epoch)
        clients: dict[Forge, ForgeClient] = {
            Forge.GITHUB: GitHubClient(
                transport,
                StaticToken(GITHUB_TOKEN),
                api_url=forge.github_api_url,
                upload_url=forge.github_uploads_url,
            ),
            Forge.GITLAB: GitLabClient(
                transport, StaticToken(GITLAB_TOKEN), api_url=forge.gitlab_api_url
            ),
        }
        root = tmp_path / "artifacts"
        publisher = Publisher(store, clients, artifacts_root=root, base_url=BASE, clock=clock)
        yield Rig(clock, store, publisher, root)


async def succeeded_tag(rig: Rig, kind: Forge, repo: str, tmp_path: Path) -> int:
    """A tag build of `repo` that succeeded with a 3 MiB ISO and its sums; return its id."""
    project_id = GITLAB_PROJECT_ID if kind is Forge.GITLAB else None
    request = make_request(
        forge=kind, repo=repo, ref="refs/tags/v2.0", kind=RefKind.TAG, project_id=project_id
    )
    build_id = (await rig.store.submit(request)).build_id
    await rig.store.claim_next()
    iso = tmp_path / "out" / "outage-2025.03.01-x86_64.iso"
    iso.parent.mkdir()
    iso.write_bytes(os.urandom(3 * 1024 * 1024))
    await collect_artifacts([iso], artifacts_dir(rig.root, build_id))
    await rig.store.finish(build_id, Event.SUCCEED, "ISO built in 9s")
    return build_id


async def publish_until_settled(rig: Rig, build_id: int) -> BuildRecord:
    """Run publishing rounds, moving time to each next attempt, until published or refused."""
    for _ in range(200):
        await rig.publisher.publish_due()
        record = await rig.store.get(build_id)
        assert record is not None
        release = record.release
        assert release is not None
        if release.state.is_final:
            return record
        if release.next_attempt_at is not None:
            rig.clock.now = max(rig.clock.now, release.next_attempt_at)
    raise AssertionError("publishing did not settle in 200 rounds")


async def statuses(rig: Rig) -> list[str]:
    """Every status description in the outbox, in order (none was delivered here)."""
    later = rig.clock.now + timedelta(days=1)
    texts = []
    while due := await rig.store.due_notifications(later, 10, kinds=(STATUS,)):
        texts.append(str(due[0].payload["description"]))
        await rig.store.notification_done(due[0].id)
    return texts


@pytest.mark.parametrize("kind", [Forge.GITHUB, Forge.GITLAB])
async def test_a_ten_minute_upload_outage_ends_in_one_whole_release(
    rig: Rig, forge: FakeForge, tmp_path: Path, kind: Forge
) -> None:
    """Uploads answered 503 for ten minutes: retried with backoff, published once it ends."""
    name: ForgeName = "github" if kind is Forge.GITHUB else "gitlab"
    repo = f"acme/outage-{name}"
    if kind is Forge.GITHUB:
        forge.seed_github(repo, token=GITHUB_TOKEN, commits={}, refs={"v2.0": "a" * 40})
        method, uploads = "POST", f"/github/uploads/repos/{repo}/releases/*/assets"
    else:
        forge.seed_gitlab(
            repo,
            token=GITLAB_TOKEN,
            commits={},
            refs={"v2.0": "a" * 40},
            project_id=GITLAB_PROJECT_ID,
        )
        method = "PUT"
        uploads = f"/gitlab/api/v4/projects/{quote(repo, safe='')}/packages/generic/*"
    end = START + OUTAGE
    forge.outage(method, uploads, active=lambda: rig.clock.now < end)
    build_id = await succeeded_tag(rig, kind, repo, tmp_path)

    record = await publish_until_settled(rig, build_id)

    release = record.release
    assert release is not None
    assert release.state is ReleaseState.PUBLISHED, release
    assert rig.clock.now >= end
    # 2 s doubling: attempts at 0, 2, 6, 14, … 510, then 1022 s, past the outage.
    assert release.attempts >= 8
    answers = [r.status for r in forge.requests(method, uploads)]
    assert answers.count(503) >= 8
    assert answers[-1] in (200, 201)
    wanted = {p.name: p.read_bytes() for p in artifacts_dir(rig.root, build_id).iterdir()}
    if kind is Forge.GITHUB:
        (published,) = forge.releases("github", repo)
        assert not published.draft
        assert {a.name: a.path.read_bytes() for a in published.assets} == wanted
    else:
        (published,) = forge.releases("gitlab", repo)
        files = forge.packages(repo)
        assert {f.name: f.path.read_bytes() for f in files} == wanted
        assert len(files) == len(wanted)
        assert sorted(link.name for link in published.links) == sorted(wanted)
    texts = await statuses(rig)
    assert texts[0] == "Queued"
    assert texts[-1] == "ISO built in 9s; release published"
    assert "ISO built in 9s; publishing the release (attempt 1, retrying in 2 s)" in texts
    assert len(texts) <= 12, texts

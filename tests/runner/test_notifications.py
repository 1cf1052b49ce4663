"""Tests of the status outbox's delivery policy: retried outages, dropped refusals."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from runner.forges.exceptions import (
    Conflict,
    ForgeError,
    ForgeUnavailable,
    NotFound,
    RateLimited,
    Rejected,
    Unauthorized,
)
from runner.forges.protocol import CommitState, Progress
from runner.forges.releaseplan import LocalAsset
from runner.jobs import RELEASE
from runner.notifications import (
    PERMANENT_ATTEMPTS,
    STATUS,
    Notifier,
    is_transient,
    release_note,
    release_payload,
    status_notifier,
)
from runner.store import SQLiteStore
from tests.runner.store.samples import START, FakeClock, make_request
from webhooks.build import BuildRecord, BuildState, Forge, RefKind, Release, ReleaseState

BASE = "https://ci.example.org"

pytestmark = pytest.mark.anyio


class RefusingForge:
    """Refuses every status with the errors it is given, in turn, then accepts."""

    def __init__(self, *errors: ForgeError) -> None:
        self.errors = list(errors)
        self.calls = 0
        self.delivered: list[tuple[CommitState, str]] = []

    async def set_status(
        self,
        repo: str,
        sha: str,
        state: CommitState,
        *,
        description: str,
        target_url: str | None,
        ref: str | None = None,
    ) -> None:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        self.delivered.append((state, description))

    async def download_archive(self, repo: str, sha: str, dest: Path, *, max_bytes: int) -> int:
        raise AssertionError("the notifier never downloads")

    async def publish_release(
        self,
        repo: str,
        tag: str,
        files: Sequence[LocalAsset],
        *,
        name: str,
        body: str,
        progress: Progress | None = None,
    ) -> str:
        raise AssertionError("the notifier never publishes")


@pytest.fixture
def clock() -> FakeClock:
    """The store's and the notifier's shared fake clock."""
    return FakeClock()


@pytest.fixture
async def store(tmp_path: Path, clock: FakeClock) -> AsyncIterator[SQLiteStore]:
    """A real store without automatic notifications."""
    async with SQLiteStore(tmp_path / "db.sqlite", clock=clock) as opened:
        yield opened


async def queue_statuses(store: SQLiteStore, *states: CommitState) -> int:
    """A build with one status notification per state, in order; return its id."""
    build_id = (await store.submit(make_request())).build_id
    for state in states:
        payload = {"state": state.value, "description": state.value, "target_url": "x"}
        await store.enqueue_notification(build_id, STATUS, payload)
    return build_id


async def deliver_until_idle(notifier: Notifier, clock: FakeClock, rounds: int = 20) -> None:
    """Run delivery rounds, moving the clock past the longest backoff between them."""
    for _ in range(rounds):
        await notifier.deliver_due()
        clock.advance(601)


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (ForgeUnavailable("502 from the forge", status_code=502), True),
        (RateLimited("rate limited", status_code=429), True),
        (Conflict("409", status_code=409), True),
        (Unauthorized("bad token", status_code=401), False),
        (NotFound("no such commit", status_code=404), False),
        (Rejected("No commit found for SHA", status_code=422), False),
    ],
)
def test_is_transient_separates_outages_from_refusals(error: ForgeError, transient: bool) -> None:
    """Outages, rate limits and conflicts may pass later; a refusal will not."""
    assert is_transient(error) is transient


async def test_a_refused_status_is_dropped_and_the_next_one_delivered(
    store: SQLiteStore, clock: FakeClock
) -> None:
    """A status refused PERMANENT_ATTEMPTS times is dropped and logged.

    It then no longer holds back the build's later statuses.
    """
    refusal = Rejected("No commit found for SHA: 0123", status_code=422)
    forge = RefusingForge(*[refusal] * PERMANENT_ATTEMPTS)
    notifier = Notifier(store, {Forge.GITHUB: forge}, clock=clock)
    build_id = await queue_statuses(store, CommitState.RUNNING, CommitState.SUCCESS)
    with capture_logs() as logs:
        await deliver_until_idle(notifier, clock)
    assert forge.calls == PERMANENT_ATTEMPTS + 1
    assert forge.delivered == [(CommitState.SUCCESS, "success")]
    dropped = [e for e in logs if e["event"] == "status_dropped"]
    assert dropped == [
        {
            "event": "status_dropped",
            "reason": "the forge refused it every time",
            "log_level": "error",
            "build_id": build_id,
            "state": "running",
            "attempts": PERMANENT_ATTEMPTS,
            "error": "No commit found for SHA: 0123",
        }
    ]
    assert await store.due_notifications(clock(), 10) == []


async def test_a_status_refused_a_few_times_is_still_delivered(
    store: SQLiteStore, clock: FakeClock
) -> None:
    """A refusal that stops before the limit (a commit not indexed yet) costs nothing."""
    refusal = Rejected("No commit found for SHA", status_code=422)
    forge = RefusingForge(*[refusal] * (PERMANENT_ATTEMPTS - 1))
    notifier = Notifier(store, {Forge.GITHUB: forge}, clock=clock)
    await queue_statuses(store, CommitState.QUEUED)
    await deliver_until_idle(notifier, clock)
    assert forge.delivered == [(CommitState.QUEUED, "queued")]


async def test_an_outage_is_retried_past_the_refusal_limit(
    store: SQLiteStore, clock: FakeClock
) -> None:
    """A forge that is down is waited for however long it takes; nothing is dropped."""
    outage = ForgeUnavailable("502 from the forge", status_code=502)
    forge = RefusingForge(*[outage] * (PERMANENT_ATTEMPTS * 3))
    notifier = Notifier(store, {Forge.GITHUB: forge}, clock=clock)
    await queue_statuses(store, CommitState.RUNNING, CommitState.SUCCESS)
    await deliver_until_idle(notifier, clock, rounds=PERMANENT_ATTEMPTS * 3 + 5)
    assert forge.delivered == [(CommitState.RUNNING, "running"), (CommitState.SUCCESS, "success")]


# ---------------------------------------------------------------- what statuses say of releases

SUCCEEDED = BuildRecord(
    id=7,
    request=make_request(ref="refs/tags/v1", kind=RefKind.TAG),
    state=BuildState.SUCCEEDED,
    created_at=START,
    detail="ISO built in 1m02s",
)


def test_status_notifier_queues_the_release_of_a_succeeded_trusted_tag() -> None:
    """A trusted tag's SUCCEED enqueues its status ("…; publishing the release") and release."""
    outgoing = list(status_notifier(BASE)(SUCCEEDED))
    assert [kind for kind, _ in outgoing] == [STATUS, RELEASE]
    assert outgoing[0][1]["state"] == "success"
    assert outgoing[0][1]["description"] == "ISO built in 1m02s; publishing the release"
    assert outgoing[1][1] == {"tag": "v1"}


@pytest.mark.parametrize(
    "record",
    [
        dataclasses.replace(SUCCEEDED, request=make_request()),
        dataclasses.replace(
            SUCCEEDED, request=make_request(ref="refs/tags/v1", kind=RefKind.TAG, trusted=False)
        ),
        dataclasses.replace(SUCCEEDED, state=BuildState.FAILED, detail="mkarchiso failed"),
    ],
)
def test_status_notifier_queues_no_release_for_other_builds(record: BuildRecord) -> None:
    """Branches, fork tags and failed tags get their status and nothing else."""
    ((kind, payload),) = status_notifier(BASE)(record)
    assert kind == STATUS
    assert "release" not in str(payload["description"])


@pytest.mark.parametrize(
    ("release", "text"),
    [
        (Release("v1", ReleaseState.QUEUED, START), "publishing the release"),
        (Release("v1", ReleaseState.PUBLISHING, START), "publishing the release"),
        (
            Release("v1", ReleaseState.RETRYING, START, 3, START + timedelta(minutes=2)),
            "publishing the release (attempt 3, retrying in 2 min)",
        ),
        (
            Release("v1", ReleaseState.RETRYING, START, 1, START + timedelta(seconds=4)),
            "publishing the release (attempt 1, retrying in 4 s)",
        ),
        (
            Release("v1", ReleaseState.RETRYING, START, 9, START + timedelta(hours=2)),
            "publishing the release (attempt 9, retrying in 2 h)",
        ),
        (Release("v1", ReleaseState.PUBLISHED, START), "release published"),
        (
            Release("v1", ReleaseState.REFUSED, START, last_error="403: no permission"),
            "release refused: 403: no permission",
        ),
    ],
)
def test_release_note_says_how_the_release_stands(release: Release, text: str) -> None:
    """Each release state reads as the commit status's words after the build's detail."""
    assert release_note(release, START) == text


def test_release_payload_keeps_the_success_state_and_the_build_page() -> None:
    """A release's status keeps the build's success and link; only the words change."""
    done = Release("v1", ReleaseState.PUBLISHED, START)
    assert release_payload(SUCCEEDED, done, BASE, START) == {
        "state": "success",
        "description": "ISO built in 1m02s; release published",
        "target_url": f"{BASE}/builds/7",
    }

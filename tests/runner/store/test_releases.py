"""Tests of the job store's release records and the release part of its outbox."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from runner.exceptions import NotificationNotFound
from runner.jobs import RELEASE, STATUS, Event
from runner.notifications import status_notifier
from runner.store import SQLiteStore
from tests.runner.store.samples import START, FakeClock, make_request
from webhooks.build import BuildState, RefKind, Release, ReleaseFile, ReleaseState

pytestmark = pytest.mark.anyio


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock at START."""
    return FakeClock()


@pytest.fixture
async def store(tmp_path: Path, clock: FakeClock) -> AsyncIterator[SQLiteStore]:
    """An open store with the service's status hook."""
    notify = status_notifier("https://ci.example.org")
    async with SQLiteStore(tmp_path / "isorunner.db", clock=clock, notify=notify) as opened:
        yield opened


async def succeeded_tag(store: SQLiteStore, **changes: object) -> int:
    """A tag build (with `changes` to its request) run to success; return its id."""
    request = make_request(**{"ref": "refs/tags/v1", "kind": RefKind.TAG, **changes})
    build_id = (await store.submit(request)).build_id
    await store.claim_next()
    await store.finish(build_id, Event.SUCCEED, "ISO built in 3s")
    return build_id


async def test_a_trusted_tag_success_queues_its_release_with_its_status(
    store: SQLiteStore,
) -> None:
    """SUCCEED of a trusted tag enqueues the status and the release, and a queued record."""
    build_id = await succeeded_tag(store)
    record = await store.get(build_id)
    assert record is not None
    assert record.state is BuildState.SUCCEEDED
    assert record.release == Release(
        tag="v1", state=ReleaseState.QUEUED, updated_at=START, next_attempt_at=START
    )
    due = await store.due_notifications(START, 10)
    statuses = [n.payload["description"] for n in due if n.kind == STATUS]
    assert [n.payload for n in due if n.kind == RELEASE] == [{"tag": "v1"}]
    # Only the build's oldest status is due: queued, then running, then success.
    assert statuses == ["Queued"]


async def test_untrusted_tags_and_branches_queue_no_release(store: SQLiteStore) -> None:
    """A fork's tag build and a branch build succeed without any release."""
    fork = await succeeded_tag(store, trusted=False)
    branch = await succeeded_tag(store, ref="refs/heads/main", kind=RefKind.BRANCH)
    for build_id in (fork, branch):
        record = await store.get(build_id)
        assert record is not None
        assert record.release is None
    assert [n for n in await store.due_notifications(START, 50) if n.kind == RELEASE] == []


async def test_due_notifications_of_one_kind_do_not_wait_for_another(
    store: SQLiteStore, clock: FakeClock
) -> None:
    """A release waiting out an outage holds back no status of its build, and vice versa."""
    build_id = await succeeded_tag(store)
    (release,) = await store.due_notifications(START, 10, kinds=(RELEASE,))
    retry_at = START + timedelta(minutes=10)
    waiting = Release(
        tag="v1",
        state=ReleaseState.RETRYING,
        updated_at=START,
        attempts=1,
        next_attempt_at=retry_at,
        last_error="502",
    )
    await store.update_release(release.id, build_id, waiting)
    statuses = await store.due_notifications(START, 10, kinds=(STATUS,))
    assert [n.build_id for n in statuses] == [build_id]
    assert await store.due_notifications(START, 10, kinds=(RELEASE,)) == []
    (again,) = await store.due_notifications(retry_at, 10, kinds=(RELEASE,))
    assert (again.id, again.attempts, again.last_error) == (release.id, 1, "502")


async def test_update_release_records_progress_and_enqueues_its_status(
    store: SQLiteStore, clock: FakeClock
) -> None:
    """Progress replaces the record and keeps the notification; a follow-up is queued."""
    build_id = await succeeded_tag(store)
    (release,) = await store.due_notifications(START, 10, kinds=(RELEASE,))
    files = (ReleaseFile("a.iso", 3, "ab" * 32, uploaded=True), ReleaseFile("sha256sums", 1, ""))
    progress = Release(tag="v1", state=ReleaseState.PUBLISHING, updated_at=START, files=files)
    status = {"state": "success", "description": "d", "target_url": "u"}
    await store.update_release(release.id, build_id, progress, follow_up=[(STATUS, status)])
    record = await store.get(build_id)
    assert record is not None
    assert record.release == progress
    assert [n.id for n in await store.due_notifications(START, 10, kinds=(RELEASE,))] == [
        release.id
    ]
    statuses = await store.due_notifications(START, 99, kinds=(STATUS,))
    assert len(statuses) == 1  # the build's oldest; the follow-up waits behind it


@pytest.mark.parametrize("final", [ReleaseState.PUBLISHED, ReleaseState.REFUSED])
async def test_a_final_release_leaves_the_outbox(store: SQLiteStore, final: ReleaseState) -> None:
    """Published or refused: the record says so and the notification is gone for good."""
    build_id = await succeeded_tag(store)
    (release,) = await store.due_notifications(START, 10, kinds=(RELEASE,))
    done = Release(tag="v1", state=final, updated_at=START, url="https://forge/r")
    await store.update_release(release.id, build_id, done)
    assert await store.due_notifications(START + timedelta(days=1), 10, kinds=(RELEASE,)) == []
    record = await store.get(build_id)
    assert record is not None
    assert record.release == done
    with pytest.raises(NotificationNotFound):
        await store.update_release(release.id, build_id, done)


async def test_list_builds_and_counts_carry_release_records(store: SQLiteStore) -> None:
    """Listed builds carry their releases, and the counts cover every state."""
    first = await succeeded_tag(store)
    second = await succeeded_tag(store, ref="refs/tags/v2")
    (release, _) = await store.due_notifications(START, 10, kinds=(RELEASE,))
    done = Release(tag="v1", state=ReleaseState.PUBLISHED, updated_at=START)
    await store.update_release(release.id, first, done)
    listed = {record.id: record.release for record in await store.list_builds()}
    assert listed[first] == done
    queued = listed[second]
    assert queued is not None
    assert queued.state is ReleaseState.QUEUED
    counts = await store.count_releases_by_state()
    assert counts == {
        ReleaseState.QUEUED: 1,
        ReleaseState.PUBLISHING: 0,
        ReleaseState.RETRYING: 0,
        ReleaseState.PUBLISHED: 1,
        ReleaseState.REFUSED: 0,
    }


async def test_prune_keeps_a_release_in_the_outbox_and_forgets_a_published_one(
    store: SQLiteStore, clock: FakeClock
) -> None:
    """A release still to publish keeps its build; once published, both go together."""
    build_id = await succeeded_tag(store)
    while statuses := await store.due_notifications(START, 10, kinds=(STATUS,)):
        await store.notification_done(statuses[0].id)
    later = clock.advance(86400)
    assert await store.prune_finished(later) == []
    (release,) = await store.due_notifications(later, 10, kinds=(RELEASE,))
    await store.update_release(
        release.id, build_id, Release(tag="v1", state=ReleaseState.PUBLISHED, updated_at=later)
    )
    while statuses := await store.due_notifications(later, 10, kinds=(STATUS,)):
        await store.notification_done(statuses[0].id)
    assert await store.prune_finished(later) == [build_id]
    assert await store.get(build_id) is None
    assert sum((await store.count_releases_by_state()).values()) == 0

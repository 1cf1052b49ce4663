"""Tests of the job store's durable outbox of forge notifications."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from runner.exceptions import BuildNotFound, NotificationNotFound
from runner.jobs import Notification
from runner.store import SQLiteStore
from tests.runner.store.samples import START, FakeClock, make_request

pytestmark = pytest.mark.anyio


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock at START."""
    return FakeClock()


@pytest.fixture
async def store(tmp_path: Path, clock: FakeClock) -> AsyncIterator[SQLiteStore]:
    """An open store on a fresh file, closed after the test."""
    async with SQLiteStore(tmp_path / "isorunner.db", clock=clock) as opened:
        yield opened


async def _build(store: SQLiteStore) -> int:
    return (await store.submit(make_request())).build_id


async def test_enqueue_notification_is_due_now_with_its_payload(store: SQLiteStore) -> None:
    """A new notification is due at once, with no attempts and its JSON payload intact."""
    build_id = await _build(store)
    payload: dict[str, object] = {"state": "pending", "nested": {"n": [1, 2]}, "ok": True}
    notification_id = await store.enqueue_notification(build_id, "status", payload)
    assert await store.due_notifications(START, 10) == [
        Notification(
            id=notification_id,
            build_id=build_id,
            kind="status",
            payload=payload,
            attempts=0,
            next_attempt_at=START,
        )
    ]


async def test_enqueue_notification_for_an_unknown_build_raises(store: SQLiteStore) -> None:
    """Notifications belong to a stored build."""
    with pytest.raises(BuildNotFound):
        await store.enqueue_notification(77, "status", {})


async def test_due_notifications_earliest_first_within_the_limit(
    store: SQLiteStore, clock: FakeClock
) -> None:
    """Due notifications come earliest first, across builds, at most `limit` of them."""
    ids = []
    for _ in range(4):
        build_id = await _build(store)
        ids.append(await store.enqueue_notification(build_id, "status", {}))
        clock.advance(1)
    assert [n.id for n in await store.due_notifications(clock.now, 10)] == ids
    assert [n.id for n in await store.due_notifications(clock.now, 2)] == ids[:2]
    assert [n.id for n in await store.due_notifications(START, 10)] == ids[:1]


async def test_notification_failed_delays_and_counts_attempts(
    store: SQLiteStore, clock: FakeClock
) -> None:
    """A failed notification waits until retry_at, then comes back with its error."""
    build_id = await _build(store)
    notification_id = await store.enqueue_notification(build_id, "status", {})
    retry_at = START + timedelta(minutes=5)
    await store.notification_failed(notification_id, retry_at, "GitHub answered 502")
    assert await store.due_notifications(retry_at - timedelta(seconds=1), 10) == []
    (due,) = await store.due_notifications(retry_at, 10)
    assert (due.attempts, due.next_attempt_at, due.last_error) == (
        1,
        retry_at,
        "GitHub answered 502",
    )


async def test_due_notifications_keep_each_builds_order(store: SQLiteStore) -> None:
    """A build's later notification waits behind an earlier one that is being retried."""
    build_id = await _build(store)
    pending = await store.enqueue_notification(build_id, "status", {"state": "pending"})
    final = await store.enqueue_notification(build_id, "status", {"state": "success"})
    retry_at = START + timedelta(minutes=1)
    await store.notification_failed(pending, retry_at, "timeout")
    assert await store.due_notifications(START + timedelta(seconds=30), 10) == []
    assert [n.id for n in await store.due_notifications(retry_at, 10)] == [pending]
    await store.notification_done(pending)
    assert [n.id for n in await store.due_notifications(retry_at, 10)] == [final]


async def test_notification_done_removes_it(store: SQLiteStore) -> None:
    """A delivered notification is gone; marking it done twice is an error."""
    build_id = await _build(store)
    notification_id = await store.enqueue_notification(build_id, "release", {"tag": "v1"})
    await store.notification_done(notification_id)
    assert await store.due_notifications(START, 10) == []
    with pytest.raises(NotificationNotFound, match=str(notification_id)):
        await store.notification_done(notification_id)
    with pytest.raises(NotificationNotFound):
        await store.notification_failed(notification_id, START, "x")

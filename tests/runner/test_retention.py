"""Tests for runner.retention and `SQLiteStore.prune_finished`, with a fake clock.

The job store is the real SQLite store on a temporary file; logs and artifacts are
real files in a temporary directory.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import anyio
import pytest

from runner.buildlogs import BuildLogs
from runner.jobs import Event
from runner.retention import Retention, cutoff
from runner.store import SQLiteStore
from tests.runner.store.samples import START, FakeClock, make_request

DAYS = 30


@pytest.fixture
def clock() -> FakeClock:
    """The store's and retention's shared fake clock."""
    return FakeClock()


@pytest.fixture
async def store(tmp_path: Path, clock: FakeClock) -> AsyncIterator[SQLiteStore]:
    """A real SQLite store on the fake clock, without automatic notifications."""
    async with SQLiteStore(tmp_path / "db.sqlite", clock=clock) as store:
        yield store


def make_retention(tmp_path: Path, store: SQLiteStore, clock: FakeClock) -> Retention:
    """Retention over `tmp_path/logs` and `tmp_path/artifacts`."""
    return Retention(
        store,
        BuildLogs(tmp_path / "logs"),
        tmp_path / "artifacts",
        retention_days=DAYS,
        clock=clock,
    )


def write_files(tmp_path: Path, build_id: int) -> tuple[Path, Path]:
    """Give a build a log file and an artifacts directory with an ISO in it."""
    logs = BuildLogs(tmp_path / "logs")
    with logs.writer(build_id) as log:
        log.write_line("[mkarchiso] done")
    artifacts = tmp_path / "artifacts" / str(build_id)
    artifacts.mkdir(parents=True)
    (artifacts / "x.iso").write_bytes(b"ISO")
    return logs.path(build_id), artifacts


async def finished_build(store: SQLiteStore, event: Event = Event.SUCCEED) -> int:
    """Submit, claim and end one build; return its id."""
    submission = await store.submit(make_request())
    claimed = await store.claim_next()
    assert claimed is not None
    assert claimed.id == submission.build_id
    await store.finish(submission.build_id, event, "done")
    return submission.build_id


def test_cutoff_is_retention_days_before_now() -> None:
    """The cutoff lies exactly `retention_days` days before now."""
    assert cutoff(START, 90) == START - timedelta(days=90)


@pytest.mark.anyio
async def test_prune_finished_keeps_live_young_and_undelivered_builds(
    store: SQLiteStore, clock: FakeClock
) -> None:
    """Only final builds finished before the cutoff with an empty outbox are deleted."""
    old_ok = await finished_build(store)
    old_failed = await finished_build(store, Event.FAIL)
    old_pending = await finished_build(store)
    await store.enqueue_notification(old_pending, "status", {"state": "success"})
    clock.advance(DAYS * 86400 + 1)
    young = await finished_build(store)
    running = (await store.submit(make_request())).build_id
    assert (await store.claim_next()) is not None
    queued = (await store.submit(make_request())).build_id
    pruned = await store.prune_finished(clock() - timedelta(days=DAYS))
    assert pruned == [old_ok, old_failed]
    for build_id in (old_ok, old_failed):
        assert await store.get(build_id) is None
    for build_id in (old_pending, young, running, queued):
        assert await store.get(build_id) is not None


@pytest.mark.anyio
async def test_prune_finished_deletes_in_batches_until_none_is_left(
    tmp_path: Path, clock: FakeClock
) -> None:
    """More old builds than one batch holds are all deleted, in id order."""
    async with SQLiteStore(tmp_path / "batched.db", clock=clock, prune_batch=2) as store:
        old = [await finished_build(store) for _ in range(5)]
        clock.advance(DAYS * 86400 + 1)
        young = await finished_build(store)
        assert await store.prune_finished(clock() - timedelta(days=DAYS)) == old
        assert [b.id for b in await store.list_builds()] == [young]


@pytest.mark.anyio
async def test_prune_finished_keeps_old_queued_and_running_builds(
    store: SQLiteStore, clock: FakeClock
) -> None:
    """A build queued or running for longer than the retention age is never deleted."""
    queued = (await store.submit(make_request())).build_id
    running = (await store.submit(make_request())).build_id
    await store.claim_next()
    clock.advance(10 * DAYS * 86400)
    assert await store.prune_finished(clock()) == []
    assert await store.get(queued) is not None
    assert await store.get(running) is not None


@pytest.mark.anyio
async def test_prune_finished_refuses_a_naive_cutoff(store: SQLiteStore) -> None:
    """A naive datetime is refused rather than compared in the wrong zone."""
    with pytest.raises(ValueError, match="timezone-aware"):
        await store.prune_finished(START.replace(tzinfo=None))


@pytest.mark.anyio
async def test_retention_removes_records_logs_and_artifacts(
    tmp_path: Path, store: SQLiteStore, clock: FakeClock
) -> None:
    """An old build loses its record, log and artifacts; a young one keeps all three."""
    old = await finished_build(store)
    old_files = write_files(tmp_path, old)
    clock.advance(DAYS * 86400 + 60)
    young = await finished_build(store)
    young_files = write_files(tmp_path, young)
    report = await make_retention(tmp_path, store, clock).prune()
    assert report.builds == (old,)
    assert report.orphans == ()
    assert not old_files[0].exists()
    assert not old_files[1].exists()
    assert all(path.exists() for path in young_files)
    assert await store.get(old) is None
    assert await store.get(young) is not None


@pytest.mark.anyio
async def test_retention_sweeps_files_left_by_an_interrupted_run(
    tmp_path: Path, store: SQLiteStore, clock: FakeClock
) -> None:
    """Old files whose record is gone are removed; old files of a kept build stay."""
    gone = await finished_build(store)
    await store.prune_finished(clock() + timedelta(seconds=1))  # as if the run died here
    kept = await finished_build(store)
    await store.enqueue_notification(kept, "status", {"state": "success"})
    stranger = tmp_path / "logs" / "notes.txt"
    files = [*write_files(tmp_path, gone), *write_files(tmp_path, kept)]
    stranger.write_text("not a build log")
    clock.advance(DAYS * 86400 + 60)
    old = (clock() - timedelta(days=DAYS + 1)).timestamp()
    for path in [*files, stranger]:
        os.utime(path, (old, old))
    report = await make_retention(tmp_path, store, clock).prune()
    assert report.builds == ()
    assert report.orphans == (gone,)
    assert not files[0].exists()
    assert not files[1].exists()
    assert files[2].exists()
    assert files[3].exists()
    assert stranger.exists()


@pytest.mark.anyio
async def test_retention_run_prunes_at_start_and_then_each_interval(
    tmp_path: Path, store: SQLiteStore, clock: FakeClock
) -> None:
    """`run` prunes at once, then again after each interval, until cancelled."""
    first = await finished_build(store)
    clock.advance(DAYS * 86400 + 60)
    retention = Retention(
        store,
        BuildLogs(tmp_path / "logs"),
        tmp_path / "artifacts",
        retention_days=DAYS,
        clock=clock,
        interval_seconds=0.05,
    )
    async with anyio.create_task_group() as group:
        group.start_soon(retention.run)
        with anyio.fail_after(5):
            while await store.get(first) is not None:
                await anyio.sleep(0.01)
            second = await finished_build(store)
            clock.advance(DAYS * 86400 + 60)
            while await store.get(second) is not None:
                await anyio.sleep(0.01)
        group.cancel_scope.cancel()

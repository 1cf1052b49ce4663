"""Tests for runner.web: the adapters the web app gets from the runner."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from runner.check import DiskUsage
from runner.exceptions import StoreError
from runner.jobs import RELEASE, Event
from runner.notifications import status_notifier
from runner.pipeline import Pipeline, PipelineConfig
from runner.store import SQLiteStore
from runner.web import ArtifactDirs, RunnerReadiness, WorkerControl
from tests.runner.store.samples import START, FakeClock, make_request
from tests.runner.test_check import make_base, make_settings
from webhooks.build import BuildRecord, BuildState, RefKind, Release, ReleaseState
from webhooks.exceptions import BuildConflict, BuildNotFound


class FakeWorker:
    """Cancels through the store, as `Worker.cancel` does; counts wake-ups."""

    def __init__(self, store: SQLiteStore) -> None:
        self.store = store
        self.woken = 0

    async def cancel(self, build_id: int, detail: str) -> BuildRecord:
        """Cancel in the store."""
        return await self.store.cancel(build_id, detail)

    def wake(self) -> None:
        """Count a wake-up."""
        self.woken += 1


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    """An open SQLite job store."""
    async with SQLiteStore(tmp_path / "jobs.db") as opened:
        yield opened


@pytest.mark.anyio
async def test_worker_control_cancels_and_retries(store: SQLiteStore) -> None:
    """Cancel ends a queued build; retry queues a copy of a finished one and wakes the worker."""
    worker = FakeWorker(store)
    control = WorkerControl(store, worker)
    submitted = await store.submit(make_request())
    cancelled = await control.cancel(submitted.build_id, "by admin")
    assert (cancelled.state, cancelled.detail) == (BuildState.CANCELLED, "by admin")
    new_id = await control.retry(submitted.build_id)
    assert new_id != submitted.build_id
    record = await store.get(new_id)
    assert record is not None
    assert record.state is BuildState.QUEUED
    assert worker.woken == 1


@pytest.mark.anyio
async def test_worker_control_translates_errors(store: SQLiteStore) -> None:
    """Unknown builds become BuildNotFound, wrong states BuildConflict (404/409)."""
    control = WorkerControl(store, FakeWorker(store))
    with pytest.raises(BuildNotFound):
        await control.cancel(404, "x")
    with pytest.raises(BuildNotFound):
        await control.retry(404)
    queued = (await store.submit(make_request())).build_id
    with pytest.raises(BuildConflict, match="only a finished build"):
        await control.retry(queued)
    await control.cancel(queued, "x")
    with pytest.raises(BuildConflict, match="is cancelled"):
        await control.cancel(queued, "again")


@pytest.mark.anyio
async def test_worker_control_publishes_a_refused_release_again(tmp_path: Path) -> None:
    """A refused release is queued again (no rebuild); one in progress or none is a 409."""
    notify = status_notifier("https://ci.example.org")
    async with SQLiteStore(tmp_path / "jobs.db", clock=FakeClock(), notify=notify) as store:
        worker = FakeWorker(store)
        control = WorkerControl(store, worker)
        tag = await store.submit(make_request(ref="refs/tags/v1", kind=RefKind.TAG))
        branch = await store.submit(make_request())
        for _ in range(2):
            await store.claim_next()
        await store.finish(tag.build_id, Event.SUCCEED, "ISO built")
        await store.finish(branch.build_id, Event.SUCCEED, "ISO built")
        with pytest.raises(BuildConflict, match="is queued: wait"):
            await control.publish(tag.build_id)
        with pytest.raises(BuildConflict, match="publishes no release"):
            await control.publish(branch.build_id)
        with pytest.raises(BuildNotFound):
            await control.publish(404)
        (release,) = await store.due_notifications(START, 9, kinds=(RELEASE,))
        refused = Release("v1", ReleaseState.REFUSED, START, 5, None, "403", refusals=5)
        await store.update_release(release.id, tag.build_id, refused)

        record = await control.publish(tag.build_id)

        assert record.release is not None
        assert (record.release.state, record.release.attempts) == (ReleaseState.QUEUED, 0)
        assert [n.build_id for n in await store.due_notifications(START, 9, kinds=(RELEASE,))] == [
            tag.build_id
        ]
        assert worker.woken == 1


def test_artifact_dirs_match_the_pipeline(tmp_path: Path) -> None:
    """The web app looks where the pipeline keeps a build's files, and only if it exists."""
    pipeline = Pipeline(
        PipelineConfig(work_root=tmp_path / "work", artifacts_root=tmp_path / "artifacts"),
        clients={},
        sandbox=None,  # type: ignore[arg-type]
        logs=None,  # type: ignore[arg-type]
    )
    dirs = ArtifactDirs(tmp_path / "artifacts")
    assert dirs.directory(3) is None
    pipeline.artifacts_dir(3).mkdir(parents=True)
    assert dirs.directory(3) == pipeline.artifacts_dir(3)


def _plenty(path: Path) -> DiskUsage:
    return DiskUsage(total=100 << 30, used=0, free=100 << 30)


def _full(path: Path) -> DiskUsage:
    return DiskUsage(total=100 << 30, used=100 << 30, free=1 << 20)


@pytest.mark.anyio
async def test_readiness_passes_with_store_base_and_room(
    tmp_path: Path, store: SQLiteStore
) -> None:
    """A reachable store, a prepared base and free disk space make every check pass."""
    settings = make_settings(tmp_path)
    make_base(settings)
    checks = await RunnerReadiness(settings, store, usage=_plenty).check()
    assert [c.name for c in checks][:2] == ["store", "sandbox_base"]
    assert all(c.ok for c in checks), checks
    assert "builds stored" in checks[0].detail


@pytest.mark.anyio
async def test_readiness_names_what_is_wrong(tmp_path: Path, store: SQLiteStore) -> None:
    """A missing base and a full disk fail with a message that says what to do."""
    settings = make_settings(tmp_path)
    checks = {c.name: c for c in await RunnerReadiness(settings, store, usage=_full).check()}
    assert not checks["sandbox_base"].ok
    assert "setup-sandbox.sh" in checks["sandbox_base"].detail
    assert not checks["disk"].ok
    assert "GiB free" in checks["disk"].detail


@pytest.mark.anyio
async def test_readiness_reports_a_failing_store(tmp_path: Path) -> None:
    """A store that raises or hangs is a failed check, not an exception."""

    class Broken(SQLiteStore):
        async def count_by_state(self) -> dict[BuildState, int]:
            raise StoreError("database is locked")

    class Hanging(SQLiteStore):
        async def count_by_state(self) -> dict[BuildState, int]:
            await anyio.sleep(10)
            return {}

    settings = make_settings(tmp_path)
    broken = await RunnerReadiness(settings, Broken(tmp_path / "a.db"), usage=_plenty).check()
    assert not broken[0].ok
    assert "database is locked" in broken[0].detail
    hanging = RunnerReadiness(
        settings, Hanging(tmp_path / "b.db"), usage=_plenty, store_timeout=0.05
    )
    assert "did not answer within 0.05 s" in (await hanging.check())[0].detail

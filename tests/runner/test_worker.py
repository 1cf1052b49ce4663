"""Tests for runner.worker (with the pipeline and the notifier) over a real store.

The sandbox and the forge are fakes implementing the protocols the runner declares
(`tests.runner.fakes`); the job store is the real SQLite store on a temporary file.
The pipeline's own rules are tested in test_pipeline.py; the real sandbox and a fake
forge HTTP server are exercised end to end in tests/e2e.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from runner.buildlogs import BuildLogs
from runner.exceptions import StoreError
from runner.forges.protocol import CommitState
from runner.notifications import Notifier, status_notifier
from runner.pipeline import Pipeline, PipelineConfig
from runner.publish import Publisher
from runner.store import SQLiteStore
from runner.worker import Worker, WorkerSink
from sandbox.exceptions import BuildFailed
from tests.runner.fakes import BASE_URL, FakeForge, FakeSandbox, profile_tarball
from tests.runner.store.samples import make_request
from webhooks.build import BuildRecord, BuildState, Forge, RefKind


@dataclasses.dataclass
class Rig:
    store: SQLiteStore
    forge: FakeForge
    sandbox: FakeSandbox
    worker: Worker
    sink: WorkerSink
    logs: BuildLogs
    pipeline: Pipeline


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    """A worker over a real store with a fake forge and sandbox."""
    async with SQLiteStore(tmp_path / "db.sqlite", notify=status_notifier(BASE_URL)) as store:
        forge = FakeForge(profile_tarball())
        sandbox = FakeSandbox(tmp_path / "sandbox")
        logs = BuildLogs(tmp_path / "logs")
        pipeline = Pipeline(
            PipelineConfig(work_root=tmp_path / "work", artifacts_root=tmp_path / "artifacts"),
            clients={Forge.GITHUB: forge},
            sandbox=sandbox,
            logs=logs,
        )
        notifier = Notifier(store, {Forge.GITHUB: forge}, poll_seconds=0.05)
        publisher = Publisher(
            store,
            {Forge.GITHUB: forge},
            artifacts_root=tmp_path / "artifacts",
            base_url=BASE_URL,
            poll_seconds=0.05,
            statuses_enqueued=notifier.wake,
        )
        worker = Worker(
            store,
            pipeline,
            notifier,
            publisher=publisher,
            base_url=BASE_URL,
            poll_seconds=0.05,
        )
        yield Rig(store, forge, sandbox, worker, WorkerSink(store, worker), logs, pipeline)


async def wait_for_state(rig: Rig, build_id: int, state: BuildState) -> None:
    """Wait (bounded) until the build reaches `state`."""
    with anyio.fail_after(10):
        while True:
            record = await rig.store.get(build_id)
            assert record is not None
            if record.state is state:
                return
            await anyio.sleep(0.02)


async def wait_for_statuses(rig: Rig, count: int) -> None:
    """Wait (bounded) until the forge has received `count` statuses."""
    with anyio.fail_after(10):
        while len(rig.forge.statuses) < count:
            await anyio.sleep(0.02)


@pytest.mark.anyio
async def test_worker_branch_push_reports_queued_running_success(rig: Rig) -> None:
    """A branch build posts queued, running, then success, and publishes nothing."""
    async with anyio.create_task_group() as group:
        await group.start(rig.worker.run)
        submission = await rig.sink.submit(make_request())
        await wait_for_state(rig, submission.build_id, BuildState.SUCCEEDED)
        await wait_for_statuses(rig, 3)
        group.cancel_scope.cancel()
    assert [s[1] for s in rig.forge.statuses] == [
        CommitState.QUEUED,
        CommitState.RUNNING,
        CommitState.SUCCESS,
    ]
    assert rig.forge.releases == []
    artifacts = rig.pipeline.artifacts_dir(submission.build_id)
    assert sorted(p.name for p in artifacts.iterdir()) == ["b2sums", "sha256sums", "t-1-x86_64.iso"]
    log = rig.logs.path(submission.build_id).read_text()
    assert "[mkarchiso] INFO: building" in log
    assert rig.sandbox.discarded == [f"build-{submission.build_id}"]


@pytest.mark.anyio
async def test_worker_tag_build_succeeds_then_its_release_is_published(rig: Rig) -> None:
    """A trusted tag build ends succeeded with its files kept, then its release goes out."""
    async with anyio.create_task_group() as group:
        await group.start(rig.worker.run)
        submission = await rig.sink.submit(make_request(ref="refs/tags/v1", kind=RefKind.TAG))
        await wait_for_state(rig, submission.build_id, BuildState.SUCCEEDED)
        await wait_for_statuses(rig, 4)
        group.cancel_scope.cancel()
    assert rig.forge.releases == [("v1", ["t-1-x86_64.iso", "sha256sums", "b2sums"])]
    assert [(s[1], s[2]) for s in rig.forge.statuses[2:]] == [
        (CommitState.SUCCESS, "ISO built in 2s; publishing the release"),
        (CommitState.SUCCESS, "ISO built in 2s; release published"),
    ]
    record = await rig.store.get(submission.build_id)
    assert record is not None
    assert record.release is not None
    assert record.release.url == "https://forge/owner/profile/releases/v1"


@pytest.mark.anyio
async def test_worker_build_failure_reports_failure_with_reason(rig: Rig) -> None:
    """A failed mkarchiso ends the build failed, and the status carries the reason."""
    rig.sandbox.error = BuildFailed("mkarchiso exited with status 1", exit_code=1)
    async with anyio.create_task_group() as group:
        await group.start(rig.worker.run)
        submission = await rig.sink.submit(make_request())
        await wait_for_state(rig, submission.build_id, BuildState.FAILED)
        await wait_for_statuses(rig, 3)
        group.cancel_scope.cancel()
    assert rig.forge.statuses[-1][1] is CommitState.FAILURE
    assert "mkarchiso exited with status 1" in rig.forge.statuses[-1][2]


@pytest.mark.anyio
async def test_worker_newer_push_supersedes_running_build(rig: Rig) -> None:
    """A new push to the same branch cancels the running build and builds the new one."""
    rig.sandbox.blocking = True
    async with anyio.create_task_group() as group:
        await group.start(rig.worker.run)
        first = await rig.sink.submit(make_request())
        with anyio.fail_after(10):
            await rig.sandbox.started.wait()
        newer = make_request()
        second = await rig.sink.submit(newer)
        await wait_for_state(rig, first.build_id, BuildState.CANCELLED)
        rig.sandbox.blocking = False
        rig.sandbox.block.set()
        await wait_for_state(rig, second.build_id, BuildState.SUCCEEDED)
        group.cancel_scope.cancel()
    record = await rig.store.get(first.build_id)
    assert record is not None
    assert record.detail == f"superseded by {newer.commit_sha[:7]}"
    assert f"build-{first.build_id}" in rig.sandbox.discarded


@pytest.mark.anyio
async def test_worker_late_delivery_of_an_older_push_is_cancelled_not_built(rig: Rig) -> None:
    """The older push, delivered after the newer one, is cancelled; the newer one builds."""
    old_sha = f"{0xC3:040x}"
    rig.sandbox.blocking = True
    async with anyio.create_task_group() as group:
        await group.start(rig.worker.run)
        newer = await rig.sink.submit(make_request(previous_sha=old_sha))
        with anyio.fail_after(10):
            await rig.sandbox.started.wait()
        late = await rig.sink.submit(make_request(commit_sha=old_sha))
        await wait_for_state(rig, late.build_id, BuildState.CANCELLED)
        rig.sandbox.blocking = False
        rig.sandbox.block.set()
        await wait_for_state(rig, newer.build_id, BuildState.SUCCEEDED)
        with anyio.fail_after(10):  # the forge hears why the late push did not build
            while not any(
                s[0] == old_sha and s[1] is CommitState.CANCELLED for s in rig.forge.statuses
            ):
                await anyio.sleep(0.05)
        group.cancel_scope.cancel()
    assert len(rig.sandbox.seen_epochs) == 1  # only the newer push was built
    (cancelled,) = [s for s in rig.forge.statuses if s[1] is CommitState.CANCELLED]
    assert cancelled[2].endswith("pushed after it (delivered late)")


@pytest.mark.anyio
async def test_worker_statuses_survive_a_forge_outage(rig: Rig) -> None:
    """Statuses the forge refuses with 5xx are retried later, in order, none lost."""
    rig.forge.status_failures = 2
    async with anyio.create_task_group() as group:
        await group.start(rig.worker.run)
        submission = await rig.sink.submit(make_request())
        await wait_for_state(rig, submission.build_id, BuildState.SUCCEEDED)
        # Retries wait (2 s, then 4 s) before they are due again.
        with anyio.fail_after(15):
            while len(rig.forge.statuses) < 3:
                await anyio.sleep(0.1)
        group.cancel_scope.cancel()
    assert [s[1] for s in rig.forge.statuses] == [
        CommitState.QUEUED,
        CommitState.RUNNING,
        CommitState.SUCCESS,
    ]


@pytest.mark.anyio
async def test_worker_warning_updates_the_status_description(rig: Rig) -> None:
    """The sandbox's long-build warning posts a running status with a note."""
    rig.sandbox.warn = True
    async with anyio.create_task_group() as group:
        await group.start(rig.worker.run)
        submission = await rig.sink.submit(make_request())
        await wait_for_state(rig, submission.build_id, BuildState.SUCCEEDED)
        await wait_for_statuses(rig, 4)
        group.cancel_scope.cancel()
    assert rig.forge.statuses[2][1] is CommitState.RUNNING
    assert rig.forge.statuses[2][2].startswith("Still building after 15 min")


@pytest.mark.anyio
async def test_worker_recovers_builds_left_running(tmp_path: Path, rig: Rig) -> None:
    """A build left running by a dead process is re-run at start-up and reported."""
    submission = await rig.store.submit(make_request())
    claimed = await rig.store.claim_next()
    assert claimed is not None
    assert claimed.id == submission.build_id
    async with anyio.create_task_group() as group:
        await group.start(rig.worker.run)
        await wait_for_state(rig, submission.build_id, BuildState.SUCCEEDED)
        await wait_for_statuses(rig, 5)
        group.cancel_scope.cancel()
    # Queued and running from the process that died, then the recovery and the re-run.
    _, _, queued, running, success = rig.forge.statuses
    assert (queued[1], queued[2]) == (
        CommitState.QUEUED,
        "re-queued: the service stopped while this build was running",
    )
    # The re-queue note stays on the build, but the running status says what happens now.
    assert (running[1], running[2]) == (CommitState.RUNNING, "Building the ISO")
    assert success[1] is CommitState.SUCCESS


@pytest.mark.anyio
async def test_worker_cancel_stops_a_running_build(rig: Rig) -> None:
    """Cancelling a running build ends it cancelled and cleans its sandbox up."""
    rig.sandbox.blocking = True
    async with anyio.create_task_group() as group:
        await group.start(rig.worker.run)
        submission = await rig.sink.submit(make_request())
        with anyio.fail_after(10):
            await rig.sandbox.started.wait()
        await rig.worker.cancel(submission.build_id, "cancelled by admin")
        await wait_for_state(rig, submission.build_id, BuildState.CANCELLED)
        with anyio.fail_after(10):
            while rig.worker.running:
                await anyio.sleep(0.02)
        group.cancel_scope.cancel()
    assert rig.sandbox.discarded == [f"build-{submission.build_id}"]


class FlakyFinishStore(SQLiteStore):
    """A real store whose next `finish` calls fail, as a full disk would make them."""

    failures = 0

    async def finish(self, *args: Any, **kwargs: Any) -> BuildRecord:
        if self.failures:
            self.failures -= 1
            raise StoreError("the job database refused a write (disk full)")
        return await super().finish(*args, **kwargs)


@pytest.mark.anyio
async def test_worker_slot_survives_a_store_failure_and_ends_the_build(tmp_path: Path) -> None:
    """A store error while finishing one build ends it errored and later builds still run."""
    async with FlakyFinishStore(tmp_path / "db.sqlite", notify=status_notifier(BASE_URL)) as store:
        store.failures = 1
        forge = FakeForge(profile_tarball())
        pipeline = Pipeline(
            PipelineConfig(work_root=tmp_path / "work", artifacts_root=tmp_path / "artifacts"),
            clients={Forge.GITHUB: forge},
            sandbox=FakeSandbox(tmp_path / "sandbox"),
            logs=BuildLogs(tmp_path / "logs"),
        )
        notifier = Notifier(store, {Forge.GITHUB: forge}, poll_seconds=0.05)
        worker = Worker(store, pipeline, notifier, base_url=BASE_URL, poll_seconds=0.05)
        sink = WorkerSink(store, worker)
        async with anyio.create_task_group() as group:
            await group.start(worker.run)
            first = await sink.submit(make_request())
            second = await sink.submit(make_request(ref="refs/heads/other"))
            with anyio.fail_after(10):
                while True:
                    states = [await store.get(b) for b in (first.build_id, second.build_id)]
                    if all(r is not None and r.state.is_final for r in states):
                        break
                    await anyio.sleep(0.02)
            group.cancel_scope.cancel()
        crashed = await store.get(first.build_id)
        later = await store.get(second.build_id)
    assert crashed is not None
    assert crashed.state is BuildState.ERRORED
    assert crashed.detail == "internal error in isorunner; see the service log"
    assert later is not None
    assert later.state is BuildState.SUCCEEDED

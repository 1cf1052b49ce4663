"""The worker: claims queued builds, runs them, and keeps the forge told.

The I/O shell around the job store, the pipeline and the notifier. At start-up it
recovers builds that were running when the process died (re-queued, or ended as
errored) and removes the sandboxes a crash left. Then `max_concurrent` slots each
claim the oldest queued build and run it; a state change and its commit status are
stored together (the status hook the store was opened with), and the notifier
delivers statuses. A trusted tag build's release is queued with its SUCCEED and
published by the publisher, beside the builds: a long upload holds back no build.

`WorkerSink` is the `webhooks.build.BuildSink` the web app gets: it stores a request,
supersedes older builds of the same branch or pull request (stopping them if they
run), and wakes the worker and the notifier.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio
import structlog

from runner.exceptions import IllegalTransition, StoreError
from runner.jobs import Event
from runner.metrics import Metrics
from runner.notifications import STATUS, Notifier, status_payload
from runner.pipeline import Outcome, Pipeline
from runner.publish import Publisher
from runner.store import JobStore
from webhooks.build import BuildRecord, BuildRequest, Submission

_log = structlog.get_logger()


class Worker:
    """Runs queued builds, at most `max_concurrent` at once.

    Args:
        store: The job store.
        pipeline: Runs one build.
        notifier: Delivers commit statuses from the store's outbox.
        publisher: Publishes tag builds' releases from the outbox; None leaves them
            queued (a process that only builds).
        base_url: The public base URL (links in statuses).
        max_concurrent: How many builds may run at once.
        requeue_on_recovery: Re-run builds that a dead process left running (else
            end them as errored).
        cleanup_stale: Removes sandboxes a crashed process left (at start-up).
        warning_seconds: When the sandbox warns that a build runs long (for the text).
        poll_seconds: How often the queue is checked without a wake-up.
        metrics: Build counts (refreshed on every change and periodically) and
            durations; None records nothing.
    """

    def __init__(
        self,
        store: JobStore,
        pipeline: Pipeline,
        notifier: Notifier,
        *,
        publisher: Publisher | None = None,
        base_url: str,
        max_concurrent: int = 1,
        requeue_on_recovery: bool = True,
        cleanup_stale: Callable[[], Awaitable[object]] | None = None,
        warning_seconds: float = 900,
        poll_seconds: float = 5.0,
        metrics: Metrics | None = None,
    ) -> None:
        self._store = store
        self._pipeline = pipeline
        self._notifier = notifier
        self._publisher = publisher
        self._base_url = base_url
        self._max_concurrent = max_concurrent
        self._requeue = requeue_on_recovery
        self._cleanup_stale = cleanup_stale
        self._poll = poll_seconds
        self._warning_seconds = warning_seconds
        self._wake = anyio.Event()
        self._running: dict[int, anyio.CancelScope] = {}
        self._metrics = metrics

    def wake(self) -> None:
        """Ask the slots to look at the queue now (a build was queued or cancelled)."""
        self._wake.set()
        self._notifier.wake()
        if self._publisher is not None:
            self._publisher.wake()
        if self._metrics is not None:
            self._metrics.builds_changed()

    @property
    def running(self) -> frozenset[int]:
        """The ids of the builds running now."""
        return frozenset(self._running)

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Recover, then run builds, deliver statuses and publish releases until cancelled."""
        if self._cleanup_stale is not None:
            await self._cleanup_stale()
        recovered = await self._store.recover_running(self._requeue)
        for record in recovered:
            _log.warning(
                "build_interrupted_by_restart",
                build_id=record.id,
                action="re-queued" if self._requeue else "ended as errored",
            )
        async with anyio.create_task_group() as group:
            group.start_soon(self._notifier.run)
            if self._publisher is not None:
                group.start_soon(self._publisher.run)
            if self._metrics is not None:
                group.start_soon(self._metrics.watch_store, self._store)
            for _ in range(self._max_concurrent):
                group.start_soon(self._slot)
            task_status.started()

    async def stop_build(self, build_id: int) -> bool:
        """Stop a running build's task (after the store has cancelled it).

        Returns:
            False if the build is not running here.
        """
        scope = self._running.get(build_id)
        if scope is None:
            return False
        scope.cancel()
        return True

    async def cancel(self, build_id: int, detail: str) -> BuildRecord:
        """Cancel a queued or running build and tell the forge.

        Raises:
            IllegalTransition: The build has already finished.
            BuildNotFound: No such build.
        """
        record = await self._store.cancel(build_id, detail)
        await self.stop_build(build_id)
        self.wake()
        return record

    async def _slot(self) -> None:
        while True:
            try:
                record = await self._store.claim_next()
            except StoreError:
                _log.exception("build_claim_failed", retry_seconds=self._poll)
                await anyio.sleep(self._poll)
                continue
            if record is None:
                with anyio.move_on_after(self._poll):
                    await self._wake.wait()
                self._wake = anyio.Event()
                continue
            self._notifier.wake()
            if self._metrics is not None:
                self._metrics.builds_changed()
            try:
                await self._build(record)
            except Exception:  # noqa: BLE001 - one build's crash must not stop every slot
                _log.exception("worker_slot_crashed", build_id=record.id)
                await self._end_crashed(record)
            if self._metrics is not None:
                self._metrics.builds_changed()

    async def _end_crashed(self, record: BuildRecord) -> None:
        """End a build whose handling raised as errored, if the store lets us now.

        If even that fails (the store is down), the build stays running and the next
        start-up recovers it: nothing is lost, only delayed.
        """
        with anyio.CancelScope(shield=True):
            try:
                await self._store.finish(
                    record.id,
                    Event.ERROR,
                    "internal error in isorunner; see the service log",
                )
            except (StoreError, IllegalTransition):
                _log.exception("crashed_build_not_ended", build_id=record.id)
                return
            self._notifier.wake()

    async def _build(self, record: BuildRecord) -> None:
        # Every line logged while the build runs (forge calls, the sandbox, tasks it
        # starts) carries its id, through structlog's context variables.
        with structlog.contextvars.bound_contextvars(build_id=record.id):
            await self._run_build(record)

    async def _run_build(self, record: BuildRecord) -> None:
        log = _log.bind(build_id=record.id, repo=record.request.repo)
        log.info("build_started", sha=record.request.commit_sha, ref=record.request.ref)
        outcome: Outcome | None = None
        started = anyio.current_time()
        with anyio.CancelScope() as scope:
            self._running[record.id] = scope
            try:
                outcome = await self._pipeline.run(record, on_warning=lambda: self.warn(record))
            finally:
                del self._running[record.id]
        if outcome is None:
            # Cancelled: by `cancel`/supersede (the store already says so) or because
            # the worker is shutting down (the build stays running and is recovered at
            # the next start-up).
            log.info("build_stopped")
            return
        with anyio.CancelScope(shield=True):
            try:
                finished = await self._store.finish(record.id, outcome.event, outcome.detail)
            except IllegalTransition:
                log.info("build_ended_after_cancel", outcome=outcome.event.value)
                return
            self._notifier.wake()
            if self._publisher is not None:
                self._publisher.wake()
        if self._metrics is not None:
            self._metrics.build_finished(finished.state.value, anyio.current_time() - started)
        log.info("build_finished", outcome=outcome.event.value, detail=outcome.detail)

    async def warn(self, record: BuildRecord) -> None:
        """Tell the forge that a build is running long (the sandbox's warning)."""
        minutes = round(self._warning_seconds / 60)
        note = f"Still building after {minutes} min; stops at the time limit"
        await self._store.set_detail(record.id, note)
        current = await self._store.get(record.id)
        if current is not None:
            payload = status_payload(current, self._base_url, note=note)
            await self._store.enqueue_notification(record.id, STATUS, payload)
            self._notifier.wake()


class WorkerSink:
    """The `BuildSink` given to the web app: store, supersede, wake.

    Args:
        store: The job store.
        worker: The worker to wake and whose superseded builds to stop.
    """

    def __init__(self, store: JobStore, worker: Worker) -> None:
        self._store = store
        self._worker = worker

    async def submit(self, request: BuildRequest) -> Submission:
        """Store `request` durably; supersede older builds of its branch or PR."""
        # One durable write: the build, and the builds it supersedes (older ones of
        # its line, or itself if it was delivered late), cancelled with it.
        submission, cancelled = await self._store.submit_superseding(request)
        for build_id in cancelled:
            await self._worker.stop_build(build_id)
        self._worker.wake()
        return submission


__all__ = ["Event", "Worker", "WorkerSink"]

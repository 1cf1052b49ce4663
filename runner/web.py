"""Adapters that give the web app what it reads from the runner, through its protocols.

I/O shell, thin: each class wraps a runner object in one of the `Protocol`s declared
in `webhooks.build` and translates the runner's errors into `webhooks.exceptions`
(the web app never imports `runner`). `runner.service` builds them and passes them
to `webhooks.app.create_app`.

- `WorkerControl`   → `BuildControl`: cancel (stopping a running build), retry, and
  publish a tag build's release again.
- `ArtifactDirs`    → `ArtifactSource`: `webhooks.build.artifacts_dir`, where the
  pipeline keeps a finished build's ISOs and checksum files.
- `RunnerReadiness` → `ReadinessProbe`: the store answers, the sandbox base is
  present and matches its manifest, and the disks have room for a build.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import anyio

from runner.check import DiskUsage, Finding, check_base, check_disk
from runner.exceptions import BuildNotFound, IllegalTransition, StoreError
from runner.jobs import RELEASE, publishes_release
from runner.settings import Settings
from runner.store import JobStore
from webhooks import exceptions as web
from webhooks.build import BuildRecord, BuildState, ReadinessCheck, artifacts_dir


class Canceller(Protocol):
    """What `WorkerControl` needs of `runner.worker.Worker`."""

    async def cancel(self, build_id: int, detail: str) -> BuildRecord:
        """Cancel a queued or running build, stopping it, and tell the forge."""
        ...

    def wake(self) -> None:
        """Look at the queue now."""
        ...


class WorkerControl:
    """Cancels and retries builds for the admin API.

    Args:
        store: The job store (retry queues a copy of a finished build there).
        worker: Stops a cancelled running build and picks up a retried one.
    """

    def __init__(self, store: JobStore, worker: Canceller) -> None:
        self._store = store
        self._worker = worker

    async def cancel(self, build_id: int, detail: str) -> BuildRecord:
        """Cancel a queued or running build; return its cancelled record.

        Raises:
            webhooks.exceptions.BuildNotFound: No such build.
            webhooks.exceptions.BuildConflict: The build has already finished.
        """
        try:
            return await self._worker.cancel(build_id, detail)
        except BuildNotFound:
            raise web.BuildNotFound(f"no build with id {build_id}") from None
        except IllegalTransition as exc:
            raise web.BuildConflict(
                f"build {build_id} is {exc.state.value}: only a queued or running build "
                "can be cancelled"
            ) from None

    async def retry(self, build_id: int) -> int:
        """Queue a new build of a finished build's request; return the new id.

        Raises:
            webhooks.exceptions.BuildNotFound: No such build.
            webhooks.exceptions.BuildConflict: The build has not finished yet.
        """
        try:
            submission = await self._store.retry(build_id)
        except BuildNotFound:
            raise web.BuildNotFound(f"no build with id {build_id}") from None
        except StoreError as exc:
            raise web.BuildConflict(str(exc)) from None
        self._worker.wake()
        return submission.build_id

    async def publish(self, build_id: int) -> BuildRecord:
        """Queue a succeeded trusted tag build's release again, from its files on disk.

        Raises:
            webhooks.exceptions.BuildNotFound: No such build.
            webhooks.exceptions.BuildConflict: The build publishes no release, or its
                release is being published now.
        """
        record = await self._store.get(build_id)
        if record is None:
            raise web.BuildNotFound(f"no build with id {build_id}")
        if record.state is not BuildState.SUCCEEDED or not publishes_release(record.request):
            raise web.BuildConflict(
                f"build {build_id} is not a succeeded tag build of the repository itself: it"
                " publishes no release"
            )
        if record.release is not None and not record.release.state.is_final:
            raise web.BuildConflict(
                f"the release of build {build_id} is {record.release.state.value}: wait for"
                " it to be published or refused"
            )
        await self._store.enqueue_notification(build_id, RELEASE, {"tag": record.request.ref_name})
        # Read before waking the publisher, so the answer shows the release queued.
        queued = await self._store.get(build_id)
        self._worker.wake()
        assert queued is not None  # it was there a moment ago; builds are never deleted live
        return queued


class ArtifactDirs:
    """A finished build's files, in `webhooks.build.artifacts_dir(root, build_id)`.

    Args:
        root: `sandbox.iso_output_root`.
    """

    def __init__(self, root: Path) -> None:
        self._root = root

    def directory(self, build_id: int) -> Path | None:
        """Return the build's artifact directory, or None if it has none."""
        path = artifacts_dir(self._root, build_id)
        return path if path.is_dir() else None


class RunnerReadiness:
    """The checks behind `GET /readyz`, reusing those of `isorunner check`.

    Args:
        settings: The configuration (sandbox base, state paths, output limit).
        store: The job store to ask.
        store_timeout: How long the store may take to answer.
        usage: Reads a path's disk usage (tests); `shutil.disk_usage` by default.
    """

    def __init__(
        self,
        settings: Settings,
        store: JobStore,
        *,
        store_timeout: float = 5.0,
        usage: Callable[[Path], DiskUsage] | None = None,
    ) -> None:
        self._settings = settings
        self._store = store
        self._timeout = store_timeout
        self._usage = usage

    async def _store_check(self) -> ReadinessCheck:
        try:
            with anyio.fail_after(self._timeout):
                counts = await self._store.count_by_state()
        except TimeoutError:
            return ReadinessCheck(
                "store", False, f"the job store did not answer within {self._timeout:g} s"
            )
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready", said in the body
            return ReadinessCheck(
                "store", False, f"the job store failed ({type(exc).__name__}: {exc})"
            )
        queued = sum(n for state, n in counts.items() if not state.is_final)
        return ReadinessCheck(
            "store", True, f"{sum(counts.values())} builds stored, {queued} queued or running"
        )

    async def check(self) -> list[ReadinessCheck]:
        """Run every check; a failing check is reported, never raised."""
        settings = self._settings
        base = await anyio.to_thread.run_sync(check_base, settings)
        disks = await anyio.to_thread.run_sync(lambda: check_disk(settings, usage=self._usage))
        return [
            await self._store_check(),
            _readiness(base, "sandbox_base"),
            *(_readiness(disk, "disk") for disk in disks),
        ]


def _readiness(finding: Finding, name: str) -> ReadinessCheck:
    return ReadinessCheck(name, finding.ok, finding.message)

"""Retention: finished builds older than `storage.retention_days` are forgotten.

I/O shell over the job store and the file system. `Retention.prune` deletes the old
build records (the store keeps queued and running builds, and builds whose statuses
are still waiting in the outbox), then their log files and artifact directories. A
crash between the two leaves files without a record; each run also sweeps those
orphans, so nothing is left behind for good. `Retention.run` prunes at start-up and
then once a day, until cancelled.

`cutoff` is pure: the moment before which a finished build is old enough to go.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final, Protocol

import anyio
import structlog

from runner.buildlogs import BuildLogs
from webhooks.build import BuildRecord, artifacts_dir

_log = structlog.get_logger()

DAY: Final = 24 * 60 * 60.0


class PrunableStore(Protocol):
    """What retention needs of the job store."""

    async def prune_finished(self, before: datetime) -> list[int]:
        """Delete finished builds that ended before `before`; return their ids."""
        ...

    async def get(self, build_id: int) -> BuildRecord | None:
        """Return the build with this id, or None."""
        ...


def cutoff(now: datetime, retention_days: int) -> datetime:
    """Builds that finished before the returned moment are pruned."""
    return now - timedelta(days=retention_days)


@dataclass(frozen=True, slots=True)
class PruneReport:
    """What one retention run removed.

    Attributes:
        builds: Ids of the build records deleted.
        orphans: Ids whose files were left by an earlier, interrupted run.
    """

    builds: tuple[int, ...]
    orphans: tuple[int, ...]


class Retention:
    """Deletes old finished builds with their logs and artifacts.

    Args:
        store: The job store.
        logs: The build logs (`<logs_dir>/<id>.log`).
        artifacts_root: The builds' artifact directories (`<root>/<id>/`).
        retention_days: How long a finished build is kept.
        clock: Returns the current UTC time (tests pass a fake).
        interval_seconds: Time between runs of `run`; a day by default.
    """

    def __init__(
        self,
        store: PrunableStore,
        logs: BuildLogs,
        artifacts_root: Path,
        *,
        retention_days: int,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        interval_seconds: float = DAY,
    ) -> None:
        self._store = store
        self._logs = logs
        self._artifacts_root = artifacts_root
        self._days = retention_days
        self._clock = clock
        self._interval = interval_seconds

    async def run(self) -> None:
        """Prune now and then every `interval_seconds`, until cancelled.

        A failed run is logged and retried at the next interval: retention must never
        stop the service.
        """
        while True:
            try:
                await self.prune()
            except Exception:  # noqa: BLE001 - logged; the next run tries again
                _log.exception("retention_run_failed", retry=True)
            await anyio.sleep(self._interval)

    async def prune(self) -> PruneReport:
        """Delete the builds older than the retention age, their logs and artifacts."""
        before = cutoff(self._clock(), self._days)
        pruned = await self._store.prune_finished(before)
        for build_id in pruned:
            await anyio.to_thread.run_sync(self._remove_files, build_id)
            _log.info("build_pruned", build_id=build_id, retention_days=self._days)
        orphans = await self._sweep(before, set(pruned))
        return PruneReport(tuple(pruned), tuple(orphans))

    async def _sweep(self, before: datetime, skip: set[int]) -> list[int]:
        """Remove old files whose build record is gone (an interrupted earlier run)."""
        candidates = await anyio.to_thread.run_sync(self._old_file_ids, before.timestamp())
        orphans: list[int] = []
        for build_id in sorted(candidates - skip):
            if await self._store.get(build_id) is None:
                await anyio.to_thread.run_sync(self._remove_files, build_id)
                _log.info("orphaned_build_files_removed", build_id=build_id)
                orphans.append(build_id)
        return orphans

    def _old_file_ids(self, before: float) -> set[int]:
        ids: set[int] = set()
        places = (
            # BuildLogs keeps every log in one directory, `<logs_dir>/<id>.log`.
            (self._logs.path(0).parent, ".log"),
            (self._artifacts_root, ""),
        )
        for directory, suffix in places:
            try:
                entries = list(directory.iterdir())
            except FileNotFoundError:
                continue
            for entry in entries:
                stem = entry.name.removesuffix(suffix) if suffix else entry.name
                if (suffix and not entry.name.endswith(suffix)) or not stem.isdigit():
                    continue
                try:
                    old = entry.lstat().st_mtime < before
                except FileNotFoundError:
                    continue
                if old:
                    ids.add(int(stem))
        return ids

    def _remove_files(self, build_id: int) -> None:
        self._logs.remove(build_id)
        artifacts = artifacts_dir(self._artifacts_root, build_id)
        if artifacts.is_symlink() or artifacts.is_file():
            artifacts.unlink()
        elif artifacts.is_dir():
            shutil.rmtree(artifacts)


__all__ = ["DAY", "PruneReport", "Retention", "cutoff"]

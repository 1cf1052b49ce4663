"""Stand-ins for what the build pages, API and health endpoints are given.

No I/O except what the fakes of files do in a test's temporary directory: builds in
a dict (`WebStore`, also a `BuildBrowser` and `BuildControl`), logs and artifacts in
directories, a readiness probe that answers what it is told.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.runner.store.samples import make_request
from tests.webhooks.fakes import MemoryStore
from webhooks.build import (
    ArtifactSource,
    BuildBrowser,
    BuildControl,
    BuildLogSource,
    BuildRecord,
    BuildRequest,
    BuildState,
    ReadinessCheck,
    ReadinessProbe,
    Release,
    ReleaseState,
)
from webhooks.exceptions import BuildConflict, BuildNotFound

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


class WebStore(MemoryStore):
    """A `MemoryStore` that also lists, cancels and retries builds."""

    def add(
        self,
        request: BuildRequest | None = None,
        *,
        state: BuildState = BuildState.QUEUED,
        detail: str = "",
        ran_seconds: float | None = None,
        release: Release | None = None,
    ) -> BuildRecord:
        """Store a build directly in `state` and return it."""
        build_id = len(self.records) + 1
        started = T0 + timedelta(minutes=build_id) if state is not BuildState.QUEUED else None
        finished = None
        if state.is_final and started is not None:
            finished = started + timedelta(seconds=ran_seconds or 187)
        record = BuildRecord(
            id=build_id,
            request=request or make_request(),
            state=state,
            created_at=T0 + timedelta(minutes=build_id, seconds=-5),
            started_at=started,
            finished_at=finished,
            detail=detail,
            release=release,
        )
        self.records[build_id] = record
        return record

    def set_state(self, build_id: int, state: BuildState, detail: str = "") -> None:
        """Move a build to `state` (finishing it if final)."""
        record = self.records[build_id]
        finished = record.started_at + timedelta(seconds=61) if record.started_at else T0
        self.records[build_id] = dataclasses.replace(
            record,
            state=state,
            detail=detail,
            finished_at=finished if state.is_final else None,
        )

    async def list_builds(
        self,
        *,
        repo: str | None = None,
        state: BuildState | None = None,
        limit: int = 50,
        before_id: int | None = None,
    ) -> list[BuildRecord]:
        """Return builds newest first, filtered, below `before_id`."""
        found = [
            record
            for build_id, record in sorted(self.records.items(), reverse=True)
            if (repo is None or record.request.repo == repo)
            and (state is None or record.state is state)
            and (before_id is None or build_id < before_id)
        ]
        return found[:limit]

    async def cancel(self, build_id: int, detail: str) -> BuildRecord:
        """Cancel a queued or running build."""
        record = self.records.get(build_id)
        if record is None:
            raise BuildNotFound(f"no build with id {build_id}")
        if record.state.is_final:
            raise BuildConflict(f"build {build_id} is {record.state}: it cannot be cancelled")
        self.set_state(build_id, BuildState.CANCELLED, detail)
        return self.records[build_id]

    async def retry(self, build_id: int) -> int:
        """Queue a copy of a finished build."""
        record = self.records.get(build_id)
        if record is None:
            raise BuildNotFound(f"no build with id {build_id}")
        if not record.state.is_final:
            raise BuildConflict(f"build {build_id} is {record.state}: only a finished build")
        return self.add(record.request).id

    async def publish(self, build_id: int) -> BuildRecord:
        """Queue a succeeded build's release again (any succeeded build, here)."""
        record = self.records.get(build_id)
        if record is None:
            raise BuildNotFound(f"no build with id {build_id}")
        if record.state is not BuildState.SUCCEEDED:
            raise BuildConflict(f"build {build_id} is {record.state}: it publishes no release")
        tag = record.request.ref_name
        queued = dataclasses.replace(
            record, release=Release(tag, ReleaseState.QUEUED, record.created_at)
        )
        self.records[build_id] = queued
        return queued


class DirLogs:
    """Log files named `<id>.log` in a directory, as the runner keeps them."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, build_id: int) -> Path:
        """The log file of a build (it may not exist yet)."""
        return self.root / f"{build_id}.log"

    def existing(self, build_id: int) -> Path | None:
        """The log file if it exists."""
        path = self.path(build_id)
        return path if path.is_file() else None

    def append(self, build_id: int, text: str) -> None:
        """Append text to a build's log, as the runner's writer does."""
        with self.path(build_id).open("a", encoding="utf-8") as handle:
            handle.write(text)


class DirArtifacts:
    """Artifacts in `<root>/<id>/`, as the pipeline keeps them."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def directory(self, build_id: int) -> Path | None:
        """The build's artifact directory if it exists."""
        path = self.root / str(build_id)
        return path if path.exists() else None


class FixedProbe:
    """A readiness probe that reports the checks it was given."""

    def __init__(self, *checks: ReadinessCheck) -> None:
        self.checks = list(checks)

    async def check(self) -> list[ReadinessCheck]:
        """Return the configured checks."""
        return self.checks


def _conforms(
    store: WebStore, logs: DirLogs, artifacts: DirArtifacts, probe: FixedProbe
) -> tuple[BuildBrowser, BuildControl, BuildLogSource, ArtifactSource, ReadinessProbe]:
    # mypy checks here that the fakes implement the protocols.
    return store, store, logs, artifacts, probe

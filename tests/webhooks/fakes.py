"""In-memory stand-ins for the job store, implementing `BuildSink` and `BuildCatalog`.

No I/O: builds live in a dict for the lifetime of one test. Deduplication follows
the `BuildSink.submit` contract, so app tests can observe 202 versus duplicate 200.
"""

from __future__ import annotations

from datetime import UTC, datetime

from webhooks.build import (
    BuildCatalog,
    BuildRecord,
    BuildRequest,
    BuildSink,
    BuildState,
    RefKind,
    Submission,
)


class MemoryStore:
    """A job store in a dict: stores, deduplicates and returns build requests."""

    def __init__(self) -> None:
        self.records: dict[int, BuildRecord] = {}

    def _repeat_of(self, request: BuildRequest) -> BuildRecord | None:
        for record in self.records.values():
            stored = record.request
            if stored.delivery_id == request.delivery_id:
                return record
            same_commit = (stored.forge, stored.repo, stored.commit_sha) == (
                request.forge,
                request.repo,
                request.commit_sha,
            )
            if not same_commit or record.state is BuildState.CANCELLED:
                continue
            both_tags = stored.kind is RefKind.TAG and request.kind is RefKind.TAG
            neither_tag = RefKind.TAG not in (stored.kind, request.kind)
            if (both_tags and stored.ref == request.ref) or neither_tag:
                return record
        return None

    async def submit(self, request: BuildRequest) -> Submission:
        """Store `request` unless it repeats a stored one; return its build."""
        repeat = self._repeat_of(request)
        if repeat is not None:
            return Submission(repeat.id, created=False)
        build_id = len(self.records) + 1
        self.records[build_id] = BuildRecord(
            id=build_id,
            request=request,
            state=BuildState.QUEUED,
            created_at=datetime(2026, 1, 1, tzinfo=UTC),
        )
        return Submission(build_id, created=True)

    async def get(self, build_id: int) -> BuildRecord | None:
        """Return the stored build, or None."""
        return self.records.get(build_id)


class BrokenStore:
    """A job store whose disk is gone: every call raises `OSError`."""

    def __init__(self) -> None:
        self.calls = 0

    async def submit(self, request: BuildRequest) -> Submission:
        """Fail to store `request`."""
        self.calls += 1
        raise OSError(28, "No space left on device")

    async def get(self, build_id: int) -> BuildRecord | None:
        """Fail to read any build."""
        self.calls += 1
        raise OSError(5, "Input/output error")


def _conforms(store: MemoryStore | BrokenStore) -> tuple[BuildSink, BuildCatalog]:
    # mypy checks here that both fakes implement both protocols.
    return store, store

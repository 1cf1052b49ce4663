"""The job store: the `JobStore` contract, and `open_store`, which opens one from a URL.

Pure except for what the chosen store does once opened: `open_store` only parses the
URL. Raw SQL lives only in this package:

- `__init__.py`: `JobStore` (the protocol every store implements) and `open_store`.
- `sqlite.py`: `SQLiteStore`, the store in one SQLite file for a single host (I/O shell).
- `ops.py`: the SQLite store's operations, plain functions of a connection.
- `deliveries.py`: what a delivery becomes (a new build, or the one it repeats: every
  delivery keeps its answer, per forge, while that build is kept) and what it supersedes.
- `lines.py`: which push is the newest on a branch or pull request. The rule, in
  short: a push comes after the builds it chains back to through `previous_sha` (so a
  force-push back to an earlier commit wins), before a build pushed from its own commit
  that it does not chain back to (its delivery was late), and otherwise in arrival
  order; the newest push's build runs, the line's other queued and running builds are
  cancelled.
- `releases.py`: the SQLite store's release records (publishing progress, results).
- `schema.py`: the SQLite schema, its migrations, and row ↔ value conversion.
- `boottests.py`: the SQLite store's boot test results (one row per boot of an ISO).
- `writer.py`: group commits on the event loop, the fsync and checkpoints on threads.

A PostgreSQL store for several hosts will sit beside `sqlite.py` and implement the
same `JobStore` protocol.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self
from urllib.parse import urlsplit

from runner.exceptions import StoreError
from runner.jobs import DEFAULT_QUEUE, Event, Notification, NotifyFn, Outgoing, QueuePolicy
from runner.store.sqlite import SQLiteStore
from webhooks.build import (
    BootTestRecord,
    BuildRecord,
    BuildRequest,
    BuildState,
    PackageEntry,
    Release,
    ReleaseState,
    Submission,
)

__all__ = ["JobStore", "SQLiteStore", "open_store"]


class JobStore(Protocol):
    """Durable, deduplicated builds and the forge notification outbox.

    A `webhooks.build.BuildSink` and `BuildCatalog` for the web app, plus what the
    worker needs. Every write is durable when it returns. Every state change goes
    through `runner.jobs.transition`, and the status hook the store was opened with
    (`open_store(url, notify=...)`) enqueues its notifications in the same transaction
    as every new build and every state change, so no change can skip its status.

    Releases: enqueuing a `runner.jobs.RELEASE` notification (payload `{"tag": ...}`;
    the status hook does it with a trusted tag build's SUCCEED) also creates the
    build's release record (`Release`, state `queued`) in the same transaction. Every
    `BuildRecord` the store returns carries its release record, if any.
    `update_release` records each attempt together with the outbox's part of it;
    `prune_finished` deletes release records with their builds.

    Outbox order: notifications of one build and one kind are delivered in the order
    they were enqueued (`due_notifications` returns only the oldest of each build and
    kind); different kinds do not wait for each other.
    """

    async def open(self) -> None:
        """Create the schema if needed and get ready to serve; idempotent."""
        ...

    async def aclose(self) -> None:
        """Finish pending writes and release every connection and thread."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def submit(self, request: BuildRequest) -> Submission:
        """Store `request` unless it repeats a stored build; return once durable."""
        ...

    async def get(self, build_id: int) -> BuildRecord | None:
        """Return the build with this id, or None."""
        ...

    async def list_builds(
        self,
        *,
        repo: str | None = None,
        state: BuildState | None = None,
        limit: int = 50,
        before_id: int | None = None,
    ) -> list[BuildRecord]:
        """Return builds newest first, below `before_id` when given."""
        ...

    async def count_by_state(self) -> dict[BuildState, int]:
        """Return how many builds are in each state, every state present."""
        ...

    async def claim_next(self) -> BuildRecord | None:
        """Atomically move the next queued build to running and return it.

        Next is the oldest trusted build, else the oldest untrusted one within the
        caps of the store's `runner.jobs.QueuePolicy`; None when none may run.
        """
        ...

    async def finish(self, build_id: int, event: Event, detail: str = "") -> BuildRecord:
        """Apply `event` to the build through the lifecycle table."""
        ...

    async def set_detail(self, build_id: int, detail: str) -> None:
        """Replace the build's detail note."""
        ...

    async def save_boot_tests(self, build_id: int, tests: Sequence[BootTestRecord]) -> None:
        """Store the build's boot test results (QEMU), replacing earlier ones."""
        ...

    async def boot_tests(self, build_id: int) -> list[BootTestRecord]:
        """Return the build's boot test results in the order they ran."""
        ...

    async def set_packages(self, build_id: int, packages: Sequence[PackageEntry]) -> None:
        """Record the packages a build installs; `get` returns them with the build."""
        ...

    async def cancel(self, build_id: int, detail: str) -> BuildRecord:
        """Cancel a queued or running build."""
        ...

    async def submit_superseding(self, request: BuildRequest) -> tuple[Submission, list[int]]:
        """`submit`, then `supersede` if that made a new build, in one transaction.

        Returns the submission and the ids `supersede` cancelled. One durable write
        per delivery instead of two, and no crash can fall between the two.
        """
        ...

    async def supersede(self, request: BuildRequest) -> list[int]:
        """Cancel older queued or running builds of the same branch or pull request.

        Or cancel the request's own build instead, when a build of a later push on
        that line is already stored (its delivery arrived late). Returns the ids.
        """
        ...

    async def recover_running(self, requeue: bool) -> list[BuildRecord]:
        """Re-queue, or end as errored, every build left running by a dead process."""
        ...

    async def retry(self, build_id: int) -> Submission:
        """Queue a new build of a finished build's request."""
        ...

    async def prune_finished(self, before: datetime) -> list[int]:
        """Delete finished builds that ended before `before`; return their ids.

        Queued and running builds, and builds with notifications still in the
        outbox, are never deleted.
        """
        ...

    async def enqueue_notification(
        self, build_id: int, kind: str, payload: Mapping[str, object]
    ) -> int:
        """Add a notification to the outbox, due now; return its id."""
        ...

    async def due_notifications(
        self, now: datetime, limit: int, *, kinds: Sequence[str] | None = None
    ) -> list[Notification]:
        """Return due notifications, earliest first, only the oldest of each build and kind.

        Only kinds in `kinds` when given; every kind when None.
        """
        ...

    async def notification_done(self, notification_id: int) -> None:
        """Remove a delivered notification."""
        ...

    async def notification_failed(
        self, notification_id: int, retry_at: datetime, error: str
    ) -> None:
        """Record a failed delivery and when to try again."""
        ...

    async def update_release(
        self,
        notification_id: int,
        build_id: int,
        release: Release,
        *,
        follow_up: Sequence[Outgoing] = (),
    ) -> None:
        """Record a release attempt's progress or outcome, all in one transaction.

        Replaces the build's release record with `release`. A final release (published
        or refused) removes its notification from the outbox; a `retrying` one gives
        the notification its `attempts`, `next_attempt_at` and `last_error`; any other
        state leaves the notification as it is. `follow_up` notifications (the commit
        status saying so) are enqueued for the build.

        Raises:
            NotificationNotFound: The notification is not in the outbox.
        """
        ...

    async def count_releases_by_state(self) -> dict[ReleaseState, int]:
        """Return how many release records are in each state, every state present."""
        ...


def open_store(
    url: str, *, notify: NotifyFn | None = None, queue: QueuePolicy = DEFAULT_QUEUE
) -> JobStore:
    """Return the (not yet opened) job store that `url` names; use it with `async with`.

    Args:
        url: `sqlite:///absolute/path/to/isorunner.db` (the path must be absolute;
            `:memory:` is refused because a 202 promises durability).
        notify: The status hook: notifications to enqueue with every new build and
            every state change, in its transaction; None enqueues nothing.
        queue: Which queued build runs next: trusted first, untrusted ones capped.

    Returns:
        The store; `async with open_store(url) as store:` opens and closes it.

    Raises:
        StoreError: The URL's scheme is unknown or not supported yet, or its path is
            not an absolute file path.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in ("postgresql", "postgres"):
        msg = (
            "storage.database: PostgreSQL is not supported yet; use"
            " sqlite:///var/lib/isorunner/isorunner.db"
        )
        raise StoreError(msg)
    if scheme != "sqlite":
        msg = (
            f"storage.database: unknown scheme {scheme!r}; use"
            " sqlite:///absolute/path/to/isorunner.db"
        )
        raise StoreError(msg)
    # `sqlite:///var/lib/x.db` names /var/lib/x.db: an empty host, then the absolute
    # path. SQLAlchemy's four-slash spelling of the same path is accepted too.
    raw = parts.path
    name = raw.lstrip("/")
    if parts.netloc or not raw.startswith("/") or name in ("", ":memory:") or parts.query:
        msg = (
            f"storage.database: {url!r} is not an absolute SQLite file path; write it as"
            " sqlite:///absolute/path/to/isorunner.db (':memory:' is not allowed: builds"
            " must survive a restart)"
        )
        raise StoreError(msg)
    return SQLiteStore(Path("/" + name), notify=notify, queue=queue)

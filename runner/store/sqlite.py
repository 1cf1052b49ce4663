"""`SQLiteStore`: the job store in one SQLite file, for a single host.

I/O shell: opens the database file and runs `runner.store.ops` and `deliveries` through
`runner.store.writer`, which commits the writes queued in one turn of the event loop
as one group and acknowledges them after one fsync of the write-ahead log on its own
thread; reads run on a small pool of reader threads and connections, which WAL mode
lets run beside the writer. Once `submit` returns, the build survives a power cut,
which is what the 202 to the forge promises.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Final, Self, TypeVar

from runner.exceptions import StoreError
from runner.jobs import DEFAULT_QUEUE, Event, Notification, NotifyFn, Outgoing, QueuePolicy
from runner.store import boottests, deliveries, ops, releases
from runner.store.schema import encode_time, migrate
from runner.store.writer import Writer
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

READERS: Final = 2
"""Reader connections (and threads); reads are short, so two cover a 2-core host."""

BUSY_TIMEOUT_MS: Final = 5000
WRITER_BUSY_TIMEOUT_MS: Final = 250
PRUNE_BATCH: Final = 500
"""Builds deleted per write group by `prune_finished`."""

T = TypeVar("T")


def _utc_now() -> datetime:
    return datetime.now(UTC)


_FINAL_STATES: Final = tuple(state.value for state in BuildState if state.is_final)


def _prune_finished(conn: sqlite3.Connection, cutoff: str, limit: int) -> list[int]:
    # Text comparison is time order: `encode_time` writes fixed-width UTC. The state
    # test is explicit although `finished_at` is only set in final states, so a bug
    # elsewhere can never make retention delete a live build.
    marks = ", ".join("?" * len(_FINAL_STATES))
    query = (
        f"SELECT id FROM builds WHERE state IN ({marks}) AND finished_at IS NOT NULL"  # noqa: S608 -- placeholders only
        " AND finished_at < ? AND NOT EXISTS"
        " (SELECT 1 FROM notifications WHERE notifications.build_id = builds.id)"
        " ORDER BY id LIMIT ?"
    )
    ids = [int(row[0]) for row in conn.execute(query, (*_FINAL_STATES, cutoff, limit))]
    releases.forget(conn, ids)
    boottests.delete(conn, ids)
    pairs = [(build_id,) for build_id in ids]
    # A delivery keeps its answer as long as the build it was answered with is kept.
    conn.executemany("DELETE FROM deliveries WHERE build_id = ?", pairs)
    conn.executemany("DELETE FROM build_packages WHERE build_id = ?", pairs)
    conn.executemany("DELETE FROM builds WHERE id = ?", pairs)
    return ids


class SQLiteStore:
    """The job store in one SQLite file; use it as `async with SQLiteStore(path) as s`.

    Implements `webhooks.build.BuildSink`, `webhooks.build.BuildCatalog` and
    `runner.store.JobStore`.
    """

    def __init__(
        self,
        path: Path,
        *,
        clock: Callable[[], datetime] = _utc_now,
        notify: NotifyFn | None = None,
        queue: QueuePolicy = DEFAULT_QUEUE,
        prune_batch: int = PRUNE_BATCH,
    ) -> None:
        """Prepare a store for the file at `path`; nothing is opened until `open`.

        Args:
            path: The database file; its directory is created if missing.
            clock: Returns the current time, timezone-aware (tests pass a fake).
            notify: The status hook: the notifications to enqueue, in the same
                transaction, with every new build and every state change (e.g. the
                forge's commit status). None enqueues nothing.
            queue: Which queued build runs next (`runner.jobs.QueuePolicy`).
            prune_batch: Builds deleted per write group by `prune_finished`.
        """
        self.path = path
        self._clock = clock
        self._notify = notify
        self._queue = queue
        self._prune_batch = prune_batch
        self._writer: Writer | None = None
        self._readers: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._reader_conns: list[sqlite3.Connection] = []
        self._reader_lock = threading.Lock()

    # ------------------------------------------------------------ lifetime

    async def open(self) -> None:
        """Create the directory and schema if missing and start the writer.

        Raises:
            StoreError: The directory or file cannot be created or opened, or the
                schema is newer than this isorunner; the message says what to do.
        """
        if self._writer is not None:
            return
        conn = await asyncio.to_thread(self._connect, True)
        self._writer = Writer(conn, str(self.path))
        self._readers = ThreadPoolExecutor(READERS, thread_name_prefix="isorunner-store-read")
        try:
            await self._writer.run(lambda c: migrate(c, str(self.path)))
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        """Finish queued writes, stop the threads and close every connection."""
        writer, readers = self._writer, self._readers
        self._writer, self._readers = None, None
        if readers is not None:
            await asyncio.to_thread(readers.shutdown, wait=True)
        with self._reader_lock:
            conns, self._reader_conns = self._reader_conns, []
        for conn in conns:
            conn.close()
        self._local = threading.local()
        if writer is not None:
            await writer.aclose()

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # ------------------------------------------------------------ intake and catalog

    async def submit(self, request: BuildRequest) -> Submission:
        """Store `request` unless it repeats a stored build; return once durable.

        Deduplication follows `webhooks.build.BuildSink.submit`; a tag build is only
        a repeat of a non-cancelled tag build of the same tag and commit.
        """
        return await self._write(
            lambda c: deliveries.submit(c, self._clock(), request, self._notify, self._queue)
        )

    async def get(self, build_id: int) -> BuildRecord | None:
        """Return the build with this id, or None."""
        return await self._read(lambda c: ops.get(c, build_id))

    async def list_builds(
        self,
        *,
        repo: str | None = None,
        state: BuildState | None = None,
        limit: int = 50,
        before_id: int | None = None,
    ) -> list[BuildRecord]:
        """Return builds newest first; pass the last id seen as `before_id` for the next page.

        Raises:
            ValueError: `limit` is not between 1 and 1000.
        """
        if not 1 <= limit <= 1000:
            msg = f"limit must be between 1 and 1000, got {limit}"
            raise ValueError(msg)
        return await self._read(
            lambda c: ops.list_builds(c, repo=repo, state=state, limit=limit, before_id=before_id)
        )

    async def count_by_state(self) -> dict[BuildState, int]:
        """Return how many builds are in each state, every state present."""
        return await self._read(ops.count_by_state)

    # ------------------------------------------------------------ worker

    async def claim_next(self) -> BuildRecord | None:
        """Atomically move the oldest queued build to running and return it, or None."""
        return await self._write(
            lambda c: ops.claim_next(c, self._clock(), self._notify, self._queue)
        )

    async def finish(self, build_id: int, event: Event, detail: str = "") -> BuildRecord:
        """Apply `event` to the build through `runner.jobs.transition`; return the new record.

        Raises:
            BuildNotFound: No build has this id.
            IllegalTransition: The event is not allowed in the build's current state
                (e.g. the build was cancelled while it ran).
        """
        return await self._write(
            lambda c: ops.apply_event(
                c, self._clock(), build_id, event, detail=detail, notify=self._notify
            )
        )

    async def save_boot_tests(self, build_id: int, tests: Sequence[BootTestRecord]) -> None:
        """Store the boot test results of build `build_id`, replacing earlier ones.

        Raises:
            BuildNotFound: No such build.
        """
        await self._write(lambda c: boottests.save(c, build_id, tests))

    async def boot_tests(self, build_id: int) -> list[BootTestRecord]:
        """Return build `build_id`'s boot test results in the order they ran."""
        return await self._read(lambda c: boottests.load(c, build_id))

    async def set_detail(self, build_id: int, detail: str) -> None:
        """Replace the build's detail note (e.g. the sandbox's time-limit warning)."""
        await self._write(lambda c: ops.set_detail(c, build_id, detail))

    async def set_packages(self, build_id: int, packages: Sequence[PackageEntry]) -> None:
        """Record the packages a build installs (replacing any recorded before).

        Raises:
            BuildNotFound: No build has this id.
        """
        await self._write(lambda c: ops.set_packages(c, build_id, packages))

    async def cancel(self, build_id: int, detail: str) -> BuildRecord:
        """Cancel a queued or running build; return its new record.

        Raises:
            BuildNotFound: No build has this id.
            IllegalTransition: The build is already final.
        """
        return await self._write(
            lambda c: ops.apply_event(
                c, self._clock(), build_id, Event.CANCEL, detail=detail, notify=self._notify
            )
        )

    async def submit_superseding(self, request: BuildRequest) -> tuple[Submission, list[int]]:
        """`submit`, then `supersede` if that made a new build, in one transaction.

        Returns the submission and the cancelled ids (see `supersede`).
        """
        return await self._write(
            lambda c: deliveries.submit_superseding(
                c, self._clock(), request, self._notify, self._queue
            )
        )

    async def supersede(self, request: BuildRequest) -> list[int]:
        """Cancel older queued or running builds of the same branch or pull request.

        Returns the cancelled ids, running ones included so that the worker stops
        their sandboxes. Tags are never superseded.

        Raises:
            StoreError: `request` has not been submitted.
        """
        return await self._write(
            lambda c: deliveries.supersede(c, self._clock(), request, self._notify)
        )

    async def recover_running(self, requeue: bool) -> list[BuildRecord]:
        """At start-up, re-queue (or end as errored) every build left running."""
        return await self._write(
            lambda c: ops.recover_running(c, self._clock(), requeue, self._notify)
        )

    async def retry(self, build_id: int) -> Submission:
        """Queue a new build of a finished build's request.

        Raises:
            BuildNotFound: No build has this id.
            StoreError: The build is not final yet.
        """
        return await self._write(lambda c: ops.retry(c, self._clock(), build_id, self._notify))

    async def prune_finished(self, before: datetime) -> list[int]:
        """Delete finished builds that ended before `before`; return their ids, ascending.

        Queued and running builds, and builds with a notification still in the outbox
        (a status not delivered yet), are kept whatever their age.

        Raises:
            ValueError: `before` is naive.
        """
        cutoff = encode_time(before)
        pruned: list[int] = []
        # In batches: writes run on the event loop, and a first run after a long
        # pause may have many thousands of builds to delete.
        while True:
            batch = await self._write(lambda c: _prune_finished(c, cutoff, self._prune_batch))
            pruned.extend(batch)
            if len(batch) < self._prune_batch:
                return pruned

    # ------------------------------------------------------------ outbox

    async def enqueue_notification(
        self, build_id: int, kind: str, payload: Mapping[str, object]
    ) -> int:
        """Add a forge notification to the durable outbox, due now; return its id."""
        return await self._write(
            lambda c: ops.enqueue_notification(c, self._clock(), build_id, kind, payload)
        )

    async def due_notifications(
        self, now: datetime, limit: int, *, kinds: Sequence[str] | None = None
    ) -> list[Notification]:
        """Return notifications due at `now`, earliest first, one per build and kind.

        Only kinds in `kinds` when given (each kind has its own drainer).
        """
        return await self._read(lambda c: ops.due_notifications(c, now, limit, kinds))

    async def notification_done(self, notification_id: int) -> None:
        """Remove a delivered notification from the outbox."""
        await self._write(lambda c: ops.notification_done(c, notification_id))

    async def notification_failed(
        self, notification_id: int, retry_at: datetime, error: str
    ) -> None:
        """Record a failed delivery and when to retry; `error` must hold no secret."""
        await self._write(lambda c: ops.notification_failed(c, notification_id, retry_at, error))

    # ------------------------------------------------------------ releases

    async def update_release(
        self,
        notification_id: int,
        build_id: int,
        release: Release,
        *,
        follow_up: Sequence[Outgoing] = (),
    ) -> None:
        """Record a release attempt's progress or outcome, in one transaction.

        See `runner.store.releases.save` for what happens to the notification;
        `follow_up` (e.g. the commit status saying so) is enqueued for the build.

        Raises:
            NotificationNotFound: The notification is no longer in the outbox.
        """

        def write(conn: sqlite3.Connection) -> None:
            now = self._clock()
            releases.save(conn, notification_id, build_id, release)
            for kind, payload in follow_up:
                ops.enqueue_notification(conn, now, build_id, kind, payload)

        await self._write(write)

    async def count_releases_by_state(self) -> dict[ReleaseState, int]:
        """Return how many release records are in each state, every state present."""
        return await self._read(releases.count_by_state)

    # ------------------------------------------------------------ plumbing

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._writer is None:
            raise self._not_open()
        return await self._writer.run(fn)

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        readers = self._readers
        if readers is None:
            raise self._not_open()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(readers, self._run_read, fn)

    def _run_read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect(False)
            self._local.conn = conn
            with self._reader_lock:
                self._reader_conns.append(conn)
        try:
            return fn(conn)
        except sqlite3.Error as exc:
            msg = (
                f"the job database {self.path} could not be read ({exc}): check that the"
                " file exists and is readable"
            )
            raise StoreError(msg) from exc

    def _not_open(self) -> StoreError:
        return StoreError(
            f"the job store {self.path} is not open: use `async with` or await open() first"
        )

    def _connect(self, writer: bool) -> sqlite3.Connection:
        """Open one connection with the store's pragmas (blocking; runs on a thread)."""
        if writer:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                msg = (
                    f"cannot create the directory {self.path.parent} for the job database"
                    f" ({exc.strerror}): create it, or give the service write access to"
                    " it, or set storage.database to a writable path"
                )
                raise StoreError(msg) from exc
        try:
            conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=5.0
            )
        except sqlite3.Error as exc:
            msg = (
                f"cannot open the job database {self.path} ({exc}): check that its"
                " directory is writable by the service"
            )
            raise StoreError(msg) from exc
        try:
            # The writer runs on the event loop: if another process holds the write
            # lock, fail the group quickly (the forge sees 503) rather than stall
            # every request for seconds. Nothing in this process competes for it.
            timeout = WRITER_BUSY_TIMEOUT_MS if writer else BUSY_TIMEOUT_MS
            conn.execute(f"PRAGMA busy_timeout = {timeout:d}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0] if writer else "wal"
            # The writer commits with NORMAL and makes each group durable itself with
            # one fsync of the log before acknowledging it, and checkpoints on a
            # thread of its own (`runner.store.writer`).
            conn.execute("PRAGMA synchronous = NORMAL")
            if writer:
                conn.execute("PRAGMA wal_autocheckpoint = 0")
            conn.execute("PRAGMA foreign_keys = ON")
            if not writer:
                conn.execute("PRAGMA query_only = ON")
        except sqlite3.Error as exc:
            conn.close()
            msg = (
                f"cannot use the job database {self.path} ({exc}): is it an SQLite file"
                " written by isorunner? Move it aside or set storage.database"
            )
            raise StoreError(msg) from exc
        if str(mode).lower() != "wal":
            conn.close()
            msg = (
                f"the job database {self.path} cannot use WAL mode (got {mode}):"
                " put it on a local file system"
            )
            raise StoreError(msg)
        return conn

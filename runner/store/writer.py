"""The job store's writer: group commits on the event loop, the fsync on a thread.

Every write is a function of a `sqlite3.Connection`. `Writer.run` queues one and awaits
its result. The writes queued during one turn of the event loop run on the loop's
thread in ONE transaction (each inside its own savepoint when one of them raises, so a
write that raises is undone alone) and are committed together. A caller learns the
result only once the commit is on disk.

Why the fsync is separate: the connection runs with `synchronous=NORMAL`, so a commit
only appends the group's pages to the write-ahead log through the page cache (tens
of microseconds, no waiting on the disk). Durability comes from one `fsync` of the
log file on the sync thread, which covers every group committed before it started;
groups committed while it runs wait for the next one. That is exactly what
`synchronous=FULL` guarantees (the log is on disk before a commit is acknowledged),
with one fsync per burst of deliveries instead of one per transaction, and without
the event loop and a writer thread taking turns at the GIL for every SQL statement,
which had cost more than the SQL itself. Checkpoints (copying the log into the
database file) run on a thread and connection of their own, at most once a second
while writes come in (what they leave is copied by the next one, or at close), so
the loop never waits for one and acknowledgements only for a short pass once the log
has reached `WAL_LIMIT`; with `synchronous=NORMAL` SQLite syncs the log before and
the database after each checkpoint, and the first commit after it starts the log
over syncs the log's new header (on the loop: a few milliseconds, once per restart).

Visible before durable: another connection can read a committed group before its
fsync completes (for well under a millisecond). Nothing acts on that: every write
that depends on it, such as a worker claiming the build, is acknowledged only after
a later fsync that covers both.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import structlog

from runner.exceptions import StoreError

CHECKPOINT_EVERY: Final = 1.0
"""Seconds between checkpoints while writes keep coming (SQLite's default is every
1,000 log pages, a few hundred deliveries; here a busy second is a few thousand)."""

WAL_LIMIT: Final = 256 * 1024 * 1024
"""Bytes of log file past which a checkpoint ends with a pass that holds commits.

Checkpoints that run beside new commits may never catch up with them, and SQLite
only starts the log over after one that did: under sustained load the log grew
without end (~70 MB/s in the intake benchmark). Past this size, the next checkpoint
(at most `CHECKPOINT_EVERY` later) is followed by a pass with commits held
(requests are still read, and wait) that copies what came in meanwhile, so the next
commit starts the log over. The file keeps its size for reuse (SQLite removes it
when the store closes): cutting it back with `journal_size_limit` made that commit
take 100 ms on the event loop while ext4 freed the blocks."""

_FRAME_HEADER: Final = 24
"""Bytes before each page in the log file (https://sqlite.org/fileformat.html#walformat)."""

_log = structlog.get_logger()

T = TypeVar("T")


@dataclass(slots=True)
class _Write:
    fn: Callable[[sqlite3.Connection], object]
    future: asyncio.Future[Any]


class _IsolateWrites(Exception):
    """A write raised in a group run without savepoints: run it again with them."""


_Outcome = tuple["asyncio.Future[Any]", object, BaseException | None]


def checkpoint_connection(path: str) -> sqlite3.Connection:
    """Open the connection checkpoints run on (on the checkpoint thread)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous = NORMAL")
    return conn


def passive_checkpoint(conn: sqlite3.Connection) -> int:
    """Copy the log into the database file without waiting; return the log's frames."""
    _busy, frames, _copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    return int(frames)


class Writer:
    """Owns the write connection; commits on its event loop, syncs on its own thread."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        path: str,
        *,
        checkpoint_every: float = CHECKPOINT_EVERY,
        wal_limit: int = WAL_LIMIT,
        fsync: Callable[[int], None] = os.fsync,
        connect: Callable[[str], sqlite3.Connection] = checkpoint_connection,
        checkpoint: Callable[[sqlite3.Connection], int] = passive_checkpoint,
    ) -> None:
        """Take ownership of `conn` (autocommit mode, `synchronous=NORMAL`).

        `path` is the database file: it names the store in errors, and its `-wal`
        file is what the sync thread flushes. The writer belongs to the event loop
        of its first `run`; calls from another loop are handed over to it.

        The keyword arguments replace the defaults (tests): `checkpoint_every` and
        `wal_limit` (see `CHECKPOINT_EVERY`, `WAL_LIMIT`); `fsync`, which makes the
        log durable on the sync thread; `connect`, which opens the checkpoint
        thread's connection; and `checkpoint`, one checkpoint pass on it.
        """
        self._conn = conn
        self._path = path
        self._checkpoint_every = checkpoint_every
        self._wal_limit = wal_limit
        self._os_fsync = fsync
        self._connect = connect
        self._checkpoint_pass = checkpoint
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: list[_Write] = []
        self._flush_scheduled = False
        self._checkpointing = False  # a checkpoint is under way on its thread
        self._holding = False  # commits wait for that checkpoint (WAL_LIMIT)
        self._committed: list[_Outcome] = []  # committed, waiting for the next fsync
        self._sync: asyncio.Future[None] | None = None
        self._syncer = ThreadPoolExecutor(1, thread_name_prefix="isorunner-store-sync")
        self._checkpointer = ThreadPoolExecutor(1, thread_name_prefix="isorunner-store-checkpoint")
        self._checkpoint_conn: sqlite3.Connection | None = None
        self._frame_bytes = 0  # page size + frame header, read once with that connection
        self._last_checkpoint = time.monotonic()
        self._dirty_since_checkpoint = False
        self._closed = False
        self._idle = asyncio.Event()
        self._idle.set()

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` in the next group transaction; return its result once durable.

        Raises:
            StoreError: The store is closed, or SQLite failed (the message says how).
            Exception: Whatever `fn` raised; its changes are rolled back.
        """
        if self._closed:
            msg = f"the job store {self._path} is closed; open it again to write"
            raise StoreError(msg)
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif loop is not self._loop:
            handed = asyncio.run_coroutine_threadsafe(self.run(fn), self._loop)
            return await asyncio.wrap_future(handed)
        future: asyncio.Future[T] = loop.create_future()
        self._pending.append(_Write(fn, future))
        self._idle.clear()
        self._schedule_flush()
        # If this caller is cancelled, the future is cancelled but the write goes on:
        # it is queued, and its result is dropped when it is done.
        return await future

    async def aclose(self) -> None:
        """Finish the writes already queued, wait for their fsync, close the connections."""
        if self._closed:
            return
        self._closed = True
        if self._loop is not None:
            await self._idle.wait()
        await asyncio.to_thread(self._stop_threads)
        await asyncio.to_thread(self._conn.close)

    # ------------------------------------------------------------ on the event loop

    def _schedule_flush(self) -> None:
        if self._flush_scheduled or self._holding or not self._pending:
            return
        assert self._loop is not None  # set by the first run()
        self._flush_scheduled = True
        self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._holding:  # scheduled before the hold began; the release reschedules
            return
        group, self._pending = self._pending, []
        outcomes: list[tuple[object, BaseException | None]]
        try:
            try:
                outcomes = self._transaction(group, isolate=False)
            except _IsolateWrites:
                outcomes = self._transaction(group, isolate=True)
        except sqlite3.Error as exc:
            failure = self._translate(exc)
            self._rollback()
            # Nothing of this group was committed: tell its callers now.
            _settle_all([(w.future, None, failure) for w in group])
            self._check_idle()
            return
        self._committed.extend(
            (write.future, value, error)
            for write, (value, error) in zip(group, outcomes, strict=True)
        )
        self._start_sync()

    def _start_sync(self) -> None:
        if self._sync is not None or not self._committed:
            return
        assert self._loop is not None  # set by the first run()
        covered, self._committed = self._committed, []
        self._sync = self._loop.run_in_executor(self._syncer, self._fsync)
        self._sync.add_done_callback(lambda done: self._synced(done, covered))

    def _synced(self, done: asyncio.Future[None], covered: list[_Outcome]) -> None:
        self._sync = None
        error = done.exception()
        if error is not None:
            failure = StoreError(
                f"the job database {self._path} could not be flushed to disk ({error}):"
                " check the disk and the kernel log"
            )
            failure.__cause__ = error
            covered = [(future, None, failure) for future, _, _ in covered]
        _settle_all(covered)
        if error is None:
            self._maybe_checkpoint()
        self._start_sync()
        self._check_idle()

    def _maybe_checkpoint(self) -> None:
        """Start a checkpoint on its thread if one is due (see `CHECKPOINT_EVERY`).

        It runs while commits go on. When it finds the log at `WAL_LIMIT` or more, a
        second pass follows at once with commits held: it only has to copy what
        they added during the first, and then the next commit starts the log over.
        """
        if self._checkpointing or time.monotonic() - self._last_checkpoint < self._checkpoint_every:
            return
        assert self._loop is not None  # set by the first run()
        self._checkpointing = True
        self._last_checkpoint = time.monotonic()
        first = self._loop.run_in_executor(self._checkpointer, self._checkpoint)
        first.add_done_callback(self._after_first_pass)

    def _after_first_pass(self, first: asyncio.Future[int]) -> None:
        assert self._loop is not None  # set by the first run()
        try:
            log_bytes = self._report_crash(first)
            if log_bytes >= self._wal_limit:
                _log.info("store_log_full_checkpoint", database=self._path, log_bytes=log_bytes)
                self._holding = True
                second = self._loop.run_in_executor(self._checkpointer, self._checkpoint)
                second.add_done_callback(self._checkpoint_done)
                return
        # Logged, not silent; a callback that raised would leave commits held for good.
        except Exception:  # noqa: BLE001
            _log.exception("store_checkpoint_crashed", database=self._path)
        self._end_checkpoint()

    def _checkpoint_done(self, second: asyncio.Future[int]) -> None:
        self._report_crash(second)
        self._end_checkpoint()

    def _end_checkpoint(self) -> None:
        self._holding = self._checkpointing = False
        self._schedule_flush()
        self._check_idle()

    def _report_crash(self, done: asyncio.Future[int]) -> int:
        """Return the pass's result (the log's size); log a crash (size 0) and go on."""
        # _checkpoint logs its own SQLite failures; anything else is a bug worth a
        # line, and commits must go on either way.
        error = None if done.cancelled() else done.exception()
        if error is not None:
            _log.error("store_checkpoint_crashed", database=self._path, error=str(error))
        return 0 if error is not None or done.cancelled() else done.result()

    def _check_idle(self) -> None:
        busy = self._pending or self._committed or self._checkpointing or self._sync is not None
        if not busy:
            self._idle.set()

    def _transaction(
        self, group: list[_Write], *, isolate: bool
    ) -> list[tuple[object, BaseException | None]]:
        """Run the group in one transaction and commit it (without waiting for the disk).

        Writes rarely raise, so the first attempt runs them back to back. If one
        raises, that attempt is rolled back and the group runs again with each write
        in its own savepoint, so that only the failing write is undone. Write
        functions are plain functions of the database, so running one again after a
        rollback does the same thing.
        """
        conn = self._conn
        outcomes: list[tuple[object, BaseException | None]] = []
        conn.execute("BEGIN IMMEDIATE")
        for write in group:
            if isolate:
                conn.execute("SAVEPOINT write")
            try:
                value = write.fn(conn)
            # Not silent: the exception goes to the caller that asked for this write
            # (or, in the first attempt, triggers the isolated second attempt).
            except Exception as exc:
                if not isolate:
                    self._rollback()
                    raise _IsolateWrites from exc
                conn.execute("ROLLBACK TO write")
                conn.execute("RELEASE write")
                outcomes.append((None, self._translate(exc)))
            else:
                if isolate:
                    conn.execute("RELEASE write")
                outcomes.append((value, None))
        conn.execute("COMMIT")
        return outcomes

    def _rollback(self) -> None:
        if not self._conn.in_transaction:
            return
        try:
            self._conn.execute("ROLLBACK")
        except sqlite3.Error as exc:
            # The group has already failed and its callers are told; the next group
            # starts with BEGIN, which reports a connection that stays broken.
            _log.error("store_rollback_failed", database=self._path, error=str(exc))

    def _translate(self, exc: BaseException) -> BaseException:
        if not isinstance(exc, sqlite3.Error):
            return exc
        advice = (
            "this is a bug in isorunner: please report it with this message"
            if isinstance(exc, sqlite3.IntegrityError)
            else "check that the disk is not full and that the file and its directory are writable"
        )
        error = StoreError(f"the job database {self._path} refused a write ({exc}): {advice}")
        error.__cause__ = exc
        return error

    # ------------------------------------------------------------ on the sync thread

    def _fsync(self) -> None:
        """Make every commit so far durable."""
        try:
            fd = os.open(self._path + "-wal", os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            # No log: SQLite removes it only after copying all of it into the
            # database file, so that file holds every commit.
            fd = os.open(self._path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            self._os_fsync(fd)
        finally:
            os.close(fd)
        self._dirty_since_checkpoint = True

    # ------------------------------------------------------------ on the checkpoint thread

    def _checkpoint(self) -> int:
        """Copy the log into the database file, as far as it can without waiting.

        Returns the size of the log (bytes of frames since SQLite last started it
        over), or 0 when the checkpoint failed. On a thread of its own: it writes
        and syncs that file for tens of milliseconds, and acknowledgements must not
        queue behind it.
        """
        self._dirty_since_checkpoint = False
        try:
            conn = self._checkpoint_conn
            if conn is None:
                conn = self._connect(self._path)
                page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
                self._frame_bytes = page_size + _FRAME_HEADER
                self._checkpoint_conn = conn
            frames = self._checkpoint_pass(conn)
        except sqlite3.Error as exc:
            # Not fatal: the commits are durable in the log; the next one tries again.
            _log.warning("store_checkpoint_failed", database=self._path, error=str(exc))
            return 0
        return max(int(frames), 0) * self._frame_bytes

    def _stop_threads(self) -> None:
        self._syncer.shutdown(wait=True)
        self._checkpointer.submit(self._close_checkpointer).result()
        self._checkpointer.shutdown(wait=True)

    def _close_checkpointer(self) -> None:
        if self._dirty_since_checkpoint:
            self._checkpoint()
        if self._checkpoint_conn is not None:
            self._checkpoint_conn.close()
            self._checkpoint_conn = None


def _settle_all(settled: list[_Outcome]) -> None:
    for future, value, error in settled:
        if future.done():  # its caller stopped waiting; the write happened anyway
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)

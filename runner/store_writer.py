"""The job store's single writer thread, committing waiting writes together.

Does blocking I/O on its own thread only; the event loop never waits on SQLite. Every
write is a function of a `sqlite3.Connection`. `Writer.run` hands one to the thread and
awaits its result. The thread takes every write waiting at that moment, runs them in
ONE transaction (each inside its own savepoint, so a write that raises is undone alone)
and commits once: with `synchronous=FULL` that is one fsync for the whole group, which
is what lets many concurrent deliveries be acknowledged quickly. Each caller's future
is resolved only after the commit, through `loop.call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import structlog

from runner.exceptions import StoreError

MAX_GROUP: Final = 256
"""The most writes committed in one transaction, to bound the latency of the first."""

_log = structlog.get_logger()

T = TypeVar("T")


@dataclass(slots=True)
class _Write:
    fn: Callable[[sqlite3.Connection], object]
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop


_STOP: Final = object()


class _IsolateWrites(Exception):
    """A write raised in a group run without savepoints: run it again with them."""


_Outcome = tuple["asyncio.Future[Any]", object, BaseException | None]


class Writer:
    """Owns the write connection and the thread that uses it."""

    def __init__(self, conn: sqlite3.Connection, path: str) -> None:
        """Take ownership of `conn` (autocommit mode); `path` names it in errors."""
        self._conn = conn
        self._path = path
        self._queue: queue.SimpleQueue[_Write | object] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="isorunner-store-writer")
        self._closed = False
        self._thread.start()

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` in the next group transaction; return its result once committed.

        Raises:
            StoreError: The store is closed, or SQLite failed (the message says how).
            Exception: Whatever `fn` raised; its changes are rolled back.
        """
        if self._closed:
            msg = f"the job store {self._path} is closed; open it again to write"
            raise StoreError(msg)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put(_Write(fn, future, loop))
        # If this caller is cancelled, the future is cancelled but the write goes on:
        # the thread owns it now, and skips the result when it is done.
        return await future

    async def aclose(self) -> None:
        """Finish the writes already queued, stop the thread and close the connection."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        await asyncio.to_thread(self._thread.join)
        self._conn.close()

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            group = [first]
            stopping = False
            while len(group) < MAX_GROUP:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stopping = True
                    break
                group.append(item)
            self._commit([w for w in group if isinstance(w, _Write)])
            if stopping:
                return

    def _commit(self, group: list[_Write]) -> None:
        outcomes: list[tuple[object, BaseException | None]]
        try:
            try:
                outcomes = self._transaction(group, isolate=False)
            except _IsolateWrites:
                outcomes = self._transaction(group, isolate=True)
        except sqlite3.Error as exc:
            failure = self._translate(exc)
            outcomes = [(None, failure)] * len(group)
            self._rollback()
        # One wake-up per event loop for the whole group, not one per write: each
        # call_soon_threadsafe writes to the loop's self-pipe.
        by_loop: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
        for write, (value, error) in zip(group, outcomes, strict=True):
            by_loop.setdefault(write.loop, []).append((write.future, value, error))
        for loop, settled in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle_all, settled)
            except RuntimeError:
                # The callers' event loop is closed: nobody is left to tell. The
                # writes themselves are committed (or rolled back) all the same.
                _log.warning("store_write_caller_gone", database=self._path)

    def _transaction(
        self, group: list[_Write], *, isolate: bool
    ) -> list[tuple[object, BaseException | None]]:
        """Run the group in one transaction and commit it.

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


def _settle_all(settled: list[_Outcome]) -> None:
    for future, value, error in settled:
        if future.done():  # its caller stopped waiting; the write happened anyway
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)

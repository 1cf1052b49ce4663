"""Tests of the job store's writer: group commits on the loop, fsync on a thread."""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from runner.exceptions import StoreError
from runner.store.writer import Writer, passive_checkpoint

pytestmark = pytest.mark.anyio


def _open(path: Path, *, wal: bool = True) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    if wal:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA wal_autocheckpoint = 0")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("CREATE TABLE t (v INTEGER UNIQUE)")
    return conn


@pytest.fixture
def path(tmp_path: Path) -> Path:
    """The database file of the test's writer."""
    return tmp_path / "w.db"


@pytest.fixture
def statements() -> list[str]:
    """Every SQL statement the writer's connection runs, in order."""
    return []


class FsyncGate:
    """Stands in for `os.fsync` (given to the writer): counts calls, holds them while closed."""

    def __init__(self) -> None:
        self._fsync = os.fsync
        self.calls = 0
        self.entered = threading.Event()
        self.opened = threading.Event()
        self.opened.set()
        self.error: OSError | None = None

    def __call__(self, fd: int) -> None:
        self.calls += 1
        self.entered.set()
        assert self.opened.wait(timeout=10), "the test never opened the fsync gate"
        if self.error is not None:
            raise self.error
        self._fsync(fd)


@pytest.fixture
def fsync() -> Iterator[FsyncGate]:
    """An open `FsyncGate`, the fsync of the test's writers."""
    gate = FsyncGate()
    yield gate
    gate.opened.set()  # never leave the sync thread waiting


MakeWriter = Callable[..., Writer]


@pytest.fixture
async def make_writer(
    path: Path, statements: list[str], fsync: FsyncGate
) -> AsyncIterator[MakeWriter]:
    """Makes a writer on a fresh WAL file with one table `t(v INTEGER UNIQUE)`.

    Its keyword arguments go to `Writer`; the fsync is `fsync`'s gate unless given.
    Every writer made is closed after the test.
    """
    made: list[Writer] = []

    def make(**options: Any) -> Writer:
        conn = _open(path)
        conn.set_trace_callback(statements.append)
        made.append(Writer(conn, str(path), **{"fsync": fsync, **options}))
        return made[-1]

    yield make
    for writer in made:
        await writer.aclose()


@pytest.fixture
def writer(make_writer: MakeWriter) -> Writer:
    """A writer on a fresh WAL file with one table `t(v INTEGER UNIQUE)`."""
    return make_writer()


def _insert(value: int) -> Callable[[sqlite3.Connection], int]:
    def write(conn: sqlite3.Connection) -> int:
        conn.execute("INSERT INTO t (v) VALUES (?)", (value,))
        return value

    return write


def _values(conn: sqlite3.Connection) -> list[int]:
    return [row[0] for row in conn.execute("SELECT v FROM t ORDER BY v")]


def _read_values(path: Path) -> list[int]:
    """What another connection sees (committed data, durable or not)."""
    conn = sqlite3.connect(path)
    try:
        return _values(conn)
    finally:
        conn.close()


async def _group(
    writer: Writer, writes: list[Callable[[sqlite3.Connection], int]]
) -> list[int | BaseException]:
    """Queue `writes` in one turn of the loop, so they commit as one group."""
    return list(await asyncio.gather(*(writer.run(w) for w in writes), return_exceptions=True))


async def test_writer_commits_a_group_in_one_transaction(
    writer: Writer, statements: list[str]
) -> None:
    """Writes queued in one turn of the loop share one transaction; each gets its result."""
    results = await _group(writer, [_insert(v) for v in (1, 2, 3)])
    assert results == [1, 2, 3]
    assert statements.count("BEGIN IMMEDIATE") == 1
    assert statements.count("COMMIT") == 1
    assert await writer.run(_values) == [1, 2, 3]


async def test_writer_undoes_only_the_write_that_raised(writer: Writer) -> None:
    """In a group, a write that breaks a constraint fails alone; its neighbours commit."""

    def half_then_fail(conn: sqlite3.Connection) -> int:
        conn.execute("INSERT INTO t (v) VALUES (50)")
        conn.execute("INSERT INTO t (v) VALUES (1)")  # already inserted in this group
        return 50

    results = await _group(writer, [_insert(1), half_then_fail, _insert(2)])
    assert results[0] == 1
    assert results[2] == 2
    assert isinstance(results[1], StoreError)
    assert "UNIQUE" in str(results[1])
    assert await writer.run(_values) == [1, 2]


async def test_writer_passes_other_exceptions_through(writer: Writer) -> None:
    """An exception that is not SQLite's reaches the caller unchanged."""

    def refuse(conn: sqlite3.Connection) -> int:
        msg = "no such build"
        raise LookupError(msg)

    with pytest.raises(LookupError, match="no such build"):
        await writer.run(refuse)
    assert await writer.run(_insert(7)) == 7


async def test_writer_refuses_writes_after_close(writer: Writer) -> None:
    """A closed writer says so instead of hanging."""
    await writer.aclose()
    with pytest.raises(StoreError, match="closed"):
        await writer.run(_insert(1))


async def test_writer_answers_only_after_the_log_is_on_disk(
    writer: Writer, path: Path, fsync: FsyncGate
) -> None:
    """A write is committed at once but acknowledged only once its fsync returns."""
    fsync.opened.clear()
    pending = asyncio.ensure_future(writer.run(_insert(1)))
    await asyncio.to_thread(fsync.entered.wait, 10)
    await asyncio.sleep(0.05)
    assert not pending.done()
    assert _read_values(path) == [1]  # committed, waiting for the disk
    fsync.opened.set()
    assert await pending == 1


async def test_writer_groups_what_arrives_during_an_fsync_into_the_next(
    writer: Writer, fsync: FsyncGate
) -> None:
    """Writes committed while an fsync runs wait for one more fsync, shared by all."""
    fsync.opened.clear()
    first = asyncio.ensure_future(writer.run(_insert(1)))
    await asyncio.to_thread(fsync.entered.wait, 10)
    later = [asyncio.ensure_future(writer.run(_insert(v))) for v in (2, 3, 4)]
    await asyncio.sleep(0.01)  # committed in separate turns of the loop
    fsync.opened.set()
    assert await asyncio.gather(first, *later) == [1, 2, 3, 4]
    assert fsync.calls == 2


async def test_writer_reports_a_failed_fsync_and_goes_on(writer: Writer, fsync: FsyncGate) -> None:
    """A failed fsync fails its callers with the reason; later writes work again."""
    fsync.error = OSError(5, "Input/output error")
    with pytest.raises(StoreError, match=r"could not be flushed to disk .*Input/output error"):
        await writer.run(_insert(1))
    fsync.error = None
    assert await writer.run(_insert(2)) == 2
    # The first write was committed before its fsync failed: a redelivery finds it.
    assert await writer.run(_values) == [1, 2]


async def test_writer_takes_writes_from_another_event_loop(writer: Writer) -> None:
    """A caller on another thread's loop is served by the writer's own loop."""
    assert await writer.run(_insert(1)) == 1  # binds the writer to this loop

    def elsewhere() -> int:
        return asyncio.run(writer.run(_insert(2)))

    assert await asyncio.to_thread(elsewhere) == 2
    assert await writer.run(_values) == [1, 2]


async def test_writer_close_finishes_queued_writes(path: Path) -> None:
    """Closing waits for queued writes and their fsync; none is lost."""
    writer = Writer(_open(path), str(path))
    pending = [asyncio.ensure_future(writer.run(_insert(v))) for v in range(5)]
    await asyncio.sleep(0)
    await writer.aclose()
    assert [p.result() for p in pending] == list(range(5))
    assert _read_values(path) == list(range(5))


async def test_writer_checkpoints_the_log_into_the_database_file(
    make_writer: MakeWriter, path: Path, tmp_path: Path
) -> None:
    """With a checkpoint due after every fsync, a committed row reaches the main file."""
    writer = make_writer(checkpoint_every=0.0)
    await writer.run(_insert(1))  # its fsync starts a checkpoint on the other thread
    copy = tmp_path / "main-file-only.db"

    def checkpointed() -> list[int] | None:
        shutil.copyfile(path, copy)  # without its -wal: only checkpointed pages
        try:
            return _read_values(copy)
        # Not even the table is in the main file yet, or the copy caught the
        # checkpoint half-way through writing it.
        except sqlite3.DatabaseError:
            return None

    for _ in range(250):
        if checkpointed() == [1]:
            break
        await asyncio.sleep(0.02)
    assert checkpointed() == [1]


async def test_writer_warns_when_a_checkpoint_fails(make_writer: MakeWriter) -> None:
    """A failed checkpoint is logged; the writes it follows are durable all the same."""

    def refuse(path: str) -> sqlite3.Connection:
        raise sqlite3.OperationalError("unable to open database file")

    writer = make_writer(checkpoint_every=0.0, connect=refuse)  # the checkpointer connects late
    with capture_logs() as logs:
        assert await writer.run(_insert(1)) == 1
        await writer.aclose()  # runs the due checkpoint
    assert any(
        entry["event"] == "store_checkpoint_failed" and "unable to open" in entry["error"]
        for entry in logs
    )


async def test_writer_without_a_log_file_syncs_the_database_file(
    tmp_path: Path, fsync: FsyncGate
) -> None:
    """With no -wal file (everything checkpointed, or no WAL), the main file is synced."""
    path = tmp_path / "plain.db"
    writer = Writer(_open(path, wal=False), str(path), fsync=fsync)
    try:
        assert await writer.run(_insert(1)) == 1
    finally:
        await writer.aclose()
    assert not os.path.exists(f"{path}-wal")  # noqa: ASYNC240 -- a test's one stat
    assert fsync.calls >= 1
    assert _read_values(path) == [1]


def _log_frames(path: Path) -> int:
    """Frames in the write-ahead log since SQLite last started it over."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        return int(conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1])
    finally:
        conn.close()


async def test_writer_holds_commits_for_a_checkpoint_once_the_log_is_full(
    make_writer: MakeWriter, path: Path
) -> None:
    """Past WAL_LIMIT, a checkpoint ends with a pass that writes wait for, uncommitted."""
    armed = threading.Event()
    started = threading.Event()
    release = threading.Event()
    made: list[Writer] = []

    def gated(conn: sqlite3.Connection) -> int:
        if armed.is_set() and made[0]._holding:  # the second pass, the one commits wait for
            started.set()
            assert release.wait(timeout=10), "the test never released the checkpoint"
        return passive_checkpoint(conn)

    # wal_limit=1: every checkpoint holds.
    writer = make_writer(checkpoint_every=0.0, wal_limit=1, checkpoint=gated)
    made.append(writer)
    for value in range(20):
        await writer.run(_insert(value))
    armed.set()
    # Its fsync starts a checkpoint, then the held pass; or, if a checkpoint of the
    # writes above is still under way, that one's held pass holds this write too.
    before = asyncio.ensure_future(writer.run(_insert(100)))
    assert await asyncio.to_thread(started.wait, 10)
    held = asyncio.ensure_future(writer.run(_insert(101)))
    await asyncio.sleep(0.05)
    assert not held.done()
    assert 101 not in _read_values(path)  # not even committed while held
    release.set()
    assert await before == 100
    assert await held == 101
    # The held checkpoint copied everything, so the held write started the log over.
    assert _log_frames(path) <= 2
    assert _read_values(path) == [*range(20), 100, 101]


async def test_writer_goes_on_when_a_checkpoint_crashes(make_writer: MakeWriter) -> None:
    """A checkpoint that raises (a bug, not SQLite) is logged; writes and close go on."""
    passes = 0
    crashing = True

    def crash(conn: sqlite3.Connection) -> int:
        nonlocal passes
        if not crashing:
            return passive_checkpoint(conn)
        passes += 1
        raise RuntimeError("checkpoint bug")

    writer = make_writer(checkpoint_every=0.0, checkpoint=crash)
    with capture_logs() as logs:
        for value in range(3):
            assert await writer.run(_insert(value)) == value
    assert await writer.run(_values) == [0, 1, 2]
    assert any(
        entry["event"] == "store_checkpoint_crashed" and entry["error"] == "checkpoint bug"
        for entry in logs
    )
    crashes = [entry for entry in logs if entry["event"] == "store_checkpoint_crashed"]
    # At most once per pass (the last pass may still be running as the block ends).
    assert len(crashes) <= passes
    crashing = False  # the writer is closed after the test, with a working checkpoint

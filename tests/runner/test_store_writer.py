"""Tests of the job store's group-committing writer thread."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from runner.exceptions import StoreError
from runner.store_writer import Writer

pytestmark = pytest.mark.anyio


@pytest.fixture
async def writer(tmp_path: Path) -> AsyncIterator[Writer]:
    """A writer on a fresh WAL file with one table `t(v INTEGER UNIQUE)`."""
    path = tmp_path / "w.db"
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE t (v INTEGER UNIQUE)")
    started = Writer(conn, str(path))
    yield started
    await started.aclose()


def _insert(value: int) -> Callable[[sqlite3.Connection], int]:
    def write(conn: sqlite3.Connection) -> int:
        conn.execute("INSERT INTO t (v) VALUES (?)", (value,))
        return value

    return write


def _values(conn: sqlite3.Connection) -> list[int]:
    return [row[0] for row in conn.execute("SELECT v FROM t ORDER BY v")]


async def _blocked_group(
    writer: Writer, writes: list[Callable[[sqlite3.Connection], int]]
) -> list[int | BaseException]:
    """Queue `writes` while the thread is held busy, so they commit as one group."""
    gate = threading.Event()
    entered = threading.Event()

    def hold(conn: sqlite3.Connection) -> int:
        entered.set()
        gate.wait(timeout=10)
        return 0

    holder = asyncio.ensure_future(writer.run(hold))
    await asyncio.to_thread(entered.wait, 10)
    tasks = [asyncio.ensure_future(writer.run(w)) for w in writes]
    await asyncio.sleep(0)
    gate.set()
    await holder
    return list(await asyncio.gather(*tasks, return_exceptions=True))


async def test_writer_commits_a_group_and_returns_each_result(writer: Writer) -> None:
    """Writes queued together all commit, each caller getting its own result."""
    results = await _blocked_group(writer, [_insert(v) for v in (1, 2, 3)])
    assert results == [1, 2, 3]
    assert await writer.run(_values) == [1, 2, 3]


async def test_writer_undoes_only_the_write_that_raised(writer: Writer) -> None:
    """In a group, a write that breaks a constraint fails alone; its neighbours commit."""

    def half_then_fail(conn: sqlite3.Connection) -> int:
        conn.execute("INSERT INTO t (v) VALUES (50)")
        conn.execute("INSERT INTO t (v) VALUES (1)")  # already inserted in this group
        return 50

    results = await _blocked_group(writer, [_insert(1), half_then_fail, _insert(2)])
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

"""Tests of the SQLite job store's schema: migrations up, and refusal of newer versions."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from runner.exceptions import StoreError
from runner.store import SQLiteStore
from runner.store.schema import MIGRATIONS, SCHEMA_VERSION
from tests.runner.store.samples import START, make_request

pytestmark = pytest.mark.anyio


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """Where the test's database file lives; its directory does not exist yet."""
    return tmp_path / "state" / "isorunner.db"


async def test_open_upgrades_a_version_1_database_and_keeps_its_builds(db_path: Path) -> None:
    """A database written before previous_sha existed is migrated in place."""
    db_path.parent.mkdir(parents=True)
    conn = sqlite3.connect(db_path, isolation_level=None)
    try:
        for statement in MIGRATIONS[0]:
            conn.execute(statement)
        conn.execute("PRAGMA user_version = 1")
        conn.execute(
            "INSERT INTO builds (forge, repo, commit_sha, ref, kind, trusted, commit_time,"
            " delivery_id, source_repo, web_url, title, sender, state, detail, created_at)"
            " VALUES ('github', 'o/r', ?, 'refs/heads/main', 'branch', 1, ?, 'd-1', 'o/r',"
            " '', '', '', 'succeeded', '', ?)",
            ("a" * 40, START.isoformat(), START.isoformat()),
        )
    finally:
        conn.close()
    async with SQLiteStore(db_path) as store:
        (old,) = await store.list_builds()
        assert (old.request.commit_sha, old.request.previous_sha) == ("a" * 40, None)
        later = make_request(previous_sha="a" * 40)
        created = await store.submit(later)
        record = await store.get(created.build_id)
        assert record is not None
        assert record.request.previous_sha == "a" * 40
    conn = sqlite3.connect(db_path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
    finally:
        conn.close()


async def test_open_upgrades_a_version_3_database_so_old_deliveries_keep_their_answer(
    db_path: Path,
) -> None:
    """After the upgrade, a delivery stored before it is answered with its build again."""
    db_path.parent.mkdir(parents=True)
    conn = sqlite3.connect(db_path, isolation_level=None)
    try:
        for migration in MIGRATIONS[:3]:
            for statement in migration:
                conn.execute(statement)
        conn.execute("PRAGMA user_version = 3")
        conn.execute(
            "INSERT INTO builds (forge, repo, commit_sha, ref, kind, trusted, commit_time,"
            " delivery_id, source_repo, web_url, title, sender, state, detail, created_at)"
            " VALUES ('github', 'owner/profile', ?, 'refs/heads/main', 'branch', 1, ?,"
            " 'hook-1:old', 'owner/profile', '', '', '', 'cancelled', '', ?)",
            ("a" * 40, START.isoformat(), START.isoformat()),
        )
    finally:
        conn.close()
    async with SQLiteStore(db_path) as store:
        again = await store.submit(make_request(commit_sha="a" * 40, delivery_id="hook-1:old"))
        assert (again.build_id, again.created) == (1, False)


async def test_open_refuses_a_newer_schema(db_path: Path) -> None:
    """A database from a newer isorunner is not touched and the error says to upgrade."""
    async with SQLiteStore(db_path):
        pass
    conn = sqlite3.connect(db_path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError, match="upgrade isorunner"):
        await SQLiteStore(db_path).open()

"""Tests of the SQLite job store's schema: migrations up, and refusal of newer versions."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from runner.exceptions import BuildNotFound, StoreError
from runner.store import SQLiteStore
from runner.store.schema import MIGRATIONS, SCHEMA_VERSION
from tests.runner.store.samples import START, make_request
from webhooks.build import PackageEntry

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
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 6
    finally:
        conn.close()


async def test_open_upgrades_a_version_2_database_to_store_packages(db_path: Path) -> None:
    """A database written before package lists existed gains them; old builds have none."""
    db_path.parent.mkdir(parents=True)
    conn = sqlite3.connect(db_path, isolation_level=None)
    try:
        for migration in MIGRATIONS[:2]:
            for statement in migration:
                conn.execute(statement)
        conn.execute("PRAGMA user_version = 2")
    finally:
        conn.close()
    async with SQLiteStore(db_path) as store:
        old = await store.submit(make_request(delivery_id="old"))
        assert (await store.get(old.build_id)) is not None
        record = await store.get(old.build_id)
        assert record is not None
        assert record.packages is None
        entries = [PackageEntry("base", "3-2", "core", "b" * 64)]
        await store.set_packages(old.build_id, entries)
        record = await store.get(old.build_id)
        assert record is not None
        assert record.packages == tuple(entries)


async def test_set_packages_replaces_and_refuses_unknown_builds(db_path: Path) -> None:
    """Packages are replaced when recorded again; an unknown build id is refused."""
    async with SQLiteStore(db_path) as store:
        build = await store.submit(make_request())
        await store.set_packages(build.build_id, [PackageEntry("a", "1-1", "core", "c" * 64)])
        await store.set_packages(build.build_id, [PackageEntry("b", "2-1", "extra", "d" * 64)])
        record = await store.get(build.build_id)
        assert record is not None
        assert record.packages == (PackageEntry("b", "2-1", "extra", "d" * 64),)
        (listed,) = await store.list_builds()
        assert listed.packages is None  # lists leave the packages out
        with pytest.raises(BuildNotFound):
            await store.set_packages(build.build_id + 1, [])


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

"""Tests of the SQLite job store's boot test results: kept with the build, bounded, pruned."""

from __future__ import annotations

import dataclasses
import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest

from runner.exceptions import BuildNotFound
from runner.jobs import Event
from runner.store import SQLiteStore
from runner.store.schema import MIGRATIONS
from tests.runner.store.samples import START, make_request
from webhooks.build import BootTestRecord

pytestmark = pytest.mark.anyio

BIOS = BootTestRecord(
    name="bios",
    firmware="bios",
    medium="cdrom",
    mode="firmware",
    outcome="passed",
    required=True,
    accelerator="tcg",
    seconds=22.5,
    reason="'archiso login:' after 22.5 s",
    serial_tail=("ISOLINUX 6.04", "archiso login:"),
    screenshot="bios.png",
)
UEFI = BootTestRecord(
    name="uefi, kernel",
    firmware="uefi",
    medium="cdrom",
    mode="kernel",
    outcome="failed",
    required=False,
    accelerator="tcg",
    seconds=5.0,
    reason="'Kernel panic - not syncing': ...",
    command_line="archisobasedir=arch console=ttyS0,115200",
)


async def test_boot_tests_are_kept_in_order_with_their_build(tmp_path: Path) -> None:
    """Saved results come back as saved, in order; a second save replaces the first."""
    async with SQLiteStore(tmp_path / "db.sqlite") as store:
        build = await store.submit(make_request())
        assert await store.boot_tests(build.build_id) == []
        await store.save_boot_tests(build.build_id, [BIOS, UEFI])
        assert await store.boot_tests(build.build_id) == [BIOS, UEFI]
        await store.save_boot_tests(build.build_id, [UEFI])
        assert await store.boot_tests(build.build_id) == [UEFI]


async def test_boot_tests_of_an_unknown_build_are_refused(tmp_path: Path) -> None:
    """Results for a build that does not exist raise BuildNotFound."""
    async with SQLiteStore(tmp_path / "db.sqlite") as store:
        with pytest.raises(BuildNotFound):
            await store.save_boot_tests(99, [BIOS])


async def test_boot_tests_bound_what_the_guest_wrote(tmp_path: Path) -> None:
    """Serial tails, lines and reasons are cut to their caps when stored."""
    hostile = dataclasses.replace(
        BIOS, serial_tail=tuple("x" * 5000 for _ in range(500)), reason="r" * 100_000
    )
    async with SQLiteStore(tmp_path / "db.sqlite") as store:
        build = await store.submit(make_request())
        await store.save_boot_tests(build.build_id, [hostile])
        (stored,) = await store.boot_tests(build.build_id)
    assert len(stored.serial_tail) == 100
    assert {len(line) for line in stored.serial_tail} == {1024}
    assert len(stored.reason) == 2048


async def test_retention_removes_boot_tests_with_their_build(tmp_path: Path) -> None:
    """Pruning a finished build deletes its boot test rows too."""
    async with SQLiteStore(tmp_path / "db.sqlite", clock=lambda: START) as store:
        build = await store.submit(make_request())
        await store.claim_next()
        await store.finish(build.build_id, Event.SUCCEED)
        await store.save_boot_tests(build.build_id, [BIOS])
        assert await store.prune_finished(START + timedelta(days=1)) == [build.build_id]
        assert await store.boot_tests(build.build_id) == []


async def test_a_version_2_database_gains_the_boot_tests_table(tmp_path: Path) -> None:
    """Migrating a version 2 database adds boot_tests and keeps the builds."""
    path = tmp_path / "db.sqlite"
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for statement in (*MIGRATIONS[0], *MIGRATIONS[1]):
            conn.execute(statement)
        conn.execute("PRAGMA user_version = 2")
    finally:
        conn.close()
    async with SQLiteStore(path) as store:
        build = await store.submit(make_request())
        await store.save_boot_tests(build.build_id, [BIOS])
        assert await store.boot_tests(build.build_id) == [BIOS]

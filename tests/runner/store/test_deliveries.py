"""Tests of `runner.store.deliveries`: a delivery keeps its answer; forges never mix."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from runner.jobs import Event
from runner.store import SQLiteStore
from tests.runner.store.samples import FakeClock, make_request
from webhooks.build import Forge, RefKind

pytestmark = pytest.mark.anyio


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock."""
    return FakeClock()


@pytest.fixture
async def store(tmp_path: Path, clock: FakeClock) -> AsyncIterator[SQLiteStore]:
    """An open store on a fresh file."""
    async with SQLiteStore(tmp_path / "isorunner.db", clock=clock) as opened:
        yield opened


async def test_a_duplicate_delivery_keeps_its_answer_after_the_build_is_cancelled(
    store: SQLiteStore,
) -> None:
    """A PR delivery answered "duplicate of build 1", sent again after 1 was cancelled, is 1."""
    push = make_request()
    first = await store.submit(push)
    pr = make_request(
        kind=RefKind.PULL_REQUEST, pr_number=4, commit_sha=push.commit_sha, sender="mallory"
    )
    answered = await store.submit(pr)
    assert (answered.build_id, answered.created) == (first.build_id, False)
    await store.cancel(first.build_id, "cancelled by an administrator")
    again, cancelled = await store.submit_superseding(pr)
    assert (again.build_id, again.created, cancelled) == (first.build_id, False, [])
    assert len(await store.list_builds()) == 1


async def test_the_same_delivery_id_on_two_forges_is_two_deliveries(
    store: SQLiteStore, tmp_path: Path
) -> None:
    """A GitLab delivery with a GitHub delivery's id is its own build, never its duplicate."""
    github = await store.submit(make_request(delivery_id="shared-id"))
    gitlab = await store.submit(make_request(forge=Forge.GITLAB, delivery_id="shared-id"))
    assert gitlab.created
    assert gitlab.build_id != github.build_id
    record = await store.get(gitlab.build_id)
    assert record is not None
    assert record.request.delivery_id == "gitlab:shared-id"
    again = await store.submit(make_request(forge=Forge.GITLAB, delivery_id="shared-id"))
    assert (again.build_id, again.created) == (gitlab.build_id, False)


async def test_a_delivery_is_forgotten_with_its_build_after_the_retention_window(
    store: SQLiteStore, clock: FakeClock
) -> None:
    """Once retention deletes its build, a delivery id is new again (and nothing dangles)."""
    request = make_request()
    first = await store.submit(request)
    claimed = await store.claim_next()
    assert claimed is not None
    await store.finish(first.build_id, Event.SUCCEED)
    await store.prune_finished(clock.advance(86_400) + timedelta(seconds=1))
    assert await store.get(first.build_id) is None
    second = await store.submit(request)
    assert second.created
    assert second.build_id != first.build_id


async def test_deliveries_reference_builds(tmp_path: Path) -> None:
    """The answers table refuses an answer naming no build (a foreign key)."""
    path = tmp_path / "fk.db"
    async with SQLiteStore(path):
        pass
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA foreign_keys = ON")
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute("INSERT INTO deliveries VALUES ('github', 'd', 99)")
    finally:
        conn.close()

"""Tests of the SQLite job store: intake, deduplication, catalog, opening and durability."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from runner.exceptions import StoreError
from runner.jobs import Event
from runner.store import SQLiteStore, open_store
from runner.store.schema import SCHEMA_VERSION
from tests.runner.store.samples import START, FakeClock, make_request
from webhooks.build import (
    BuildCatalog,
    BuildRecord,
    BuildSink,
    BuildState,
    Forge,
    RefKind,
    Submission,
)

pytestmark = pytest.mark.anyio

REPO_ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock at START."""
    return FakeClock()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """Where the test's database file lives; its directory does not exist yet."""
    return tmp_path / "state" / "isorunner.db"


@pytest.fixture
async def store(db_path: Path, clock: FakeClock) -> AsyncIterator[SQLiteStore]:
    """An open store on a fresh file, closed after the test."""
    async with SQLiteStore(db_path, clock=clock) as opened:
        yield opened


# ------------------------------------------------------------------ submit


async def test_submit_stores_every_request_field_as_a_queued_build(store: SQLiteStore) -> None:
    """A new request comes back from `get` unchanged, queued, stamped with the clock."""
    request = make_request(
        kind=RefKind.PULL_REQUEST,
        pr_number=7,
        trusted=False,
        source_repo="fork/profile",
        project_id=99,
        commit_time=datetime.fromisoformat("2025-02-01T10:30:00+02:00"),
        previous_sha="f" * 40,
    )
    sink: BuildSink = store  # the seams the web app is given
    catalog: BuildCatalog = store
    submission = await sink.submit(request)
    record = await catalog.get(submission.build_id)
    assert submission.created
    assert record == BuildRecord(
        id=submission.build_id, request=request, state=BuildState.QUEUED, created_at=START
    )
    assert record.created_at.tzinfo is not None


async def test_submit_same_delivery_returns_the_same_build(store: SQLiteStore) -> None:
    """A redelivery of one delivery id is not a new build."""
    request = make_request()
    first = await store.submit(request)
    again = await store.submit(make_request(delivery_id=request.delivery_id))
    assert again == Submission(first.build_id, created=False)


async def test_submit_push_and_pull_request_for_one_commit_make_one_build(
    store: SQLiteStore,
) -> None:
    """A branch push and a PR update for the same commit share a build."""
    push = make_request()
    pull = make_request(
        commit_sha=push.commit_sha, kind=RefKind.PULL_REQUEST, pr_number=3, ref="refs/heads/x"
    )
    first = await store.submit(push)
    assert await store.submit(pull) == Submission(first.build_id, created=False)


async def test_submit_same_commit_elsewhere_makes_new_builds(store: SQLiteStore) -> None:
    """The commit dedupe is per forge and repo."""
    push = make_request()
    ids = {
        (await store.submit(push)).build_id,
        (await store.submit(make_request(commit_sha=push.commit_sha, repo="other/x"))).build_id,
        (await store.submit(make_request(commit_sha=push.commit_sha, forge=Forge.GITLAB))).build_id,
    }
    assert len(ids) == 3


async def test_submit_after_cancel_makes_a_new_build(store: SQLiteStore) -> None:
    """A cancelled build does not absorb a new push of its commit."""
    push = make_request()
    first = await store.submit(push)
    await store.cancel(first.build_id, "cancelled by alice")
    again = await store.submit(make_request(commit_sha=push.commit_sha))
    assert again.created
    assert again.build_id != first.build_id


async def test_submit_finished_build_absorbs_a_new_push_of_its_commit(store: SQLiteStore) -> None:
    """A commit that was already built is not built again by another push."""
    push = make_request()
    first = await store.submit(push)
    await store.claim_next()
    await store.finish(first.build_id, Event.SUCCEED)
    again = await store.submit(make_request(commit_sha=push.commit_sha, ref="refs/heads/dev"))
    assert again == Submission(first.build_id, created=False)


async def test_submit_tags_dedupe_per_tag_and_commit(store: SQLiteStore) -> None:
    """A tag build is separate from branch builds and from other tags of the commit."""
    push = make_request()
    branch = await store.submit(push)
    tag = make_request(commit_sha=push.commit_sha, kind=RefKind.TAG, ref="refs/tags/v1")
    tag_build = await store.submit(tag)
    same_tag = await store.submit(
        make_request(commit_sha=push.commit_sha, kind=RefKind.TAG, ref="refs/tags/v1")
    )
    other_tag = await store.submit(
        make_request(commit_sha=push.commit_sha, kind=RefKind.TAG, ref="refs/tags/v1.0")
    )
    assert tag_build.created
    assert tag_build.build_id != branch.build_id
    assert same_tag == Submission(tag_build.build_id, created=False)
    assert other_tag.created
    assert other_tag.build_id not in {branch.build_id, tag_build.build_id}
    later_push = await store.submit(make_request(commit_sha=push.commit_sha))
    assert later_push == Submission(branch.build_id, created=False)


async def test_submit_refuses_a_naive_commit_time(store: SQLiteStore) -> None:
    """Dates must carry a time zone; a naive one is refused and nothing is stored."""
    with pytest.raises(ValueError, match="timezone-aware"):
        await store.submit(make_request(commit_time=datetime(2025, 1, 1)))
    assert await store.list_builds() == []


async def test_submit_100_concurrent_distinct_requests_make_100_builds(
    store: SQLiteStore,
) -> None:
    """Concurrent submits of different commits each get their own build id."""
    requests = [make_request() for _ in range(100)]
    results = await asyncio.gather(*(store.submit(r) for r in requests))
    assert all(r.created for r in results)
    assert len({r.build_id for r in results}) == 100
    for request, result in zip(requests, results, strict=True):
        record = await store.get(result.build_id)
        assert record is not None
        assert record.request == request


async def test_submit_100_concurrent_deliveries_of_one_commit_make_one_build(
    store: SQLiteStore,
) -> None:
    """Concurrent pushes of one commit collapse into exactly one new build."""
    sha = make_request().commit_sha
    requests = [make_request(commit_sha=sha) for _ in range(50)]
    requests += requests  # and each delivered twice
    results = await asyncio.gather(*(store.submit(r) for r in requests))
    assert len({r.build_id for r in results}) == 1
    assert sum(r.created for r in results) == 1
    assert (await store.count_by_state())[BuildState.QUEUED] == 1


async def test_submit_failure_in_a_group_leaves_the_other_writes_committed(
    store: SQLiteStore,
) -> None:
    """One write that raises inside a group commit does not undo its neighbours."""
    good = [make_request() for _ in range(10)]
    bad = make_request(commit_time=datetime(2025, 1, 1))
    results = await asyncio.gather(
        *(store.submit(r) for r in good[:5]),
        store.submit(bad),
        *(store.submit(r) for r in good[5:]),
        return_exceptions=True,
    )
    assert isinstance(results[5], ValueError)
    assert len(await store.list_builds()) == 10


async def test_submit_while_another_process_holds_the_write_lock_fails_and_recovers(
    store: SQLiteStore, db_path: Path
) -> None:
    """A foreign writer holding the lock fails the submit with advice; nothing is lost."""
    request = make_request()
    other = sqlite3.connect(db_path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreError, match=r"refused a write \(database is locked\)"):
            await store.submit(request)
        other.execute("ROLLBACK")
    finally:
        other.close()
    submitted = await store.submit(request)  # the forge's redelivery
    assert submitted.created
    assert [b.id for b in await store.list_builds()] == [submitted.build_id]


async def test_submit_on_a_store_that_is_not_open_says_so(db_path: Path) -> None:
    """Using a store before `open` raises an actionable StoreError."""
    with pytest.raises(StoreError, match="not open"):
        await SQLiteStore(db_path).submit(make_request())


# ------------------------------------------------------------------ catalog


async def test_list_builds_is_newest_first_and_filters(store: SQLiteStore) -> None:
    """Listing orders by id descending and filters by repo and state."""
    a = await store.submit(make_request(repo="a/a"))
    b = await store.submit(make_request(repo="b/b"))
    c = await store.submit(make_request(repo="a/a"))
    await store.cancel(c.build_id, "no")
    assert [r.id for r in await store.list_builds()] == [c.build_id, b.build_id, a.build_id]
    assert [r.id for r in await store.list_builds(repo="a/a")] == [c.build_id, a.build_id]
    queued = await store.list_builds(repo="a/a", state=BuildState.QUEUED)
    assert [r.id for r in queued] == [a.build_id]


async def test_list_builds_pages_with_before_id(store: SQLiteStore) -> None:
    """Keyset pages of 3 visit every build exactly once, newest first."""
    ids = [(await store.submit(make_request())).build_id for _ in range(8)]
    seen: list[int] = []
    before: int | None = None
    while page := await store.list_builds(limit=3, before_id=before):
        assert len(page) <= 3
        seen += [r.id for r in page]
        before = page[-1].id
    assert seen == sorted(ids, reverse=True)


@pytest.mark.parametrize("limit", [0, -1, 1001])
async def test_list_builds_refuses_an_out_of_range_limit(store: SQLiteStore, limit: int) -> None:
    """The page size must be between 1 and 1000."""
    with pytest.raises(ValueError, match="limit"):
        await store.list_builds(limit=limit)


async def test_get_unknown_build_is_none(store: SQLiteStore) -> None:
    """Looking up an id that was never stored returns None."""
    assert await store.get(12345) is None


async def test_count_by_state_counts_every_state(store: SQLiteStore) -> None:
    """Counts include every state, with zero where there are no builds."""
    for _ in range(3):
        await store.submit(make_request())
    claimed = await store.claim_next()
    assert claimed is not None
    await store.finish(claimed.id, Event.FAIL, "mkarchiso exited with 1")
    counts = await store.count_by_state()
    assert counts == {
        BuildState.QUEUED: 2,
        BuildState.RUNNING: 0,
        BuildState.SUCCEEDED: 0,
        BuildState.FAILED: 1,
        BuildState.ERRORED: 0,
        BuildState.CANCELLED: 0,
    }


# ------------------------------------------------------------------ opening


async def test_open_creates_the_directory_schema_and_wal_mode(db_path: Path) -> None:
    """Opening a new path creates its directory and a WAL database at the schema version."""
    async with open_store(f"sqlite://{db_path}"):
        assert await asyncio.to_thread(db_path.exists)
    # Closed cleanly: the log was checkpointed into the file and removed.
    assert not db_path.with_name(f"{db_path.name}-wal").exists()
    conn = sqlite3.connect(db_path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        conn.close()


async def test_open_refuses_an_uncreatable_directory(tmp_path: Path) -> None:
    """A directory that cannot be created is named in the error with what to do."""
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StoreError, match=r"cannot create the directory .*/file.*storage\.database"):
        await SQLiteStore(blocker / "isorunner.db").open()


async def test_open_refuses_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    """A file that is not SQLite is refused with advice to move it aside."""
    path = tmp_path / "isorunner.db"
    path.write_bytes(b"this is not an sqlite database at all" * 100)
    with pytest.raises(StoreError, match="Move it aside"):
        await SQLiteStore(path).open()


async def test_open_twice_and_close_twice_are_harmless(db_path: Path) -> None:
    """`open` and `aclose` are idempotent, and a closed store refuses writes."""
    store = SQLiteStore(db_path)
    await store.open()
    await store.open()
    await store.aclose()
    await store.aclose()
    with pytest.raises(StoreError, match="not open"):
        await store.get(1)


# ------------------------------------------------------------------ durability


async def test_restart_keeps_builds_states_and_outbox(db_path: Path, clock: FakeClock) -> None:
    """Closing and reopening the file brings back every build and notification as it was."""
    async with SQLiteStore(db_path, clock=clock) as store:
        ids = [(await store.submit(make_request())).build_id for _ in range(5)]
        claimed = await store.claim_next()
        assert claimed is not None
        await store.finish(claimed.id, Event.SUCCEED, "built in 3 minutes")
        await store.enqueue_notification(claimed.id, "status", {"state": "success"})
        before = await store.list_builds()
        outbox = await store.due_notifications(clock.now, 10)
    async with SQLiteStore(db_path, clock=clock) as reopened:
        assert await reopened.list_builds() == before
        assert await reopened.due_notifications(clock.now, 10) == outbox
        assert [r.id for r in before] == sorted(ids, reverse=True)
        later = await reopened.submit(make_request())
        assert later.build_id > max(ids)


def test_kill_9_loses_no_acknowledged_submit(tmp_path: Path) -> None:
    """Every id printed by a submitter killed with SIGKILL mid-stream is in the file."""
    db = tmp_path / "isorunner.db"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.runner.store.submitter", str(db)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    printed: list[int] = []
    try:
        while len(printed) < 200:
            line = proc.stdout.readline()
            if not line:
                break
            printed.append(int(line))
        os.kill(proc.pid, signal.SIGKILL)
        rest, errors = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert len(printed) >= 200, errors
    assert proc.returncode == -signal.SIGKILL
    printed += [int(line) for line in rest.split()]
    conn = sqlite3.connect(db)
    try:
        stored = {row[0] for row in conn.execute("SELECT id FROM builds")}
    finally:
        conn.close()
    assert set(printed) <= stored
    assert len(set(printed)) == len(printed)


async def test_retry_keeps_the_original_findable_by_its_delivery(store: SQLiteStore) -> None:
    """After a retry, a redelivery of the original delivery still maps to the original."""
    request = make_request()
    first = await store.submit(request)
    await store.claim_next()
    await store.finish(first.build_id, Event.ERROR, "disk full")
    retried = await store.retry(first.build_id)
    assert await store.submit(request) == Submission(first.build_id, created=False)
    later = make_request(commit_sha=request.commit_sha)
    assert await store.submit(later) == Submission(retried.build_id, created=False)
    copy = await store.get(retried.build_id)
    assert copy is not None
    assert copy.request.delivery_id == f"{request.delivery_id}#retry-{retried.build_id}"
    assert copy.created_at == START.astimezone(UTC)

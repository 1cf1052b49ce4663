"""Tests of the job store's worker side: claim, finish, cancel, supersede, recovery, retry."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import pytest

from runner.exceptions import BuildNotFound, IllegalTransition, StoreError
from runner.jobs import Event, Notification, Outgoing
from runner.store import SQLiteStore
from tests.runner.store.samples import START, FakeClock, make_request
from webhooks.build import BuildRecord, BuildState, RefKind

pytestmark = pytest.mark.anyio


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock at START."""
    return FakeClock()


@pytest.fixture
async def store(tmp_path: Path, clock: FakeClock) -> AsyncIterator[SQLiteStore]:
    """An open store on a fresh file, closed after the test."""
    async with SQLiteStore(tmp_path / "isorunner.db", clock=clock) as opened:
        yield opened


def status_of(record: BuildRecord) -> Iterable[Outgoing]:
    """Announce every change as a status notification naming the new state."""
    return [("status", {"state": record.state.value, "detail": record.detail})]


@pytest.fixture
async def announcing(tmp_path: Path, clock: FakeClock) -> AsyncIterator[SQLiteStore]:
    """An open store whose status hook is `status_of`, closed after the test."""
    async with SQLiteStore(tmp_path / "announcing.db", clock=clock, notify=status_of) as opened:
        yield opened


async def announced(store: SQLiteStore, clock: FakeClock) -> list[tuple[int, object]]:
    """Empty the outbox; return each notification's (build id, state) in enqueue order."""
    found: list[Notification] = []
    while due := await store.due_notifications(clock.now, 100):
        for notification in due:
            found.append(notification)
            await store.notification_done(notification.id)
    return [(n.build_id, n.payload["state"]) for n in sorted(found, key=lambda n: n.id)]


async def _running(store: SQLiteStore) -> BuildRecord:
    await store.submit(make_request())
    claimed = await store.claim_next()
    assert claimed is not None
    return claimed


# ------------------------------------------------------------------ claim and finish


async def test_claim_next_takes_the_oldest_queued_build(
    store: SQLiteStore, clock: FakeClock
) -> None:
    """Claims go oldest first, move the build to running and stamp started_at."""
    first = await store.submit(make_request())
    second = await store.submit(make_request())
    started = clock.advance(30)
    claimed = await store.claim_next()
    assert claimed is not None
    assert (claimed.id, claimed.state, claimed.started_at) == (
        first.build_id,
        BuildState.RUNNING,
        started,
    )
    again = await store.claim_next()
    assert again is not None
    assert again.id == second.build_id
    assert await store.claim_next() is None


async def test_claim_next_concurrent_claims_never_share_a_build(store: SQLiteStore) -> None:
    """Twenty concurrent claims over ten queued builds hand out each build once."""
    for _ in range(10):
        await store.submit(make_request())
    claims = await asyncio.gather(*(store.claim_next() for _ in range(20)))
    ids = [c.id for c in claims if c is not None]
    assert sorted(ids) == sorted(set(ids))
    assert len(ids) == 10


@pytest.mark.parametrize(
    ("event", "state"),
    [
        (Event.SUCCEED, BuildState.SUCCEEDED),
        (Event.FAIL, BuildState.FAILED),
        (Event.ERROR, BuildState.ERRORED),
        (Event.CANCEL, BuildState.CANCELLED),
    ],
)
async def test_finish_moves_a_running_build_to_its_final_state(
    store: SQLiteStore, clock: FakeClock, event: Event, state: BuildState
) -> None:
    """Finishing stores the final state, the detail and finished_at, keeping started_at."""
    claimed = await _running(store)
    ended = clock.advance(600)
    record = await store.finish(claimed.id, event, "the reason")
    assert (record.state, record.detail, record.finished_at) == (state, "the reason", ended)
    assert record.started_at == claimed.started_at
    assert await store.get(claimed.id) == record


async def test_finish_refuses_an_illegal_event_and_changes_nothing(store: SQLiteStore) -> None:
    """Succeeding a queued build raises IllegalTransition and leaves it queued."""
    submission = await store.submit(make_request())
    with pytest.raises(IllegalTransition, match=f"build {submission.build_id} is queued"):
        await store.finish(submission.build_id, Event.SUCCEED)
    record = await store.get(submission.build_id)
    assert record is not None
    assert record.state is BuildState.QUEUED


async def test_finish_after_a_cancel_raises(store: SQLiteStore) -> None:
    """A worker finishing a build cancelled under its feet is refused; it stays cancelled."""
    claimed = await _running(store)
    await store.cancel(claimed.id, "cancelled by alice")
    with pytest.raises(IllegalTransition, match="cancelled"):
        await store.finish(claimed.id, Event.SUCCEED)


async def test_finish_unknown_build_raises_build_not_found(store: SQLiteStore) -> None:
    """Events for an id that does not exist raise BuildNotFound naming it."""
    with pytest.raises(BuildNotFound, match="no build with id 404"):
        await store.finish(404, Event.FAIL)


async def test_finish_enqueues_the_hooks_notification_in_the_same_change(
    announcing: SQLiteStore, clock: FakeClock
) -> None:
    """The notification built from the new record is due as soon as the build ends."""
    claimed = await _running(announcing)
    assert await announced(announcing, clock) == [(claimed.id, "queued"), (claimed.id, "running")]
    await announcing.finish(claimed.id, Event.FAIL, "exit 1")
    (due,) = await announcing.due_notifications(clock.now, 10)
    assert (due.build_id, due.kind, due.payload) == (
        claimed.id,
        "status",
        {"state": "failed", "detail": "exit 1"},
    )


async def test_finish_whose_hook_raises_is_rolled_back(tmp_path: Path) -> None:
    """If building the notification fails, the state change is undone too."""

    def broken(record: BuildRecord) -> Iterable[Outgoing]:
        if record.state is BuildState.SUCCEEDED:
            msg = f"cannot describe build {record.id}"
            raise RuntimeError(msg)
        return []

    async with SQLiteStore(tmp_path / "broken.db", notify=broken) as store:
        claimed = await _running(store)
        with pytest.raises(RuntimeError, match="cannot describe"):
            await store.finish(claimed.id, Event.SUCCEED)
        record = await store.get(claimed.id)
    assert record is not None
    assert record.state is BuildState.RUNNING


async def test_set_detail_replaces_the_note(store: SQLiteStore) -> None:
    """The detail can change without a state change, e.g. for the time-limit warning."""
    claimed = await _running(store)
    await store.set_detail(claimed.id, "15 minutes left")
    record = await store.get(claimed.id)
    assert record is not None
    assert (record.state, record.detail) == (BuildState.RUNNING, "15 minutes left")
    with pytest.raises(BuildNotFound):
        await store.set_detail(999, "x")


async def test_cancel_a_queued_build_and_refuse_a_final_one(store: SQLiteStore) -> None:
    """Cancelling a queued build finishes it; cancelling it again is illegal."""
    submission = await store.submit(make_request())
    record = await store.cancel(submission.build_id, "cancelled by alice")
    assert (record.state, record.detail, record.started_at) == (
        BuildState.CANCELLED,
        "cancelled by alice",
        None,
    )
    assert record.finished_at == START
    with pytest.raises(IllegalTransition):
        await store.cancel(submission.build_id, "again")


# ------------------------------------------------------------------ supersede


async def test_supersede_cancels_older_queued_and_running_builds_of_the_branch(
    announcing: SQLiteStore, clock: FakeClock
) -> None:
    """A newer push cancels the branch's older queued and running builds, and only those."""
    store = announcing
    done = await _running(store)
    await store.finish(done.id, Event.SUCCEED)
    running = await _running(store)
    queued = await store.submit(make_request())
    other_branch = await store.submit(make_request(ref="refs/heads/dev"))
    newer = make_request()
    await store.submit(newer)
    cancelled = await store.supersede(newer)
    assert cancelled == [running.id, queued.build_id]
    for build_id in cancelled:
        record = await store.get(build_id)
        assert record is not None
        assert (record.state, record.detail) == (
            BuildState.CANCELLED,
            f"superseded by {newer.commit_sha[:7]}",
        )
    untouched = await store.get(other_branch.build_id)
    assert untouched is not None
    assert untouched.state is BuildState.QUEUED
    statuses = await announced(store, clock)
    assert [build for build, state in statuses if state == "cancelled"] == cancelled


async def test_supersede_never_cancels_newer_builds_or_the_same_commit(
    store: SQLiteStore,
) -> None:
    """A late delivery of an older push does not cancel what came after it."""
    older = make_request()
    await store.submit(older)
    newer = await store.submit(make_request())
    assert await store.supersede(older) == []
    same_commit = make_request(commit_sha=older.commit_sha, delivery_id="redelivered")
    assert await store.supersede(same_commit) == []
    record = await store.get(newer.build_id)
    assert record is not None
    assert record.state is BuildState.QUEUED


async def test_supersede_cancels_a_late_delivery_of_a_push_already_moved_past(
    announcing: SQLiteStore, clock: FakeClock
) -> None:
    """A push delivered after the push that moved the branch on from it is cancelled."""
    store = announcing
    old_sha = f"{0xA1:040x}"
    newer = make_request(previous_sha=old_sha)
    newer_id = (await store.submit(newer)).build_id
    assert await store.supersede(newer) == []
    late = make_request(commit_sha=old_sha)
    late_id = (await store.submit(late)).build_id
    assert await store.supersede(late) == [late_id]
    cancelled = await store.get(late_id)
    kept = await store.get(newer_id)
    assert cancelled is not None
    assert kept is not None
    assert (cancelled.state, cancelled.detail) == (
        BuildState.CANCELLED,
        f"superseded by {newer.commit_sha[:7]}, pushed after it (delivered late)",
    )
    assert kept.state is BuildState.QUEUED
    statuses = await announced(store, clock)
    assert [build for build, state in statuses if state == "cancelled"] == [late_id]


async def test_supersede_orders_by_previous_sha_only_on_the_same_line(
    store: SQLiteStore,
) -> None:
    """Another branch or PR that moved on from the same commit does not cancel a build."""
    shared = f"{0xB2:040x}"
    await store.submit(make_request(ref="refs/heads/dev", previous_sha=shared))
    pr = make_request(kind=RefKind.PULL_REQUEST, pr_number=3, previous_sha=shared)
    await store.submit(pr)
    main = make_request(commit_sha=shared)
    main_id = (await store.submit(main)).build_id
    assert await store.supersede(main) == []
    record = await store.get(main_id)
    assert record is not None
    assert record.state is BuildState.QUEUED


async def test_submit_superseding_stores_the_build_and_cancels_the_older_one(
    store: SQLiteStore,
) -> None:
    """The new build is stored and the older one cancelled; repeats and tags cancel nothing."""
    older = (await store.submit(make_request())).build_id
    newer = make_request()
    submission, cancelled = await store.submit_superseding(newer)
    assert (submission.created, cancelled) == (True, [older])
    record = await store.get(older)
    assert record is not None
    assert (record.state, record.detail) == (
        BuildState.CANCELLED,
        f"superseded by {newer.commit_sha[:7]}",
    )
    again, none = await store.submit_superseding(newer)  # the same delivery once more
    assert (again.build_id, again.created, none) == (submission.build_id, False, [])
    tag = make_request(kind=RefKind.TAG, ref="refs/tags/v1")
    assert (await store.submit_superseding(tag))[1] == []


async def test_supersede_pull_requests_follow_their_number(store: SQLiteStore) -> None:
    """A PR update cancels older builds of that PR, not of another PR with the same branch."""
    pr7 = await store.submit(make_request(kind=RefKind.PULL_REQUEST, pr_number=7))
    pr8 = await store.submit(make_request(kind=RefKind.PULL_REQUEST, pr_number=8))
    update = make_request(kind=RefKind.PULL_REQUEST, pr_number=7)
    await store.submit(update)
    assert await store.supersede(update) == [pr7.build_id]
    other = await store.get(pr8.build_id)
    assert other is not None
    assert other.state is BuildState.QUEUED


async def test_supersede_never_touches_tags(store: SQLiteStore) -> None:
    """Tags publish, so a newer tag never cancels an older one."""
    first = await store.submit(make_request(kind=RefKind.TAG, ref="refs/tags/v1"))
    second = make_request(kind=RefKind.TAG, ref="refs/tags/v1")
    await store.submit(second)
    assert await store.supersede(second) == []
    record = await store.get(first.build_id)
    assert record is not None
    assert record.state is BuildState.QUEUED


async def test_supersede_requires_a_stored_request(store: SQLiteStore) -> None:
    """Superseding for a request that was never submitted is refused with what to do."""
    with pytest.raises(StoreError, match="submit the request first"):
        await store.supersede(make_request())


# ------------------------------------------------------------------ recovery and retry


async def test_recover_running_requeues_builds_left_running(
    tmp_path: Path, clock: FakeClock
) -> None:
    """After a crash, builds left running go back to the queue with started_at cleared."""
    path = tmp_path / "isorunner.db"
    async with SQLiteStore(path, clock=clock) as before_crash:
        claimed = await _running(before_crash)
        waiting = await before_crash.submit(make_request())
    async with SQLiteStore(path, clock=clock, notify=status_of) as after:
        recovered = await after.recover_running(requeue=True)
        assert [(r.id, r.state, r.started_at) for r in recovered] == [
            (claimed.id, BuildState.QUEUED, None)
        ]
        assert "re-queued" in recovered[0].detail
        reclaimed = await after.claim_next()
        assert reclaimed is not None
        assert reclaimed.id == claimed.id
        assert reclaimed.detail == ""  # the re-queue note does not outlive the re-run's start
        untouched = await after.get(waiting.build_id)
        assert untouched is not None
        assert untouched.state is BuildState.QUEUED
        statuses = await announced(after, clock)
    assert statuses == [(claimed.id, "queued"), (claimed.id, "running")]


async def test_recover_running_can_end_them_with_error(store: SQLiteStore) -> None:
    """The alternative recovery ends builds left running as errored, saying why."""
    claimed = await _running(store)
    (recovered,) = await store.recover_running(requeue=False)
    assert (recovered.id, recovered.state) == (claimed.id, BuildState.ERRORED)
    assert recovered.finished_at is not None
    assert "stopped while this build was running" in recovered.detail
    assert await store.recover_running(requeue=False) == []


async def test_retry_queues_a_new_build_with_the_same_request(store: SQLiteStore) -> None:
    """A retry of a failed build is a new queued build; the old one stays failed."""
    claimed = await _running(store)
    await store.finish(claimed.id, Event.FAIL, "exit 1")
    retried = await store.retry(claimed.id)
    assert retried.created
    assert retried.build_id != claimed.id
    copy = await store.get(retried.build_id)
    old = await store.get(claimed.id)
    assert copy is not None
    assert old is not None
    assert copy.state is BuildState.QUEUED
    assert old.state is BuildState.FAILED
    assert copy.request.commit_sha == claimed.request.commit_sha
    assert copy.request.delivery_id != claimed.request.delivery_id


async def test_retry_refuses_a_build_that_is_not_final(store: SQLiteStore) -> None:
    """Retrying a queued or running build is refused; unknown ids are not found."""
    claimed = await _running(store)
    with pytest.raises(StoreError, match="only a finished build can be retried"):
        await store.retry(claimed.id)
    with pytest.raises(BuildNotFound):
        await store.retry(999)


async def test_hook_enqueues_with_every_new_build_and_change_not_repeats(
    announcing: SQLiteStore, clock: FakeClock
) -> None:
    """The status hook announces new builds (retries too) and every change, not repeats."""
    store = announcing
    request = make_request()
    first = await store.submit(request)
    await store.submit(request)
    claimed = await store.claim_next()
    assert claimed is not None
    await store.finish(claimed.id, Event.ERROR)
    retried = await store.retry(first.build_id)
    assert await announced(store, clock) == [
        (first.build_id, "queued"),
        (first.build_id, "running"),
        (first.build_id, "errored"),
        (retried.build_id, "queued"),
    ]

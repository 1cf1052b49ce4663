"""Tests of which queued build runs next: trusted first, untrusted ones capped.

Through the real SQLite store's `claim_next` and `submit_superseding`, with the
`runner.jobs.QueuePolicy` it was opened with.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from runner.jobs import Event, QueuePolicy
from runner.notifications import status_notifier
from runner.store import SQLiteStore
from tests.runner.store.samples import FakeClock, make_request
from webhooks.build import BuildRequest, RefKind

pytestmark = pytest.mark.anyio

CAPS = QueuePolicy(max_untrusted_per_author=2, max_untrusted_per_repo=3)


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock."""
    return FakeClock()


@pytest.fixture
async def store(tmp_path: Path, clock: FakeClock) -> AsyncIterator[SQLiteStore]:
    """A store with the test caps, announcing commit statuses."""
    async with SQLiteStore(
        tmp_path / "isorunner.db",
        clock=clock,
        queue=CAPS,
        notify=status_notifier("https://ci.example.org"),
    ) as opened:
        yield opened


_numbers = iter(range(100, 10_000))


def fork_pr(sender: str, repo: str = "owner/profile") -> BuildRequest:
    """A pull request from a fork (untrusted), its own number, from `sender`."""
    return make_request(
        kind=RefKind.PULL_REQUEST,
        pr_number=next(_numbers),
        trusted=False,
        sender=sender,
        repo=repo,
        source_repo=f"{sender}/profile",
    )


async def submit(store: SQLiteStore, request: BuildRequest) -> int:
    """Submit like a delivery does; return the build id."""
    submission, _ = await store.submit_superseding(request)
    return submission.build_id


async def claims(store: SQLiteStore) -> list[int]:
    """Claim builds until none may run; return their ids in order."""
    claimed = []
    while (record := await store.claim_next()) is not None:
        claimed.append(record.id)
    return claimed


async def test_trusted_builds_run_before_untrusted_ones_that_came_first(
    store: SQLiteStore,
) -> None:
    """A release tag and a branch push go before fork PRs queued ahead of them."""
    fork = await submit(store, fork_pr("mallory"))
    tag = await submit(store, make_request(kind=RefKind.TAG, ref="refs/tags/v1"))
    branch = await submit(store, make_request())
    assert await claims(store) == [tag, branch, fork]


async def test_one_author_gets_at_most_its_cap_and_the_rest_waits_saying_why(
    store: SQLiteStore, clock: FakeClock
) -> None:
    """Mallory's third fork PR waits until one of the first two ends; its status says why."""
    first, second, third = [await submit(store, fork_pr("mallory")) for _ in range(3)]
    assert await claims(store) == [first, second]
    waiting = await store.get(third)
    assert waiting is not None
    reason = (
        "waiting: 2 untrusted builds of mallory are queued or running ahead of it"
        " (sandbox.max_untrusted_per_author = 2)"
    )
    assert waiting.detail == reason
    statuses = [
        n.payload for n in await store.due_notifications(clock.now, 100) if n.build_id == third
    ]
    assert statuses[0]["description"] == reason
    await store.finish(first, Event.SUCCEED)
    assert await claims(store) == [third]


async def test_one_author_never_holds_up_another(store: SQLiteStore) -> None:
    """Bob's fork PR runs before Mallory's capped third one, though it came after."""
    mallory = [await submit(store, fork_pr("mallory")) for _ in range(3)]
    bob = await submit(store, fork_pr("bob"))
    assert await claims(store) == [*mallory[:2], bob]


async def test_one_repository_gets_at_most_its_cap_whoever_sends(store: SQLiteStore) -> None:
    """Four senders, one fork PR each: three run, the fourth waits for the repository's cap."""
    builds = [await submit(store, fork_pr(name)) for name in ("a", "b", "c", "d")]
    other = await submit(store, fork_pr("e", repo="owner/other"))
    assert await claims(store) == [*builds[:3], other]
    record = await store.get(builds[3])
    assert record is not None
    assert "sandbox.max_untrusted_per_repo = 3" in record.detail

"""Tests of `runner.store.lines`: the newest push of a line builds, whatever the order.

Each test plays pushes (edges `previous_sha -> commit`) into a real SQLite store through
`submit_superseding`, the path every delivery takes, and checks which builds are left
to run. Commits are named by letters; `X` is the commit before the first push.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from runner.jobs import Event
from runner.store import SQLiteStore
from tests.runner.store.samples import FakeClock, make_request
from webhooks.build import BuildState, Forge, RefKind

pytestmark = pytest.mark.anyio

SHA = {name: f"{ord(name):040x}" for name in "XABCD"}


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    """An open store on a fresh file."""
    async with SQLiteStore(tmp_path / "isorunner.db", clock=FakeClock()) as opened:
        yield opened


class Line:
    """One branch or pull request of one forge, pushed to edge by edge."""

    def __init__(self, store: SQLiteStore, forge: Forge, kind: RefKind) -> None:
        self.store = store
        self.forge = forge
        self.kind = kind

    async def push(self, previous: str | None, commit: str) -> int:
        """Deliver a push `previous -> commit`; return the build it was answered with."""
        request = make_request(
            forge=self.forge,
            kind=self.kind,
            pr_number=7 if self.kind is RefKind.PULL_REQUEST else None,
            commit_sha=SHA[commit],
            previous_sha=SHA[previous] if previous else None,
        )
        submission, _ = await self.store.submit_superseding(request)
        return submission.build_id

    async def live(self) -> list[str]:
        """The commits of the line's queued and running builds, oldest first."""
        names = {sha: name for name, sha in SHA.items()}
        found = []
        for record in reversed(await self.store.list_builds()):
            request = record.request
            mine = (request.forge, request.kind, request.ref) == (
                self.forge,
                self.kind,
                "refs/heads/main",
            )
            if mine and record.state in (BuildState.QUEUED, BuildState.RUNNING):
                found.append(names.get(request.commit_sha, request.commit_sha))
        return found

    async def detail(self, build_id: int) -> str:
        """The detail of one build."""
        record = await self.store.get(build_id)
        assert record is not None
        return record.detail


LINES = [
    (Forge.GITHUB, RefKind.BRANCH),
    (Forge.GITHUB, RefKind.PULL_REQUEST),
    (Forge.GITLAB, RefKind.BRANCH),
    (Forge.GITLAB, RefKind.PULL_REQUEST),
]
IDS = ["github-push", "github-pr", "gitlab-push", "gitlab-mr"]


@pytest.mark.parametrize(("forge", "kind"), LINES, ids=IDS)
async def test_force_push_back_to_an_earlier_commit_builds_it(
    store: SQLiteStore, forge: Forge, kind: RefKind
) -> None:
    """A, B, then A forced (B -> A): A builds, B is cancelled as superseded by A."""
    line = Line(store, forge, kind)
    await line.push("X", "A")
    b = await line.push("A", "B")
    again = await line.push("B", "A")
    assert await line.live() == ["A"]
    assert again != b
    assert await line.detail(b) == f"superseded by {SHA['A'][:7]}"


@pytest.mark.parametrize(("forge", "kind"), LINES, ids=IDS)
async def test_force_push_back_to_a_built_commit_stops_the_replaced_build(
    store: SQLiteStore, forge: Forge, kind: RefKind
) -> None:
    """A built, then B, then A forced: A's build answers, and B's build is cancelled."""
    line = Line(store, forge, kind)
    a = await line.push("X", "A")
    claimed = await store.claim_next()
    assert claimed is not None
    await store.finish(a, Event.SUCCEED)
    b = await line.push("A", "B")
    assert await line.push("B", "A") == a
    assert await line.live() == []
    assert await line.detail(b) == f"superseded by {SHA['A'][:7]}"


@pytest.mark.parametrize(("forge", "kind"), LINES, ids=IDS)
async def test_two_pushes_delivered_in_reverse_build_the_later_one(
    store: SQLiteStore, forge: Forge, kind: RefKind
) -> None:
    """A then B, delivered B first: B builds, A is cancelled as delivered late."""
    line = Line(store, forge, kind)
    await line.push("A", "B")
    a = await line.push("X", "A")
    assert await line.live() == ["B"]
    assert await line.detail(a) == (
        f"superseded by {SHA['B'][:7]}, pushed after it (delivered late)"
    )


@pytest.mark.parametrize(("forge", "kind"), LINES, ids=IDS)
async def test_three_pushes_with_the_middle_one_last_build_the_last(
    store: SQLiteStore, forge: Forge, kind: RefKind
) -> None:
    """A, B, C delivered A, C, B: C builds; A is superseded, B delivered late."""
    line = Line(store, forge, kind)
    await line.push("X", "A")
    await line.push("B", "C")
    b = await line.push("A", "B")
    assert await line.live() == ["C"]
    assert "delivered late" in await line.detail(b)


@pytest.mark.parametrize(("forge", "kind"), LINES, ids=IDS)
async def test_force_push_round_a_cycle_builds_its_end(
    store: SQLiteStore, forge: Forge, kind: RefKind
) -> None:
    """A, B, C, then back to A (C -> A): A builds, though B was pushed from A."""
    line = Line(store, forge, kind)
    await line.push("X", "A")
    await line.push("A", "B")
    await line.push("B", "C")
    await line.push("C", "A")
    assert await line.live() == ["A"]


async def test_a_pull_request_opened_late_after_its_update_stays_cancelled(
    store: SQLiteStore,
) -> None:
    """An `opened` (no before) delivered after the `synchronize` from it is late."""
    line = Line(store, Forge.GITHUB, RefKind.PULL_REQUEST)
    await line.push("A", "B")
    opened = await line.push(None, "A")
    assert await line.live() == ["B"]
    assert "delivered late" in await line.detail(opened)


async def test_the_same_push_told_by_a_second_webhook_changes_nothing(
    store: SQLiteStore,
) -> None:
    """A push of A told again under another hook's id, after B, never stops B."""
    line = Line(store, Forge.GITHUB, RefKind.BRANCH)
    a = await line.push("X", "A")
    claimed = await store.claim_next()
    assert claimed is not None
    await store.finish(a, Event.SUCCEED)
    await line.push("A", "B")
    assert await line.push("X", "A") == a  # A's build stands for it: nothing more
    assert await line.live() == ["B"]


async def test_an_old_push_told_again_after_its_build_was_superseded_is_late(
    store: SQLiteStore,
) -> None:
    """A (superseded by B) told again under another id makes a build cancelled as late."""
    line = Line(store, Forge.GITHUB, RefKind.BRANCH)
    await line.push("X", "A")
    await line.push("A", "B")
    again = await line.push("X", "A")
    assert await line.live() == ["B"]
    assert "delivered late" in await line.detail(again)


async def test_lines_never_mix_and_tags_have_none(store: SQLiteStore) -> None:
    """Pushes to another branch, another PR or a tag leave a line's build alone."""
    main = Line(store, Forge.GITHUB, RefKind.BRANCH)
    await main.push("X", "A")
    await store.submit_superseding(make_request(ref="refs/heads/dev", previous_sha=SHA["A"]))
    await store.submit_superseding(
        make_request(kind=RefKind.TAG, ref="refs/tags/v1", previous_sha=SHA["A"])
    )
    gitlab = Line(store, Forge.GITLAB, RefKind.BRANCH)
    await gitlab.push("A", "B")
    assert "A" in await main.live()

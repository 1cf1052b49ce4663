"""Which push is the newest on a branch or pull request, and what that cancels.

Blocking I/O on a `sqlite3.Connection` it is given, inside the writer's transaction
(`runner.store.deliveries.submit_superseding` and `supersede` call it).

Theory of operation
-------------------

A line is a branch (forge, repo, `refs/heads/<name>`) or a pull/merge request (forge,
repo, number). Tags have no line: a tag publishes, and is never superseded.

Every build on a line comes from a push: an edge `previous_sha -> commit_sha`, as the
forge says it (GitHub push `before` -> `head_commit.id`; GitHub `synchronize` `before`
-> `pull_request.head.sha`; GitLab push `before` -> `checkout_sha`; GitLab merge
request `oldrev` -> `last_commit.id`). A new branch or request has no `previous_sha`.
The head of the line is the commit of its newest push; its build runs, every other
queued or running build of the line is cancelled.

Which push R is the newest is decided from these edges, and from the order in which
deliveries arrived (build ids) only where the edges say nothing:

1. R comes after every build it chains back to: the build of R's `previous_sha`, then
   the build of that one's `previous_sha`, and so on (`MAX_CHAIN` steps, each to the
   newest build of that commit). A force-push back to an earlier commit A after B
   (`B -> A`) chains back through B, so it comes after B even though B was pushed from
   A: A, B, A(forced) builds A.
2. R comes before a build S that it does not chain back to when S was pushed from R's
   commit (`S.previous_sha == R.commit_sha`): S moved the line on from R, whose
   delivery arrived late. A, B delivered as B, A builds B; A, B, C with B delivered
   last builds C.
3. Otherwise arrival counts: R comes after the builds stored before it.

If R comes before some build, R is not the head: its own new build is cancelled
"superseded by <sha>, pushed after it (delivered late)". Otherwise R's commit is the
head and every other queued or running build of the line stored before R is cancelled
"superseded by <sha>" (builds of R's own commit never are).

When R repeats a commit that already has a build, that build is R's build. If R is
a new push (its `previous_sha` differs from that build's: a force-push back to a
commit built before), R arrived now: every other queued or running build of the line
is cancelled, so the commit it replaced stops. If R is the same push told again (the
same `previous_sha`: a second webhook on the repository, with its own delivery id),
nothing changes.

What the forges give and do not give: GitHub sends `forced` but GitLab does not, and
neither numbers pushes; the rules above need neither. A history that the stored
builds cannot tell apart (the same commit pushed twice, the second delivery folded
into the first build, with a third push delivered in between out of order) is decided
by arrival.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from webhooks.build import BuildRequest, BuildState, RefKind

MAX_CHAIN: Final = 64
"""The most builds followed back through `previous_sha` (a bound on the walk's work)."""


@dataclass(frozen=True, slots=True)
class Line:
    """The SQL condition that selects one line's builds, and its values."""

    where: str
    values: tuple[object, ...]

    @classmethod
    def of(cls, request: BuildRequest) -> Line | None:
        """The line of `request`, or None for a tag (which has none)."""
        if request.kind is RefKind.TAG:
            return None
        key: object
        if request.kind is RefKind.BRANCH:
            where, key = "kind = ? AND ref = ?", request.ref
        else:
            where, key = "kind = ? AND pr_number = ?", request.pr_number
        return cls(
            f"forge = ? AND repo = ? AND {where}",
            (request.forge.value, request.repo, request.kind.value, key),
        )


Cancel = Callable[[int, str], None]
"""Cancels one build with a detail (applies `Event.CANCEL` in the same transaction)."""


def chained_back(
    conn: sqlite3.Connection, line: Line, request: BuildRequest, anchor: int
) -> set[int]:
    """The builds `request` chains back to through `previous_sha` (rule 1)."""
    found: set[int] = set()
    wanted = request.previous_sha
    for _ in range(MAX_CHAIN):
        if wanted is None:
            break
        row = conn.execute(
            f"SELECT id, previous_sha FROM builds WHERE {line.where} AND commit_sha = ?"  # noqa: S608 -- fixed clause, values bound
            " AND id != ? ORDER BY id DESC",
            (*line.values, wanted, anchor),
        ).fetchall()
        step = next((r for r in row if int(r[0]) not in found), None)
        if step is None:
            break
        found.add(int(step[0]))
        wanted = None if step[1] is None else str(step[1])
    return found


def pushed_after(
    conn: sqlite3.Connection, line: Line, request: BuildRequest, anchor: int, behind: set[int]
) -> tuple[int, str] | None:
    """A build pushed from `request`'s commit that `request` does not chain back to (rule 2).

    Returns:
        Its id and commit, or None.
    """
    rows = conn.execute(
        f"SELECT id, commit_sha FROM builds WHERE {line.where} AND previous_sha = ?"  # noqa: S608 -- fixed clause, values bound
        " AND id != ? ORDER BY id DESC",
        (*line.values, request.commit_sha, anchor),
    ).fetchall()
    return next(((int(r[0]), str(r[1])) for r in rows if int(r[0]) not in behind), None)


def _told_again(conn: sqlite3.Connection, line: Line, request: BuildRequest, anchor: int) -> bool:
    """Whether `anchor` is on the line and came from the same push as `request`."""
    row = conn.execute(
        f"SELECT previous_sha FROM builds WHERE {line.where} AND id = ?",  # noqa: S608 -- fixed clause, values bound
        (*line.values, anchor),
    ).fetchone()
    return row is not None and row[0] == request.previous_sha


def supersede_on_line(
    conn: sqlite3.Connection,
    request: BuildRequest,
    anchor: int,
    *,
    arrived_now: bool,
    cancel: Cancel,
) -> list[int]:
    """Apply the rules of the module docstring to `request`, stored as build `anchor`.

    Args:
        conn: The writer's connection, inside its transaction.
        request: The push that arrived.
        anchor: The build that `request` is stored as (new, or the one it repeats).
        arrived_now: True when `anchor` is an older build that `request` repeats by
            commit (R arrived after every stored build); False when `anchor` is
            `request`'s own build, whose id is its place in the arrival order.
        cancel: Cancels one build with a detail.

    Returns:
        The ids cancelled, running builds included.
    """
    line = Line.of(request)
    if line is None:
        return []
    if arrived_now and _told_again(conn, line, request, anchor):
        return []
    behind = chained_back(conn, line, request, anchor)
    later = pushed_after(conn, line, request, anchor, behind)
    if later is not None:
        if arrived_now:
            return []  # never cancel an existing build for a push that came before it
        state = conn.execute("SELECT state FROM builds WHERE id = ?", (anchor,)).fetchone()
        if state is None or BuildState(str(state[0])).is_final:
            return []
        cancel(anchor, f"superseded by {later[1][:7]}, pushed after it (delivered late)")
        return [anchor]
    before = "" if arrived_now else " AND id < ?"
    rows = conn.execute(
        f"SELECT id FROM builds WHERE {line.where} AND id != ? AND commit_sha != ?"  # noqa: S608 -- fixed clauses, values bound
        f" AND state IN (?, ?){before} ORDER BY id",
        (
            *line.values,
            anchor,
            request.commit_sha,
            BuildState.QUEUED.value,
            BuildState.RUNNING.value,
            *(() if arrived_now else (anchor,)),
        ),
    ).fetchall()
    cancelled = [int(row[0]) for row in rows]
    for build_id in cancelled:
        cancel(build_id, f"superseded by {request.commit_sha[:7]}")
    return cancelled

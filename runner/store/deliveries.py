"""What a delivery becomes in the store: a new build, or the build it repeats.

Blocking I/O on a `sqlite3.Connection` it is given, inside the writer's group
transaction (`runner.store.writer`), which commits it. Deduplication, and which push is
the newest on its line (`runner.store.lines`), are decided here, in the same
transaction that writes their outcome, so concurrent deliveries cannot race past them.

Every delivery answered with a build is recorded per forge (`deliveries`), also when
its answer was another delivery's build: sent again, byte for byte, it gets the same
answer for as long as that build is kept, whatever happened to the build meanwhile
(cancelled, superseded). Ids of different forges never meet.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import datetime

from runner.exceptions import StoreError
from runner.jobs import Event, NotifyFn, QueuePolicy
from runner.store.lines import supersede_on_line
from runner.store.ops import announce, apply_event, require_build, set_detail, waiting_reason
from runner.store.schema import encode_time
from webhooks.build import BuildRequest, BuildState, RefKind, Submission

# A stored build that a request repeats: the same delivery (per forge, answered
# before), else the same commit on a branch or pull request (or the same tag and
# commit for a tag), not cancelled.
_SAME_COMMIT = """
    forge = :forge AND repo = :repo AND commit_sha = :sha AND state != :cancelled
    AND CASE WHEN :is_tag THEN kind = :tag AND ref = :ref ELSE kind != :tag END
"""
_ANSWERED = "SELECT build_id FROM deliveries WHERE forge = :forge AND delivery_id = :delivery"
_FIND_DUPLICATE = f"""
    SELECT id FROM (
        SELECT 0 AS rank, build_id AS id FROM deliveries
            WHERE forge = :forge AND delivery_id = :delivery
        UNION ALL
        SELECT 1, id FROM (
            SELECT id FROM builds WHERE {_SAME_COMMIT} ORDER BY id DESC LIMIT 1
        )
    ) ORDER BY rank LIMIT 1
"""  # noqa: S608 -- constant text, values bound
# The common case (a new build) in a single statement, hence a single step: it runs
# on the event loop, for every delivery. `builds.delivery_id` is unique across forges;
# the rare id that another forge used already is stored as `<forge>:<id>` there (the
# deliveries table keeps the id as sent).
_INSERT_UNLESS_DUPLICATE = f"""
    INSERT INTO builds (forge, repo, commit_sha, ref, kind, pr_number, trusted, commit_time,
        delivery_id, source_repo, project_id, web_url, title, sender, previous_sha, state,
        detail, created_at)
    SELECT :forge, :repo, :sha, :ref, :kind, :pr_number, :trusted, :commit_time,
        CASE WHEN EXISTS (SELECT 1 FROM builds WHERE delivery_id = :delivery)
            THEN :forge || ':' || :delivery ELSE :delivery END,
        :source_repo, :project_id, :web_url, :title, :sender, :previous_sha,
        :state, '', :created_at
    WHERE NOT EXISTS ({_ANSWERED})
    AND NOT EXISTS (SELECT 1 FROM builds WHERE {_SAME_COMMIT})
"""  # noqa: S608 -- constant text, values bound
_RECORD_DELIVERY = (
    "INSERT OR IGNORE INTO deliveries (forge, delivery_id, build_id) VALUES (?, ?, ?)"
)


def find_duplicate(conn: sqlite3.Connection, request: BuildRequest) -> int | None:
    """Return the id of the stored build that `request` repeats, or None.

    The rules of `webhooks.build.BuildSink.submit`: the build a delivery of the same
    forge and id was answered with (kept as long as that build is); else, for a branch
    or pull request, the newest non-cancelled branch or pull request build of the same
    forge, repo and commit; else, for a tag, the newest non-cancelled tag build of the
    same forge, repo, commit and tag.
    """
    row = conn.execute(_FIND_DUPLICATE, _dedupe_params(request)).fetchone()
    return None if row is None else int(row[0])


def submit(
    conn: sqlite3.Connection,
    now: datetime,
    request: BuildRequest,
    notify: NotifyFn | None,
    queue: QueuePolicy,
) -> Submission:
    """Store `request` as a queued build unless it repeats a stored one.

    A new untrusted build past a cap of `queue` is stored with the reason it waits as
    its detail, so that its first (pending) status says why.
    """
    return _submit(conn, now, request, notify, queue)[0]


def _submit(
    conn: sqlite3.Connection,
    now: datetime,
    request: BuildRequest,
    notify: NotifyFn | None,
    queue: QueuePolicy,
) -> tuple[Submission, bool]:
    """`submit`; also say whether the delivery itself had been answered before."""
    params = _dedupe_params(request)
    params.update(
        kind=request.kind.value,
        pr_number=request.pr_number,
        trusted=int(request.trusted),
        commit_time=encode_time(request.commit_time),
        source_repo=request.source_repo,
        project_id=request.project_id,
        web_url=request.web_url,
        title=request.title,
        sender=request.sender,
        previous_sha=request.previous_sha,
        state=BuildState.QUEUED.value,
        created_at=encode_time(now),
    )
    cursor = conn.execute(_INSERT_UNLESS_DUPLICATE, params)
    if cursor.rowcount == 0:
        answered = conn.execute(_ANSWERED, params).fetchone()
        if answered is not None:
            return Submission(int(answered[0]), created=False), True
        duplicate = find_duplicate(conn, request)
        assert duplicate is not None  # the INSERT found one in this same transaction
        conn.execute(_RECORD_DELIVERY, (request.forge.value, request.delivery_id, duplicate))
        return Submission(duplicate, created=False), False
    build_id = cursor.lastrowid
    assert build_id is not None  # an INSERT into a rowid table always sets it
    conn.execute(_RECORD_DELIVERY, (request.forge.value, request.delivery_id, build_id))
    if not request.trusted and (reason := waiting_reason(conn, build_id, queue)):
        set_detail(conn, build_id, reason)
    announce(conn, now, build_id, notify)
    return Submission(build_id, created=True), False


def submit_superseding(
    conn: sqlite3.Connection,
    now: datetime,
    request: BuildRequest,
    notify: NotifyFn | None,
    queue: QueuePolicy,
) -> tuple[Submission, list[int]]:
    """`submit` `request`, then decide the newest push of its line (`runner.store.lines`).

    A delivery answered before changes nothing. A new build, or a push repeating a
    commit that has a build already (a force-push back to it), supersedes.
    """
    submission, repeat = _submit(conn, now, request, notify, queue)
    if repeat:
        return submission, []
    return submission, supersede_on_line(
        conn,
        request,
        submission.build_id,
        arrived_now=not submission.created,
        cancel=_canceller(conn, now, notify),
    )


def supersede(
    conn: sqlite3.Connection, now: datetime, request: BuildRequest, notify: NotifyFn | None
) -> list[int]:
    """Cancel what `request`'s stored build makes obsolete on its line, or that build.

    The rules are those of `runner.store.lines`: `request` is the newest push of its
    branch or pull request unless a stored build moved the line on from its commit; the
    newest push cancels the line's older queued and running builds, a late one only its
    own build. Tags have no line. Returns the ids cancelled.

    Raises:
        StoreError: `request` was never submitted.
    """
    anchor = find_duplicate(conn, request)
    if anchor is None:
        msg = (
            f"cannot supersede for delivery {request.delivery_id!r}: it is not stored;"
            " submit the request first"
        )
        raise StoreError(msg)
    record = require_build(conn, anchor)
    own = record.request.delivery_id in (
        request.delivery_id,
        f"{request.forge.value}:{request.delivery_id}",
    )
    return supersede_on_line(
        conn, request, anchor, arrived_now=not own, cancel=_canceller(conn, now, notify)
    )


def _canceller(
    conn: sqlite3.Connection, now: datetime, notify: NotifyFn | None
) -> Callable[[int, str], None]:
    def cancel(build_id: int, detail: str) -> None:
        apply_event(conn, now, build_id, Event.CANCEL, detail=detail, notify=notify)

    return cancel


def _dedupe_params(request: BuildRequest) -> dict[str, object]:
    return {
        "delivery": request.delivery_id,
        "forge": request.forge.value,
        "repo": request.repo,
        "sha": request.commit_sha,
        "is_tag": request.kind is RefKind.TAG,
        "ref": request.ref,
        "tag": RefKind.TAG.value,
        "cancelled": BuildState.CANCELLED.value,
    }

"""The SQLite job store's operations, as plain functions of a connection and their inputs.

Blocking I/O on a `sqlite3.Connection` it is given. Write operations expect to run
inside the writer's group transaction (`runner.store.writer`), which commits them;
read operations run on a reader connection in autocommit mode. Deduplication and the
lifecycle (`runner.jobs.transition`) are decided here, inside the same transaction
that writes their outcome, so concurrent callers cannot race past them.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from collections.abc import Mapping, Sequence
from datetime import datetime

from runner.exceptions import BuildNotFound, NotificationNotFound, StoreError
from runner.jobs import RELEASE, Event, Notification, NotifyFn, transition
from runner.store import releases
from runner.store.schema import (
    BUILD_COLUMNS,
    NOTIFICATION_COLUMNS,
    build_from_row,
    decode_packages,
    encode_packages,
    encode_time,
    notification_from_row,
    request_params,
)
from webhooks.build import (
    BuildRecord,
    BuildRequest,
    BuildState,
    PackageEntry,
    RefKind,
    Submission,
)

_INSERT_BUILD = (
    "INSERT INTO builds (forge, repo, commit_sha, ref, kind, pr_number, trusted, commit_time,"
    " delivery_id, source_repo, project_id, web_url, title, sender, previous_sha, state,"
    " detail, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, '', ?)"
)
# A stored build that a request repeats: the same delivery, else the same commit on a
# branch or pull request (or the same tag and commit for a tag), not cancelled.
_SAME_COMMIT = """
    forge = :forge AND repo = :repo AND commit_sha = :sha AND state != :cancelled
    AND CASE WHEN :is_tag THEN kind = :tag AND ref = :ref ELSE kind != :tag END
"""
_FIND_DUPLICATE = f"""
    SELECT id FROM (
        SELECT 0 AS rank, id FROM builds WHERE delivery_id = :delivery
        UNION ALL
        SELECT 1, id FROM (
            SELECT id FROM builds WHERE {_SAME_COMMIT} ORDER BY id DESC LIMIT 1
        )
    ) ORDER BY rank LIMIT 1
"""  # noqa: S608 -- constant text, values bound
# The common case (a new build) in a single statement, hence a single step: it runs
# on the event loop, for every delivery.
_INSERT_UNLESS_DUPLICATE = f"""
    INSERT INTO builds (forge, repo, commit_sha, ref, kind, pr_number, trusted, commit_time,
        delivery_id, source_repo, project_id, web_url, title, sender, previous_sha, state,
        detail, created_at)
    SELECT :forge, :repo, :sha, :ref, :kind, :pr_number, :trusted, :commit_time,
        :delivery, :source_repo, :project_id, :web_url, :title, :sender, :previous_sha,
        :state, '', :created_at
    WHERE NOT EXISTS (SELECT 1 FROM builds WHERE delivery_id = :delivery)
    AND NOT EXISTS (SELECT 1 FROM builds WHERE {_SAME_COMMIT})
"""  # noqa: S608 -- constant text, values bound

# ---------------------------------------------------------------- reads


def get(conn: sqlite3.Connection, build_id: int) -> BuildRecord | None:
    """Return the build with this id (its packages and release included), or None."""
    query = f"SELECT {BUILD_COLUMNS} FROM builds WHERE id = ?"  # noqa: S608 -- constant columns
    row = conn.execute(query, (build_id,)).fetchone()
    if row is None:
        return None
    record = releases.attach(conn, [build_from_row(row)])[0]
    packages = conn.execute(
        "SELECT packages FROM build_packages WHERE build_id = ?", (build_id,)
    ).fetchone()
    if packages is None:
        return record
    return dataclasses.replace(record, packages=decode_packages(str(packages[0])))


def list_builds(
    conn: sqlite3.Connection,
    *,
    repo: str | None,
    state: BuildState | None,
    limit: int,
    before_id: int | None,
) -> list[BuildRecord]:
    """Return builds newest first, filtered, starting below `before_id` (keyset paging)."""
    clauses: list[str] = []
    params: list[object] = []
    if repo is not None:
        clauses.append("repo = ?")
        params.append(repo)
    if state is not None:
        clauses.append("state = ?")
        params.append(state.value)
    if before_id is not None:
        clauses.append("id < ?")
        params.append(before_id)
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    rows = conn.execute(
        f"SELECT {BUILD_COLUMNS} FROM builds {where} ORDER BY id DESC LIMIT ?",  # noqa: S608 -- fixed clauses, values bound
        (*params, limit),
    ).fetchall()
    return releases.attach(conn, [build_from_row(row) for row in rows])


def count_by_state(conn: sqlite3.Connection) -> dict[BuildState, int]:
    """Return how many builds are in each state, zero included."""
    counts = dict.fromkeys(BuildState, 0)
    for state, count in conn.execute("SELECT state, COUNT(*) FROM builds GROUP BY state"):
        counts[BuildState(state)] = int(count)
    return counts


def due_notifications(
    conn: sqlite3.Connection, now: datetime, limit: int, kinds: Sequence[str] | None = None
) -> list[Notification]:
    """Return due notifications, earliest first, at most one per build and kind (its oldest).

    Only the oldest pending notification of each build and kind is ever due, so a
    build's statuses are delivered in the order they were enqueued even when an early
    one fails and waits: a "pending" status can never overtake the final one. Kinds
    are independent: a release waiting for a forge outage to end holds back no status.

    Args:
        conn: A reader connection.
        now: Notifications due at or before this time are returned.
        limit: The most to return.
        kinds: Only these kinds; None for every kind.
    """
    clause = ""
    params: tuple[str, ...] = ()
    if kinds is not None:
        clause = f" AND n.kind IN ({', '.join('?' * len(kinds))})"
        params = tuple(kinds)
    rows = conn.execute(
        f"SELECT {NOTIFICATION_COLUMNS} FROM notifications AS n"  # noqa: S608 -- constant columns, placeholders
        f" WHERE n.next_attempt_at <= ?{clause}"
        " AND n.id = (SELECT MIN(id) FROM notifications"
        " WHERE build_id = n.build_id AND kind = n.kind)"
        " ORDER BY n.next_attempt_at, n.id LIMIT ?",
        (encode_time(now), *params, limit),
    ).fetchall()
    return [notification_from_row(row) for row in rows]


# ---------------------------------------------------------------- writes


def find_duplicate(conn: sqlite3.Connection, request: BuildRequest) -> int | None:
    """Return the id of the stored build that `request` repeats, or None.

    The rules of `webhooks.build.BuildSink.submit`: the same delivery id; else, for a
    branch or pull request, the newest non-cancelled branch or pull request build of
    the same forge, repo and commit; else, for a tag, the newest non-cancelled tag
    build of the same forge, repo, commit and tag.
    """
    row = conn.execute(_FIND_DUPLICATE, _dedupe_params(request)).fetchone()
    return None if row is None else int(row[0])


def submit(
    conn: sqlite3.Connection, now: datetime, request: BuildRequest, notify: NotifyFn | None
) -> Submission:
    """Store `request` as a queued build unless it repeats a stored one."""
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
        duplicate = find_duplicate(conn, request)
        assert duplicate is not None  # the INSERT found one in this same transaction
        return Submission(duplicate, created=False)
    build_id = cursor.lastrowid
    assert build_id is not None  # an INSERT into a rowid table always sets it
    _notify(conn, now, build_id, notify)
    return Submission(build_id, created=True)


def submit_superseding(
    conn: sqlite3.Connection, now: datetime, request: BuildRequest, notify: NotifyFn | None
) -> tuple[Submission, list[int]]:
    """`submit` `request`; if that made a new build, `supersede` for it too."""
    submission = submit(conn, now, request, notify)
    if not submission.created:
        return submission, []
    return submission, supersede(conn, now, request, notify)


def insert_build(
    conn: sqlite3.Connection, now: datetime, request: BuildRequest, notify: NotifyFn | None
) -> int:
    """Insert `request` as a new queued build, without deduplication; return its id."""
    cursor = conn.execute(
        _INSERT_BUILD, (*request_params(request), BuildState.QUEUED.value, encode_time(now))
    )
    build_id = cursor.lastrowid
    assert build_id is not None  # an INSERT into a rowid table always sets it
    _notify(conn, now, build_id, notify)
    return build_id


def retry(
    conn: sqlite3.Connection, now: datetime, build_id: int, notify: NotifyFn | None
) -> Submission:
    """Queue a new build with the request of final build `build_id`.

    The copy gets the delivery id `<original>#retry-<new id>`, so that it is unique
    and a later redelivery of the original still finds the original. `notify` sees the
    copy once it has that final delivery id.
    """
    record = _require(conn, build_id)
    if not record.state.is_final:
        # Retrying a build that may still run would build the commit twice at once.
        msg = (
            f"build {record.id} is {record.state.value}: only a finished build can be"
            " retried; cancel it first to build it again"
        )
        raise StoreError(msg)
    # A placeholder first, unique because the writer runs one write at a time and the
    # UPDATE below replaces it before the transaction commits.
    placeholder = dataclasses.replace(
        record.request, delivery_id=f"{record.request.delivery_id}#retry"
    )
    new_id = insert_build(conn, now, placeholder, None)
    conn.execute(
        "UPDATE builds SET delivery_id = ? WHERE id = ?",
        (f"{record.request.delivery_id}#retry-{new_id}", new_id),
    )
    _notify(conn, now, new_id, notify)
    return Submission(new_id, created=True)


def apply_event(
    conn: sqlite3.Connection,
    now: datetime,
    build_id: int,
    event: Event,
    *,
    detail: str | None,
    notify: NotifyFn | None,
) -> BuildRecord:
    """Apply `event` to build `build_id` through the lifecycle table; return its new record.

    Entering RUNNING sets `started_at`; going back to QUEUED clears it; entering a
    final state sets `finished_at`. `detail=None` leaves the detail unchanged.
    """
    record = _require(conn, build_id)
    new_state = transition(record.state, event, build_id=build_id)
    stamp = encode_time(now)
    started = (
        stamp
        if new_state is BuildState.RUNNING
        else None
        if new_state is BuildState.QUEUED
        else _encode_optional(record.started_at)
    )
    finished = stamp if new_state.is_final else None
    conn.execute(
        "UPDATE builds SET state = ?, detail = COALESCE(?, detail), started_at = ?,"
        " finished_at = ? WHERE id = ?",
        (new_state.value, detail, started, finished, build_id),
    )
    _notify(conn, now, build_id, notify)
    return _require(conn, build_id)


def claim_next(
    conn: sqlite3.Connection, now: datetime, notify: NotifyFn | None
) -> BuildRecord | None:
    """Move the oldest queued build to RUNNING and return it, or None if none is queued."""
    row = conn.execute(
        "SELECT id FROM builds WHERE state = ? ORDER BY id LIMIT 1", (BuildState.QUEUED.value,)
    ).fetchone()
    if row is None:
        return None
    return apply_event(conn, now, int(row[0]), Event.START, detail="", notify=notify)


def set_detail(conn: sqlite3.Connection, build_id: int, detail: str) -> None:
    """Replace the detail note of build `build_id`, whatever its state."""
    cursor = conn.execute("UPDATE builds SET detail = ? WHERE id = ?", (detail, build_id))
    if cursor.rowcount == 0:
        raise BuildNotFound(build_id)


def set_packages(conn: sqlite3.Connection, build_id: int, packages: Sequence[PackageEntry]) -> None:
    """Record (or replace) the packages of build `build_id`."""
    if conn.execute("SELECT 1 FROM builds WHERE id = ?", (build_id,)).fetchone() is None:
        raise BuildNotFound(build_id)
    conn.execute(
        "INSERT INTO build_packages (build_id, packages) VALUES (?, ?)"
        " ON CONFLICT (build_id) DO UPDATE SET packages = excluded.packages",
        (build_id, encode_packages(packages)),
    )


def supersede(
    conn: sqlite3.Connection, now: datetime, request: BuildRequest, notify: NotifyFn | None
) -> list[int]:
    """Cancel the queued or running builds that `request`'s stored build makes obsolete.

    Obsolete means older (a lower id) than the build `request` was stored as, on the
    same line, for another commit. A line is a branch (forge, repo, branch ref) or a
    pull request (forge, repo, number); tags have no line and are never superseded.

    A delivery that arrives late is the exception: when a build on the line already
    names `request`'s commit as its `previous_sha` (a later push moved the line on
    from it), `request`'s own build is the obsolete one, so it alone is cancelled.
    Returns the ids cancelled.
    """
    if request.kind is RefKind.TAG:
        return []
    anchor = find_duplicate(conn, request)
    if anchor is None:
        msg = (
            f"cannot supersede for delivery {request.delivery_id!r}: it is not stored;"
            " submit the request first"
        )
        raise StoreError(msg)
    line, key = (
        ("ref = ?", request.ref)
        if request.kind is RefKind.BRANCH
        else ("pr_number = ?", request.pr_number)
    )
    later = conn.execute(
        f"SELECT commit_sha FROM builds WHERE kind = ? AND {line} AND forge = ?"  # noqa: S608 -- fixed clause, values bound
        " AND repo = ? AND previous_sha = ? AND id != ? ORDER BY id DESC LIMIT 1",
        (request.kind.value, key, request.forge.value, request.repo, request.commit_sha, anchor),
    ).fetchone()
    if later is not None:
        detail = f"superseded by {str(later[0])[:7]}, pushed after it (delivered late)"
        apply_event(conn, now, anchor, Event.CANCEL, detail=detail, notify=notify)
        return [anchor]
    rows = conn.execute(
        f"SELECT id FROM builds WHERE forge = ? AND repo = ? AND kind = ? AND {line}"  # noqa: S608 -- fixed clause, values bound
        " AND commit_sha != ? AND state IN (?, ?) AND id < ? ORDER BY id",
        (
            request.forge.value,
            request.repo,
            request.kind.value,
            key,
            request.commit_sha,
            BuildState.QUEUED.value,
            BuildState.RUNNING.value,
            anchor,
        ),
    ).fetchall()
    detail = f"superseded by {request.commit_sha[:7]}"
    cancelled = [int(row[0]) for row in rows]
    for build_id in cancelled:
        apply_event(conn, now, build_id, Event.CANCEL, detail=detail, notify=notify)
    return cancelled


def recover_running(
    conn: sqlite3.Connection, now: datetime, requeue: bool, notify: NotifyFn | None
) -> list[BuildRecord]:
    """Send every RUNNING build its start-up recovery event; return the new records."""
    event = Event.RECOVER_REQUEUE if requeue else Event.RECOVER_ERROR
    detail = (
        "re-queued: the service stopped while this build was running"
        if requeue
        else "the service stopped while this build was running"
    )
    rows = conn.execute(
        "SELECT id FROM builds WHERE state = ? ORDER BY id", (BuildState.RUNNING.value,)
    ).fetchall()
    return [
        apply_event(conn, now, int(row[0]), event, detail=detail, notify=notify) for row in rows
    ]


def enqueue_notification(
    conn: sqlite3.Connection,
    now: datetime,
    build_id: int,
    kind: str,
    payload: Mapping[str, object],
) -> int:
    """Add a notification for build `build_id` to the outbox, due now; return its id.

    A `RELEASE` notification also (re)starts the build's release record, `queued`: the
    visible record of a release starts with its outbox entry.
    """
    _require(conn, build_id)
    cursor = conn.execute(
        "INSERT INTO notifications (build_id, kind, payload, next_attempt_at) VALUES (?, ?, ?, ?)",
        (build_id, kind, json.dumps(dict(payload), sort_keys=True), encode_time(now)),
    )
    notification_id = cursor.lastrowid
    assert notification_id is not None  # an INSERT into a rowid table always sets it
    if kind == RELEASE:
        releases.queue(conn, now, build_id, str(payload.get("tag", "")))
    return notification_id


def notification_done(conn: sqlite3.Connection, notification_id: int) -> None:
    """Remove a delivered notification from the outbox."""
    cursor = conn.execute("DELETE FROM notifications WHERE id = ?", (notification_id,))
    if cursor.rowcount == 0:
        raise NotificationNotFound(notification_id)


def notification_failed(
    conn: sqlite3.Connection, notification_id: int, retry_at: datetime, error: str
) -> None:
    """Record a failed delivery attempt and when to try again."""
    cursor = conn.execute(
        "UPDATE notifications SET attempts = attempts + 1, next_attempt_at = ?,"
        " last_error = ? WHERE id = ?",
        (encode_time(retry_at), error, notification_id),
    )
    if cursor.rowcount == 0:
        raise NotificationNotFound(notification_id)


def _notify(
    conn: sqlite3.Connection, now: datetime, build_id: int, notify: NotifyFn | None
) -> None:
    if notify is None:
        return
    record = _require(conn, build_id)
    for kind, payload in notify(record):
        enqueue_notification(conn, now, build_id, kind, payload)


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


def _require(conn: sqlite3.Connection, build_id: int) -> BuildRecord:
    record = get(conn, build_id)
    if record is None:
        raise BuildNotFound(build_id)
    return record


def _encode_optional(moment: datetime | None) -> str | None:
    return None if moment is None else encode_time(moment)

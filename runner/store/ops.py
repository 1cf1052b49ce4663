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
from runner.jobs import (
    RELEASE,
    Event,
    Notification,
    NotifyFn,
    QueuePolicy,
    UntrustedBuild,
    transition,
)
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
    Submission,
)

_INSERT_BUILD = (
    "INSERT INTO builds (forge, repo, commit_sha, ref, kind, pr_number, trusted, commit_time,"
    " delivery_id, source_repo, project_id, web_url, title, sender, previous_sha, state,"
    " detail, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, '', ?)"
)
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


def insert_build(
    conn: sqlite3.Connection, now: datetime, request: BuildRequest, notify: NotifyFn | None
) -> int:
    """Insert `request` as a new queued build, without deduplication; return its id."""
    cursor = conn.execute(
        _INSERT_BUILD, (*request_params(request), BuildState.QUEUED.value, encode_time(now))
    )
    build_id = cursor.lastrowid
    assert build_id is not None  # an INSERT into a rowid table always sets it
    announce(conn, now, build_id, notify)
    return build_id


def retry(
    conn: sqlite3.Connection, now: datetime, build_id: int, notify: NotifyFn | None
) -> Submission:
    """Queue a new build with the request of final build `build_id`.

    The copy gets the delivery id `<original>#retry-<new id>`, so that it is unique
    and a later redelivery of the original still finds the original. `notify` sees the
    copy once it has that final delivery id.
    """
    record = require_build(conn, build_id)
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
    announce(conn, now, new_id, notify)
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
    record = require_build(conn, build_id)
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
    announce(conn, now, build_id, notify)
    return require_build(conn, build_id)


def claim_next(
    conn: sqlite3.Connection, now: datetime, notify: NotifyFn | None, queue: QueuePolicy
) -> BuildRecord | None:
    """Move the next queued build to RUNNING and return it, or None if none may run.

    Next is the oldest trusted build, else the oldest untrusted one that `queue`
    admits (`runner.jobs.QueuePolicy.admissions`).
    """
    row = conn.execute(
        "SELECT id FROM builds WHERE state = ? AND trusted = 1 ORDER BY id LIMIT 1",
        (BuildState.QUEUED.value,),
    ).fetchone()
    chosen = int(row[0]) if row is not None else None
    if chosen is None:
        chosen = next(
            (build_id for build_id, why in queue.admissions(_untrusted(conn)) if not why), None
        )
    if chosen is None:
        return None
    return apply_event(conn, now, chosen, Event.START, detail="", notify=notify)


def waiting_reason(conn: sqlite3.Connection, build_id: int, queue: QueuePolicy) -> str:
    """Why queued untrusted build `build_id` may not run yet, or "" if it may."""
    return next((why for found, why in queue.admissions(_untrusted(conn)) if found == build_id), "")


def _untrusted(conn: sqlite3.Connection) -> list[UntrustedBuild]:
    rows = conn.execute(
        "SELECT id, forge, sender, repo, state FROM builds WHERE trusted = 0 AND state IN (?, ?)",
        (BuildState.QUEUED.value, BuildState.RUNNING.value),
    ).fetchall()
    return [
        UntrustedBuild(
            int(row[0]),
            (str(row[1]), str(row[2])),
            (str(row[1]), str(row[3])),
            running=row[4] == BuildState.RUNNING.value,
        )
        for row in rows
    ]


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
    require_build(conn, build_id)
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


def announce(
    conn: sqlite3.Connection, now: datetime, build_id: int, notify: NotifyFn | None
) -> None:
    """Enqueue what the status hook `notify` says about build `build_id` now."""
    if notify is None:
        return
    record = require_build(conn, build_id)
    for kind, payload in notify(record):
        enqueue_notification(conn, now, build_id, kind, payload)


def require_build(conn: sqlite3.Connection, build_id: int) -> BuildRecord:
    """Return build `build_id`, or raise `BuildNotFound`."""
    record = get(conn, build_id)
    if record is None:
        raise BuildNotFound(build_id)
    return record


def _encode_optional(moment: datetime | None) -> str | None:
    return None if moment is None else encode_time(moment)

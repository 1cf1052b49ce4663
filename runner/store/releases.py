"""The SQLite store's release records: the progress and result of publishing, per build.

Blocking I/O on a `sqlite3.Connection` it is given, like `runner.store.ops`; writes run
inside the writer's group transaction. A release record is created (state `queued`)
in the transaction that enqueues the build's `RELEASE` notification, and changed in
the transaction that records each attempt, together with the notification's own
bookkeeping (`save`), so the page and the outbox never disagree.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Sequence
from datetime import datetime

from runner.exceptions import NotificationNotFound
from runner.store.schema import (
    RELEASE_COLUMNS,
    encode_time,
    release_from_row,
    release_params,
)
from webhooks.build import BuildRecord, Release, ReleaseState

_UPSERT = (
    f"INSERT INTO releases ({RELEASE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"  # noqa: S608 -- constant columns
    " ON CONFLICT (build_id) DO UPDATE SET tag = excluded.tag, state = excluded.state,"
    " attempts = excluded.attempts, next_attempt_at = excluded.next_attempt_at,"
    " last_error = excluded.last_error, url = excluded.url, files = excluded.files,"
    " updated_at = excluded.updated_at, refusals = excluded.refusals"
)


def releases_of(conn: sqlite3.Connection, build_ids: Sequence[int]) -> dict[int, Release]:
    """Return the release records of the given builds that have one."""
    if not build_ids:
        return {}
    marks = ", ".join("?" * len(build_ids))
    rows = conn.execute(
        f"SELECT {RELEASE_COLUMNS} FROM releases WHERE build_id IN ({marks})",  # noqa: S608 -- placeholders only
        tuple(build_ids),
    ).fetchall()
    return dict(release_from_row(row) for row in rows)


def attach(conn: sqlite3.Connection, records: list[BuildRecord]) -> list[BuildRecord]:
    """Return `records` with their release records filled in."""
    found = releases_of(conn, [record.id for record in records])
    return [
        dataclasses.replace(record, release=found[record.id]) if record.id in found else record
        for record in records
    ]


def queue(conn: sqlite3.Connection, now: datetime, build_id: int, tag: str) -> None:
    """Start (or restart) the release record of a build: `queued`, no attempt yet."""
    release = Release(tag=tag, state=ReleaseState.QUEUED, updated_at=now, next_attempt_at=now)
    conn.execute(_UPSERT, release_params(build_id, release))


def save(conn: sqlite3.Connection, notification_id: int, build_id: int, release: Release) -> None:
    """Record an attempt's progress or outcome, and the outbox's part of it, together.

    The release record is replaced by `release`. Its notification is removed once the
    release is final (published or refused); while it is `retrying`, the notification
    takes its attempt count, next attempt time and error; otherwise it is left as is.

    Raises:
        NotificationNotFound: The notification is not in the outbox (any more).
    """
    if release.state.is_final:
        cursor = conn.execute("DELETE FROM notifications WHERE id = ?", (notification_id,))
        found = cursor.rowcount > 0
    elif release.state is ReleaseState.RETRYING:
        assert release.next_attempt_at is not None, "a retrying release has a next attempt"
        cursor = conn.execute(
            "UPDATE notifications SET attempts = ?, next_attempt_at = ?, last_error = ?"
            " WHERE id = ?",
            (
                release.attempts,
                encode_time(release.next_attempt_at),
                release.last_error,
                notification_id,
            ),
        )
        found = cursor.rowcount > 0
    else:
        row = conn.execute("SELECT 1 FROM notifications WHERE id = ?", (notification_id,))
        found = row.fetchone() is not None
    if not found:
        raise NotificationNotFound(notification_id)
    conn.execute(_UPSERT, release_params(build_id, release))


def count_by_state(conn: sqlite3.Connection) -> dict[ReleaseState, int]:
    """Return how many release records are in each state, zero included."""
    counts = dict.fromkeys(ReleaseState, 0)
    for state, count in conn.execute("SELECT state, COUNT(*) FROM releases GROUP BY state"):
        counts[ReleaseState(state)] = int(count)
    return counts


def forget(conn: sqlite3.Connection, build_ids: Sequence[int]) -> None:
    """Delete the release records of builds about to be deleted."""
    conn.executemany("DELETE FROM releases WHERE build_id = ?", [(i,) for i in build_ids])

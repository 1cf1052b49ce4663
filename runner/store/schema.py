"""The SQLite job store's schema, its migrations, and row ↔ value conversion.

Blocking I/O on a `sqlite3.Connection` it is given; it never opens or closes one. The
async store (`runner.store.sqlite`) runs these functions on its own threads.

Schema versions live in `PRAGMA user_version`. `MIGRATIONS[n]` takes a database from
version `n` to `n + 1`; a new version appends one entry and never edits an old one.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Final

from runner.exceptions import StoreError
from runner.jobs import Notification
from webhooks.build import (
    BuildRecord,
    BuildRequest,
    BuildState,
    Forge,
    PackageEntry,
    RefKind,
    Release,
    ReleaseFile,
    ReleaseState,
)

MIGRATIONS: Final[Sequence[Sequence[str]]] = (
    # 0 → 1: builds and the notification outbox.
    (
        """
        CREATE TABLE builds (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            forge TEXT NOT NULL,
            repo TEXT NOT NULL,
            commit_sha TEXT NOT NULL,
            ref TEXT NOT NULL,
            kind TEXT NOT NULL,
            pr_number INTEGER,
            trusted INTEGER NOT NULL,
            commit_time TEXT NOT NULL,
            delivery_id TEXT NOT NULL UNIQUE,
            source_repo TEXT NOT NULL,
            project_id INTEGER,
            web_url TEXT NOT NULL,
            title TEXT NOT NULL,
            sender TEXT NOT NULL,
            state TEXT NOT NULL,
            detail TEXT NOT NULL,
            created_at TEXT NOT NULL,
            started_at TEXT,
            finished_at TEXT
        )
        """,
        "CREATE INDEX builds_by_commit ON builds (forge, repo, commit_sha)",
        "CREATE INDEX builds_by_state ON builds (state, id)",
        "CREATE INDEX builds_by_repo ON builds (repo, id)",
        """
        CREATE TABLE notifications (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            build_id INTEGER NOT NULL REFERENCES builds (id),
            kind TEXT NOT NULL,
            payload TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at TEXT NOT NULL,
            last_error TEXT NOT NULL DEFAULT ''
        )
        """,
        "CREATE INDEX notifications_by_build ON notifications (build_id, id)",
        "CREATE INDEX notifications_by_due ON notifications (next_attempt_at, id)",
    ),
    # 1 → 2: the commit a push moved its branch from, to order late deliveries.
    (
        "ALTER TABLE builds ADD COLUMN previous_sha TEXT",
        "CREATE INDEX builds_by_previous ON builds (forge, repo, previous_sha)"
        " WHERE previous_sha IS NOT NULL",
    ),
    # 2 → 3: the boot tests of a build's ISO (QEMU), in the order they ran.
    (
        """
        CREATE TABLE boot_tests (
            build_id INTEGER NOT NULL REFERENCES builds (id),
            position INTEGER NOT NULL,
            name TEXT NOT NULL,
            firmware TEXT NOT NULL,
            medium TEXT NOT NULL,
            mode TEXT NOT NULL,
            outcome TEXT NOT NULL,
            required INTEGER NOT NULL,
            accelerator TEXT NOT NULL,
            seconds REAL NOT NULL,
            reason TEXT NOT NULL,
            serial_tail TEXT NOT NULL,
            screenshot TEXT NOT NULL,
            command_line TEXT NOT NULL,
            PRIMARY KEY (build_id, position)
        )
        """,
    ),
    # 3 → 4: the packages each build installed (runner.packages), a JSON array of
    # [name, version, repo, sha256]; apart from `builds` so that lists stay small.
    (
        """
        CREATE TABLE build_packages (
            build_id INTEGER PRIMARY KEY REFERENCES builds (id),
            packages TEXT NOT NULL
        )
        """,
    ),
    # 4 → 5: releases published through the outbox, their progress and result; the
    # outbox orders notifications per build and kind.
    (
        """
        CREATE TABLE releases (
            build_id INTEGER PRIMARY KEY REFERENCES builds (id),
            tag TEXT NOT NULL,
            state TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at TEXT,
            last_error TEXT NOT NULL DEFAULT '',
            url TEXT NOT NULL DEFAULT '',
            files TEXT NOT NULL DEFAULT '[]',
            updated_at TEXT NOT NULL,
            refusals INTEGER NOT NULL DEFAULT 0
        )
        """,
        "CREATE INDEX releases_by_state ON releases (state)",
        "CREATE INDEX notifications_by_kind ON notifications (build_id, kind, id)",
    ),
    # 5 → 6: every delivery answered with a build, per forge, also when it was a
    # duplicate of another delivery's build: it keeps that answer while the build is
    # kept (builds.delivery_id only names the delivery that made the build).
    (
        """
        CREATE TABLE deliveries (
            forge TEXT NOT NULL,
            delivery_id TEXT NOT NULL,
            build_id INTEGER NOT NULL REFERENCES builds (id),
            PRIMARY KEY (forge, delivery_id)
        ) WITHOUT ROWID
        """,
        "INSERT INTO deliveries (forge, delivery_id, build_id)"
        " SELECT forge, delivery_id, id FROM builds",
        "CREATE INDEX deliveries_by_build ON deliveries (build_id)",
    ),
)

SCHEMA_VERSION: Final = len(MIGRATIONS)

BUILD_COLUMNS: Final = (
    "id, forge, repo, commit_sha, ref, kind, pr_number, trusted, commit_time, delivery_id,"
    " source_repo, project_id, web_url, title, sender, state, detail, created_at,"
    " started_at, finished_at, previous_sha"
)

NOTIFICATION_COLUMNS: Final = "id, build_id, kind, payload, attempts, next_attempt_at, last_error"

RELEASE_COLUMNS: Final = (
    "build_id, tag, state, attempts, next_attempt_at, last_error, url, files, updated_at, refusals"
)


def migrate(conn: sqlite3.Connection, path: str) -> int:
    """Bring the schema to `SCHEMA_VERSION`; call it inside a write transaction.

    Args:
        conn: A connection inside `BEGIN IMMEDIATE`.
        path: The database file, for error messages.

    Returns:
        The schema version the database had before.

    Raises:
        StoreError: The database was written by a newer isorunner.
    """
    (found,) = conn.execute("PRAGMA user_version").fetchone()
    if found > SCHEMA_VERSION:
        msg = (
            f"the job database {path} has schema version {found}, newer than the"
            f" {SCHEMA_VERSION} this isorunner knows: upgrade isorunner, or point"
            " storage.database at another file"
        )
        raise StoreError(msg)
    for version in range(found, SCHEMA_VERSION):
        for statement in MIGRATIONS[version]:
            conn.execute(statement)
    # PRAGMA takes no parameters; SCHEMA_VERSION is our own integer constant.
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION:d}")
    return int(found)


def encode_time(moment: datetime) -> str:
    """Encode an aware datetime as fixed-width UTC ISO-8601, so text order is time order.

    Raises:
        ValueError: `moment` is naive.
    """
    if moment.tzinfo is None or moment.utcoffset() is None:
        msg = f"the job store needs timezone-aware datetimes, got naive {moment.isoformat()}"
        raise ValueError(msg)
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def decode_time(text: str) -> datetime:
    """Decode a value written by `encode_time`."""
    return datetime.fromisoformat(text)


def request_params(request: BuildRequest) -> tuple[object, ...]:
    """Return the `builds` column values of a request, `forge` to `previous_sha`."""
    return (
        request.forge.value,
        request.repo,
        request.commit_sha,
        request.ref,
        request.kind.value,
        request.pr_number,
        int(request.trusted),
        encode_time(request.commit_time),
        request.delivery_id,
        request.source_repo,
        request.project_id,
        request.web_url,
        request.title,
        request.sender,
        request.previous_sha,
    )


def build_from_row(row: Sequence[object]) -> BuildRecord:
    """Turn a `SELECT {BUILD_COLUMNS}` row back into a `BuildRecord`."""
    request = BuildRequest(
        forge=Forge(_text(row[1])),
        repo=_text(row[2]),
        commit_sha=_text(row[3]),
        ref=_text(row[4]),
        kind=RefKind(_text(row[5])),
        pr_number=_optional_int(row[6]),
        trusted=bool(row[7]),
        commit_time=decode_time(_text(row[8])),
        delivery_id=_text(row[9]),
        source_repo=_text(row[10]),
        project_id=_optional_int(row[11]),
        web_url=_text(row[12]),
        title=_text(row[13]),
        sender=_text(row[14]),
        previous_sha=None if row[20] is None else _text(row[20]),
    )
    return BuildRecord(
        id=_int(row[0]),
        request=request,
        state=BuildState(_text(row[15])),
        detail=_text(row[16]),
        created_at=decode_time(_text(row[17])),
        started_at=None if row[18] is None else decode_time(_text(row[18])),
        finished_at=None if row[19] is None else decode_time(_text(row[19])),
    )


#: The most packages stored for one build (runner.packages.profile allows 4096 names;
#: their dependencies add some).
MAX_PACKAGES: Final = 20000


def encode_packages(packages: Sequence[PackageEntry]) -> str:
    """Encode a build's packages for the `build_packages` table."""
    return json.dumps(
        [[p.name, p.version, p.repo, p.sha256] for p in packages], separators=(",", ":")
    )


def decode_packages(text: str) -> tuple[PackageEntry, ...]:
    """Decode what `encode_packages` wrote.

    Raises:
        StoreError: The stored value is not such a list.
    """
    data = json.loads(text)
    if not isinstance(data, list) or len(data) > MAX_PACKAGES:
        msg = "the job database holds a package list that is not a list"
        raise StoreError(msg)
    entries = []
    for item in data:
        if not (
            isinstance(item, list) and len(item) == 4 and all(isinstance(v, str) for v in item)
        ):
            msg = "the job database holds a malformed package entry"
            raise StoreError(msg)
        entries.append(PackageEntry(*item))
    return tuple(entries)


def notification_from_row(row: Sequence[object]) -> Notification:
    """Turn a `SELECT {NOTIFICATION_COLUMNS}` row back into a `Notification`."""
    payload = json.loads(_text(row[3]))
    if not isinstance(payload, dict):
        msg = f"notification {row[0]} has a payload that is not a JSON object"
        raise StoreError(msg)
    return Notification(
        id=_int(row[0]),
        build_id=_int(row[1]),
        kind=_text(row[2]),
        payload=payload,
        attempts=_int(row[4]),
        next_attempt_at=decode_time(_text(row[5])),
        last_error=_text(row[6]),
    )


def release_params(build_id: int, release: Release) -> tuple[object, ...]:
    """Return the `releases` column values of a release, in `RELEASE_COLUMNS` order."""
    files = [
        {"name": f.name, "size": f.size, "sha256": f.sha256, "uploaded": f.uploaded}
        for f in release.files
    ]
    return (
        build_id,
        release.tag,
        release.state.value,
        release.attempts,
        None if release.next_attempt_at is None else encode_time(release.next_attempt_at),
        release.last_error,
        release.url,
        json.dumps(files),
        encode_time(release.updated_at),
        release.refusals,
    )


def release_from_row(row: Sequence[object]) -> tuple[int, Release]:
    """Turn a `SELECT {RELEASE_COLUMNS}` row back into its build id and `Release`."""
    raw = json.loads(_text(row[7]))
    if not isinstance(raw, list):
        msg = f"the release of build {row[0]} has a file list that is not a JSON list"
        raise StoreError(msg)
    files = tuple(
        ReleaseFile(
            name=str(item["name"]),
            size=int(item["size"]),
            sha256=str(item["sha256"]),
            uploaded=bool(item["uploaded"]),
        )
        for item in raw
    )
    return _int(row[0]), Release(
        tag=_text(row[1]),
        state=ReleaseState(_text(row[2])),
        attempts=_int(row[3]),
        next_attempt_at=None if row[4] is None else decode_time(_text(row[4])),
        last_error=_text(row[5]),
        url=_text(row[6]),
        files=files,
        updated_at=decode_time(_text(row[8])),
        refusals=_int(row[9]),
    )


def _text(value: object) -> str:
    if not isinstance(value, str):
        msg = f"the job database holds {type(value).__name__} where text was expected"
        raise StoreError(msg)
    return value


def _int(value: object) -> int:
    if not isinstance(value, int):
        msg = f"the job database holds {type(value).__name__} where an integer was expected"
        raise StoreError(msg)
    return value


def _optional_int(value: object) -> int | None:
    return None if value is None else _int(value)

"""The SQLite job store's boot test results: one row per boot of a build's ISO.

Blocking I/O on a `sqlite3.Connection` it is given (run on the store's threads), like
`runner.store.ops`. Rows are written once, after the build's boot tests ran, and
deleted with their build by retention. Texts come partly from the guest's serial
console, so they are bounded here once more, whatever the caller did.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Final

from runner.exceptions import BuildNotFound, StoreError
from webhooks.build import BootTestRecord

MAX_TESTS: Final = 16
MAX_TAIL_LINES: Final = 100
MAX_LINE: Final = 1024
MAX_TEXT: Final = 2048

_COLUMNS: Final = (
    "name, firmware, medium, mode, outcome, required, accelerator, seconds, reason,"
    " serial_tail, screenshot, command_line"
)


def save(conn: sqlite3.Connection, build_id: int, tests: Sequence[BootTestRecord]) -> None:
    """Replace build `build_id`'s boot test results by `tests` (at most `MAX_TESTS`).

    Raises:
        BuildNotFound: No such build.
    """
    if conn.execute("SELECT 1 FROM builds WHERE id = ?", (build_id,)).fetchone() is None:
        raise BuildNotFound(build_id)
    conn.execute("DELETE FROM boot_tests WHERE build_id = ?", (build_id,))
    conn.executemany(
        f"INSERT INTO boot_tests (build_id, position, {_COLUMNS})"  # noqa: S608 -- constant
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [(build_id, n, *_params(test)) for n, test in enumerate(tests[:MAX_TESTS])],
    )


def load(conn: sqlite3.Connection, build_id: int) -> list[BootTestRecord]:
    """Build `build_id`'s boot test results, in the order they ran."""
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM boot_tests WHERE build_id = ? ORDER BY position",  # noqa: S608 -- constant
        (build_id,),
    )
    return [_record(row) for row in rows]


def delete(conn: sqlite3.Connection, build_ids: Sequence[int]) -> None:
    """Remove the results of builds that retention deletes."""
    conn.executemany("DELETE FROM boot_tests WHERE build_id = ?", [(i,) for i in build_ids])


def _params(test: BootTestRecord) -> tuple[object, ...]:
    tail = [line[:MAX_LINE] for line in test.serial_tail[-MAX_TAIL_LINES:]]
    return (
        test.name[:100],
        test.firmware[:20],
        test.medium[:20],
        test.mode[:20],
        test.outcome[:20],
        int(test.required),
        test.accelerator[:20],
        float(test.seconds),
        test.reason[:MAX_TEXT],
        json.dumps(tail),
        test.screenshot[:255],
        test.command_line[:MAX_TEXT],
    )


def _record(row: Sequence[object]) -> BootTestRecord:
    tail = json.loads(str(row[9]))
    if not isinstance(tail, list):
        raise StoreError("a stored boot test's serial tail is not a JSON list")
    seconds = row[7]
    if not isinstance(seconds, int | float):
        raise StoreError("a stored boot test's duration is not a number")
    return BootTestRecord(
        name=str(row[0]),
        firmware=str(row[1]),
        medium=str(row[2]),
        mode=str(row[3]),
        outcome=str(row[4]),
        required=bool(row[5]),
        accelerator=str(row[6]),
        seconds=float(seconds),
        reason=str(row[8]),
        serial_tail=tuple(str(line) for line in tail),
        screenshot=str(row[10]),
        command_line=str(row[11]),
    )

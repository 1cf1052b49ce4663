"""A process that submits builds forever and prints each id once its submit returned.

Run by `tests/runner/store/test_sqlite.py` as `python -m tests.runner.store.submitter DB`; the
test kills it with SIGKILL mid-stream and checks that every printed id is stored.
Does I/O: the database file and stdout.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime
from pathlib import Path

from runner.store import SQLiteStore
from webhooks.build import BuildRequest, Forge, RefKind

WRITERS = 8


def _request(worker: int, n: int) -> BuildRequest:
    sha = f"{worker:04x}{n:036x}"
    return BuildRequest(
        forge=Forge.GITHUB,
        repo="owner/profile",
        commit_sha=sha,
        ref="refs/heads/main",
        kind=RefKind.BRANCH,
        pr_number=None,
        trusted=True,
        commit_time=datetime(2025, 1, 1, tzinfo=UTC),
        delivery_id=f"kill-{worker}-{n}",
        source_repo="owner/profile",
    )


async def _writer(store: SQLiteStore, worker: int) -> None:
    n = 0
    while True:
        submission = await store.submit(_request(worker, n))
        # One line per durable submit, flushed at once so the parent sees it.
        sys.stdout.write(f"{submission.build_id}\n")
        sys.stdout.flush()
        n += 1


async def _main(path: Path) -> None:
    async with SQLiteStore(path) as store:
        await asyncio.gather(*(_writer(store, worker) for worker in range(WRITERS)))


if __name__ == "__main__":
    asyncio.run(_main(Path(sys.argv[1])))

"""Values shared by the job store tests: a fake clock and sample build requests.

Pure: no I/O.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

from webhooks.build import BuildRequest, Forge, RefKind

START = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self, now: datetime = START) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        """Move the clock forward and return the new time."""
        self.now += timedelta(seconds=seconds)
        return self.now


_counter = iter(range(1, 1_000_000))


def make_request(**changes: object) -> BuildRequest:
    """Return a branch push request with a fresh delivery id and commit, with `changes`."""
    n = next(_counter)
    base = BuildRequest(
        forge=Forge.GITHUB,
        repo="owner/profile",
        commit_sha=f"{n:040x}",
        ref="refs/heads/main",
        kind=RefKind.BRANCH,
        pr_number=None,
        trusted=True,
        commit_time=datetime(2025, 2, 1, 8, 30, tzinfo=UTC),
        delivery_id=f"hook-1:delivery-{n}",
        source_repo="owner/profile",
        project_id=None,
        web_url="https://github.com/owner/profile",
        title="Add a package",
        sender="alice",
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]

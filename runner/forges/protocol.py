"""The forge-neutral face of the clients: `CommitState` and the `ForgeClient` protocol.

Pure: declarations only, no I/O. The worker talks to a `ForgeClient` and never needs
to know which forge is behind it; `GitHubClient` and `GitLabClient` map `CommitState`
to their forge's own states.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from runner.forges.releaseplan import LocalAsset

Progress = Callable[[str], Awaitable[None]]
"""Told the name of each file once the forge holds it whole (kept or uploaded)."""


class CommitState(enum.StrEnum):
    """What isorunner says about a commit, before each forge's own vocabulary.

    GitHub: queued/running → pending, success, failure, error/cancelled → error.
    GitLab: queued → pending, running, success, failure/error → failed, cancelled → canceled.
    """

    QUEUED = "queued"
    RUNNING = "running"
    SUCCESS = "success"
    FAILURE = "failure"
    ERROR = "error"
    CANCELLED = "cancelled"


@runtime_checkable
class ForgeClient(Protocol):
    """What the worker needs from a forge: statuses, the profile archive, releases."""

    async def set_status(
        self,
        repo: str,
        sha: str,
        state: CommitState,
        *,
        description: str,
        target_url: str | None,
        ref: str | None = None,
    ) -> None:
        """Post the commit status for `sha` in `repo`.

        Args:
            repo: `owner/name` (GitHub) or the project path or numeric id (GitLab).
            sha: The commit.
            state: The forge-neutral state.
            description: A short text; each forge's length limit is applied.
            target_url: The build page, or None.
            ref: The branch or tag name (GitLab uses it to find the pipeline).
        """
        ...

    async def download_archive(self, repo: str, sha: str, dest: Path, *, max_bytes: int) -> int:
        """Stream the repository's tar.gz archive at `sha` to `dest`; return its size."""
        ...

    async def publish_release(
        self,
        repo: str,
        tag: str,
        files: Sequence[LocalAsset],
        *,
        name: str,
        body: str,
        progress: Progress | None = None,
    ) -> str:
        """Make one attempt to publish the release for `tag` with `files`; return its URL.

        Resumable and idempotent: the attempt starts from what the forge has (a draft
        or a release of the tag, complete files with the same digest) and only does
        what is left. After an ambiguous answer (5xx, lost connection) it looks up
        what the forge did before creating anything again.

        Args:
            repo: `owner/name` (GitHub) or the project path or numeric id (GitLab).
            tag: The tag to release.
            files: The files, in publishing order, with distinct names.
            name: The release's title.
            body: The release notes.
            progress: Awaited with each file's name once the forge holds it whole.

        Raises:
            ForgeError: This attempt failed; `transient` says whether a later attempt
                may succeed as things are, `final` that none ever can.
        """
        ...

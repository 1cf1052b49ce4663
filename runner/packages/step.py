"""The "packages" step of a build: choose its sources, sync, tell the log and the metrics.

I/O shell around `PackageSync` (which does the work); the pipeline and `isorunner build`
call `BuildPackages.prepare` after the profile is extracted and before the container
starts, and bind the returned repository into the container.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from runner.packages.sources import PackageSources
from runner.packages.sync import PackageSync, ResolvedPackages, SyncRequest

#: `sources(forge, repo)`: the sources of a forge repository's builds.
SourcesFor = Callable[[str, str], PackageSources]


class PackageMetrics(Protocol):
    """What the step tells the metrics (runner.metrics.Metrics)."""

    def packages_synced(self, *, cached: int, downloaded: int, downloaded_bytes: int) -> None:
        """Count one sync's cache hits and misses and the bytes it downloaded."""
        ...


class BuildPackages:
    """Makes one build's packages ready (see the module docstring).

    Args:
        sync: The package sync.
        sources: Which repositories a forge repository's builds may use.
        architecture: The architecture builds resolve for.
        metrics: Counts cache hits, misses and bytes; None counts nothing.
    """

    def __init__(
        self,
        sync: PackageSync,
        *,
        sources: SourcesFor,
        architecture: str = "x86_64",
        metrics: PackageMetrics | None = None,
    ) -> None:
        self._sync = sync
        self._sources = sources
        self._architecture = architecture
        self._metrics = metrics

    async def prepare(
        self,
        *,
        forge: str,
        repo: str,
        trusted: bool,
        profile: Path,
        workspace: Path,
        log: Callable[[str], None],
    ) -> ResolvedPackages:
        """Sync the packages of `profile` into `<workspace>/repo`.

        Args:
            forge: The build's forge ("github", "gitlab", or "local").
            repo: The build's repository (picks its configured sources).
            trusted: False for pull/merge requests from forks.
            profile: The extracted profile.
            workspace: The build's private directory (`repo/` and `packages/` go in it;
                the caller removes it).
            log: Receives the build log's lines of this step.

        Returns:
            What was resolved; its `repository` is the directory to bind.

        Raises:
            PackageError: The step failed (see runner.packages.exceptions).
        """
        started = time.monotonic()
        log("[isorunner] packages: resolving on the host (the build itself has no network)")
        result = await self._sync.sync(
            SyncRequest(
                profile_dir=profile,
                sources=self._sources(forge, repo),
                trusted=trusted,
                arch=self._architecture,
            ),
            repo_dir=workspace / "repo",
            work_dir=workspace / "packages",
            log=lambda line: log(f"[isorunner] {line}"),
        )
        if self._metrics is not None:
            self._metrics.packages_synced(
                cached=result.cached,
                downloaded=result.downloaded,
                downloaded_bytes=result.downloaded_bytes,
            )
        log(f"[isorunner] packages: step done in {time.monotonic() - started:.1f} s")
        return result

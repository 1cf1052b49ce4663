"""Fakes of the runner's outside world for worker and pipeline tests: forge and sandbox.

They implement the protocols the runner declares (`runner.forges.protocol.ForgeClient`,
`runner.pipeline.Sandbox`) and record what they were asked. The real sandbox and a
fake forge HTTP server are exercised end to end in tests/e2e.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable, Sequence
from pathlib import Path

import anyio

from runner.forges.exceptions import ForgeError, ForgeUnavailable
from runner.forges.protocol import CommitState, Progress
from runner.forges.releaseplan import LocalAsset
from sandbox import (
    BuildResult,
    CommandResult,
    ContainerSpec,
    LogSink,
    SandboxConfig,
    WarningHook,
)

BASE_URL = "https://ci.example.org"
"""The public base URL the runner under test links statuses to."""


def profile_tarball(top: str = "owner-profile-abc1234", mtime: int = 0) -> bytes:
    """A GitHub-style tarball of a tiny profile, entries stamped with `mtime`."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in (("profiledef.sh", b"iso_name=t\n"), ("packages.x86_64", b"base\n")):
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size = len(data)
            info.mtime = mtime
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


class FakeForge:
    """A forge client that records what it was asked and can be told to fail.

    `release_errors` are raised by the next `publish_release` calls, one each, after
    `release_progress` files have been reported as uploaded.
    """

    def __init__(self, archive: bytes) -> None:
        self.archive = archive
        self.statuses: list[tuple[str, CommitState, str]] = []
        self.releases: list[tuple[str, list[str]]] = []
        self.published: list[LocalAsset] = []
        self.release_bodies: list[str] = []
        self.status_failures = 0
        self.release_errors: list[ForgeError] = []
        self.release_progress = 0

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
        if self.status_failures:
            self.status_failures -= 1
            raise ForgeUnavailable("forge down", status_code=502)
        self.statuses.append((sha, state, description))

    async def download_archive(self, repo: str, sha: str, dest: Path, *, max_bytes: int) -> int:
        await anyio.Path(dest).write_bytes(self.archive)
        return len(self.archive)

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
        if self.release_errors:
            for asset in files[: self.release_progress]:
                if progress is not None:
                    await progress(asset.name)
            raise self.release_errors.pop(0)
        for asset in files:
            if progress is not None:
                await progress(asset.name)
        self.releases.append((tag, [f.name for f in files]))
        self.published.extend(files)
        self.release_bodies.append(body)
        return f"https://forge/{repo}/releases/{tag}"


class FakeSandbox:
    """A sandbox that writes an ISO, fails, or blocks, as the test says."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.config = SandboxConfig(base_dir=root / "base", sandbox_root=root)
        self.error: Exception | None = None
        self.block = anyio.Event()
        self.blocking = False
        self.started = anyio.Event()
        self.discarded: list[str] = []
        self.warn = False
        self.seen_epochs: list[int] = []
        self.log_lines: list[str] = []
        self.discard_errors: list[Exception] = []
        self.iso_contents: list[bytes] = []
        self.run_ids: list[str] = []
        self.errors_for: dict[str, Exception] = {}
        self.seen_repos: list[Path | None] = []

    async def run(
        self,
        build_id: str,
        profile_dir: Path,
        *,
        source_date_epoch: int,
        log_sink: LogSink,
        on_warning: WarningHook | None = None,
        package_repo: Path | None = None,
    ) -> BuildResult:
        assert (profile_dir / "profiledef.sh").is_file()
        self.run_ids.append(build_id)
        self.seen_epochs.append(source_date_epoch)
        self.seen_repos.append(package_repo)
        self.started.set()
        await log_sink("[mkarchiso] INFO: building")
        for line in self.log_lines:
            await log_sink(line)
        if self.warn and on_warning is not None:
            await on_warning()
        if self.blocking:
            await self.block.wait()
        if self.error is not None:
            raise self.error
        if build_id in self.errors_for:
            raise self.errors_for[build_id]
        out = self.root / build_id
        out.mkdir(parents=True)
        iso = out / "t-1-x86_64.iso"
        iso.write_bytes(self.iso_contents.pop(0) if self.iso_contents else b"ISO" * 1000)
        return BuildResult(build_id, 0, 1.5, out, (iso,), ())

    async def run_container(
        self,
        run_id: str,
        spec: ContainerSpec,
        *,
        log_sink: LogSink,
        prepare: Callable[[Path], None] | None = None,
        collect: Callable[[Path], None] | None = None,
    ) -> CommandResult:
        raise AssertionError("the fake sandbox runs builds only; inject the ISO comparison")

    async def discard(self, build_id: str) -> None:
        self.discarded.append(build_id)
        if self.discard_errors:
            raise self.discard_errors.pop(0)

"""One build end to end: fetch the profile, sync its packages, build, sum, boot, keep its files.

The I/O shell where forge, archive, sandbox and checksums meet. `classify` is the pure
core: it maps whatever ended a build to the lifecycle event and the one-line detail
that the commit status shows. Every path out of `Pipeline.run` returns an `Outcome`;
the temporary workspace and the sandbox's per-build directories are always removed.

A build ends once its files are on disk: publishing a tag's release is not part of it.
The SUCCEED that the worker stores queues the release in the same transaction, and
`runner.publish` publishes the files from disk, across restarts and forge outages.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple, Protocol

import anyio
import structlog

from runner.archive import ExtractLimits, ExtractReport, extract_profile_async
from runner.artifacts import collect_build
from runner.boottest import BootPlan, BootStep, verdict
from runner.buildlogs import BuildLogs, build_output
from runner.exceptions import ArchiveRejected
from runner.forges.exceptions import ForgeError
from runner.forges.protocol import ForgeClient
from runner.jobs import Event, publishes_release
from runner.metrics import Metrics
from runner.packages import PackageError, ResolvedPackages
from runner.publish.exceptions import PublishError
from runner.publish.provenance import Reproducibility
from runner.publish.sealer import Sealer
from sandbox import (
    BuildFailed,
    BuildResult,
    Cancelled,
    DiskLimit,
    LogSink,
    OutOfMemory,
    OutputRejected,
    ProcessLimit,
    ProfileInvalid,
    SandboxError,
    TimedOut,
    WarningHook,
)
from webhooks.bounds import cut
from webhooks.build import (
    BOOT_DIR,
    BuildRecord,
    BuildRequest,
    Forge,
    PackageEntry,
    artifacts_dir,
)

_log = structlog.get_logger()

MAX_DETAIL = 1000
"""The most characters of a build's detail: it quotes log lines and archive entry names."""


class Sandbox(Protocol):
    """What the pipeline needs of `sandbox.BuildSandbox`."""

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
        """Build the profile into an ISO (see `sandbox.BuildSandbox.run`)."""
        ...

    async def discard(self, build_id: str) -> None:
        """Remove everything left of a build."""
        ...


class PackageStep(Protocol):
    """What the pipeline needs of `runner.packages.step.BuildPackages`."""

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
        """Sync the profile's packages into `<workspace>/repo`."""
        ...


#: `record_packages(build_id, packages)`: store a build's resolved packages.
RecordPackages = Callable[[int, Sequence[PackageEntry]], Awaitable[None]]


class Outcome(NamedTuple):
    """How a build ended: the lifecycle event to apply and the status detail."""

    event: Event
    detail: str


@dataclass(frozen=True, slots=True)
class PipelineConfig:
    """Where the pipeline works and what it accepts.

    Attributes:
        work_root: Temporary per-build workspaces (archive, extracted profile).
        artifacts_root: Finished builds' ISOs and checksum files, `<root>/<build id>/`.
        max_archive_bytes: The most a profile archive download may be.
        extract_limits: Caps on the extracted profile.
        keep_untrusted_artifacts: Keep the ISOs of builds from forks (served under
            `/untrusted/`); when False their ISOs are deleted once built, and only
            their checksums and log stay (`storage.keep_untrusted_artifacts`).
    """

    work_root: Path
    artifacts_root: Path
    max_archive_bytes: int = 256 * 1024 * 1024
    extract_limits: ExtractLimits = field(default_factory=ExtractLimits)
    keep_untrusted_artifacts: bool = False


def sandbox_id(build_id: int) -> str:
    """The sandbox's name for a build (its ids are `[a-z0-9-]`, starting alphanumeric)."""
    return f"build-{build_id}"


# What ended a build → (lifecycle event, detail prefix). First match wins, so the
# more specific sandbox errors stand before their SandboxError root.
_CLASSIFICATION: tuple[
    tuple[type[BaseException] | tuple[type[BaseException], ...], Event, str], ...
] = (
    (ArchiveRejected, Event.FAIL, "profile archive rejected: "),
    ((ProfileInvalid, OutputRejected, DiskLimit, BuildFailed), Event.FAIL, ""),
    (TimedOut, Event.ERROR, ""),
    (Cancelled, Event.CANCEL, ""),
    (SandboxError, Event.ERROR, "sandbox error: "),
    (ForgeError, Event.ERROR, "forge error: "),
    (PublishError, Event.ERROR, "signing error: "),
)


# Log lines that say why a build failed: pacman's "error: target not found: x",
# mkarchiso's "[mkarchiso] ERROR: …", and the "==> ERROR: …" of pacstrap.
_ERROR_LINE = re.compile(r"^(?:error: |\[mkarchiso\] ERROR: |==> ERROR: )")


def is_error_line(line: str) -> bool:
    """Whether a build log line states an error (pacman, mkarchiso, pacstrap)."""
    return _ERROR_LINE.match(line) is not None


def classify(exc: BaseException, *, reason: str | None = None) -> Outcome:
    """Map what ended a build to its lifecycle event and a one-line detail.

    A failure is the profile's doing (the user must change something); an error is
    ours or the infrastructure's (retrying may help). The detail quotes what the
    profile wrote, so it is cut to `MAX_DETAIL` characters.

    Args:
        exc: What ended the build.
        reason: The build log's first error line, if any; it leads the detail of a
            failed build command (the exit status alone does not say what to fix).
    """
    if isinstance(exc, PackageError):
        # Before the container: a missing package or a refused repository is the
        # profile's to fix; a mirror, a signature or the host is not.
        if exc.profile_fault:
            return Outcome(Event.FAIL, str(exc))
        return Outcome(Event.ERROR, f"package sync: {exc}")
    for types, event, prefix in _CLASSIFICATION:
        if isinstance(exc, types):
            detail = f"{prefix}{exc}"
            limit = isinstance(exc, (OutOfMemory, ProcessLimit))
            if reason and isinstance(exc, BuildFailed) and not limit:
                detail = f"{cut(reason, MAX_DETAIL // 2)}; {detail}"
            return Outcome(event, cut(detail, MAX_DETAIL))
    return Outcome(Event.ERROR, f"internal error ({type(exc).__name__}); see the log")


def source_date_epoch(report: ExtractReport, request: BuildRequest) -> int:
    """The build's SOURCE_DATE_EPOCH: the commit time.

    Taken from the archive's entry times, which `git archive` (behind both forges'
    archives) sets to the commit time: the same value whether a push, a tag or a pull
    request triggered the build, so all three give the same ISO. The webhook's time is
    the fallback; it is not always the commit's (a GitLab tag push carries none, a
    GitHub pull request only its update time).
    """
    if report.newest_mtime is not None:
        return report.newest_mtime
    return int(request.commit_time.timestamp())


def reproducibility_note(result: Reproducibility) -> str:
    """The rebuild check's verdict for the status detail ("" when it did not run)."""
    if result.status == "identical":
        return "; reproducible (rebuilt byte-identical)"
    if result.status == "different":
        return f"; NOT reproducible ({result.total} path(s) differ)"
    return ""


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class Pipeline:
    """Runs one build end to end.

    Args:
        config: Where to work and what to accept.
        clients: The forge client of each configured forge.
        sandbox: The build sandbox.
        logs: Where build logs are written.
        metrics: Counts builds stopped by a sandbox limit; None counts nothing.
        boot: Boots each built ISO in QEMU before anything is published; None
            boots nothing.
        boot_plans: The boot tests of a request (its repository's policy), or None
            when they are off for it.
        sealer: After a successful build: rebuild check, signatures, provenance;
            None keeps and publishes the ISOs and sums only.
        packages: Syncs each build's packages on the host before its container starts;
            None leaves the base's own mirror to the build.
        record_packages: Stores what `packages` resolved with the build.
    """

    def __init__(
        self,
        config: PipelineConfig,
        *,
        clients: Mapping[Forge, ForgeClient],
        sandbox: Sandbox,
        logs: BuildLogs,
        metrics: Metrics | None = None,
        boot: BootStep | None = None,
        boot_plans: Callable[[BuildRequest], BootPlan | None] = lambda _request: None,
        sealer: Sealer | None = None,
        packages: PackageStep | None = None,
        record_packages: RecordPackages | None = None,
    ) -> None:
        self._boot = boot
        self._boot_plans = boot_plans
        self._config = config
        self._sealer = sealer
        self._clients = clients
        self._sandbox = sandbox
        self._logs = logs
        self._metrics = metrics
        self._packages = packages
        self._record_packages = record_packages

    def artifacts_dir(self, build_id: int) -> Path:
        """Where a build's published files are kept."""
        return artifacts_dir(self._config.artifacts_root, build_id)

    async def run(self, record: BuildRecord, *, on_warning: WarningHook | None = None) -> Outcome:
        """Build `record` and return how it ended; never raises for a build's failure.

        Args:
            record: The build, claimed by the caller.
            on_warning: Awaited once if the build runs past the sandbox's warning time.

        Cancellation (of the calling task) propagates after clean-up.
        """
        workspace = self._config.work_root / str(record.id)
        with self._logs.writer(record.id) as writer:
            log = ErrorWatch(writer)
            request = record.request
            log.write_line(
                f"[isorunner] build {record.id}: {request.forge} {request.repo} "
                f"{request.ref} at {request.commit_sha}"
            )
            try:
                outcome = await self._run(record, workspace, log, on_warning)
            except anyio.get_cancelled_exc_class():
                log.write_line("[isorunner] build cancelled")
                raise
            except Exception as exc:  # noqa: BLE001 - every build must end; see classify
                outcome = classify(exc, reason=log.first_error)
                if self._metrics is not None:
                    self._metrics.sandbox_error(exc)
                if outcome.detail.startswith("internal error"):
                    _log.exception("build_crashed", build_id=record.id)
            finally:
                with anyio.CancelScope(shield=True):
                    await self._clean_up(record.id, workspace)
            log.write_line(f"[isorunner] {outcome.event.value}: {outcome.detail}")
        return outcome

    async def _clean_up(self, build_id: int, workspace: Path) -> None:
        """Remove the build's sandbox and workspace; log a failure, never raise it.

        An exception here would replace the build's outcome (or its cancellation) and
        end the worker's task group, stopping every later build. A first failure is
        retried once, for passing trouble (a busy mount); the sandbox itself finishes
        its teardown before a cancellation propagates, so the two never race.
        """
        for attempt in (1, 2):
            try:
                await self._sandbox.discard(sandbox_id(build_id))
                await anyio.to_thread.run_sync(_remove_tree, workspace)
            except Exception:  # noqa: BLE001 - leftovers are removed at the next start-up
                if attempt == 2:
                    _log.exception("build_cleanup_failed", build_id=build_id)
                continue
            return

    async def _run(
        self,
        record: BuildRecord,
        workspace: Path,
        log: ErrorWatch,
        on_warning: WarningHook | None,
    ) -> Outcome:
        request = record.request
        client = self._clients.get(request.forge)
        if client is None:
            return Outcome(
                Event.ERROR, f"{request.forge} has no API token configured; add one and retry"
            )
        await anyio.to_thread.run_sync(_fresh_dir, workspace)
        archive = workspace / "profile.tar.gz"
        log.write_line(f"[isorunner] fetching {request.source_repo} at {request.commit_sha}")
        size = await client.download_archive(
            request.source_repo,
            request.commit_sha,
            archive,
            max_bytes=self._config.max_archive_bytes,
        )
        profile = workspace / "profile"
        report = await extract_profile_async(archive, profile, limits=self._config.extract_limits)
        archive.unlink()
        log.write_line(f"[isorunner] profile: {size} bytes fetched, {report.files} files")
        epoch = source_date_epoch(report, request)
        log.write_line(f"[isorunner] SOURCE_DATE_EPOCH={epoch}")
        package_repo, packages = await self._sync_packages(record, profile, workspace, log)
        if packages is not None:
            # The provenance's resolved packages (runner.publish.sealer) read them here.
            record = replace(record, packages=packages)

        result = await self._sandbox.run(
            sandbox_id(record.id),
            profile,
            source_date_epoch=epoch,
            log_sink=log,
            on_warning=on_warning,
            package_repo=package_repo,
        )
        if not result.isos:
            return Outcome(Event.FAIL, "mkarchiso succeeded but wrote no ISO")
        artifacts = await collect_build(result.isos, self.artifacts_dir(record.id))
        detail = f"ISO built in {_duration(result.duration_seconds)}"
        files = artifacts.files
        plan = self._boot_plans(request) if self._boot is not None else None
        if self._boot is not None and plan is not None:
            isos = [path for path, _ in artifacts.isos]
            records = await self._boot.run(
                run_id=sandbox_id(record.id),
                iso=isos[0],
                plan=plan,
                boot_dir=self.artifacts_dir(record.id) / BOOT_DIR,
                log=log,
                note=log.note,
                build_id=record.id,
            )
            judged = verdict(records)
            detail = f"{detail}; {judged.detail}" if judged.detail else detail
            if judged.event is not None:
                return Outcome(judged.event, await self._keep(request, files, log, detail))
        if self._sealer is not None:
            sealed = await self._sealer.seal(
                record,
                profile=profile,
                epoch=epoch,
                artifacts=artifacts,
                log=log,
                package_repo=package_repo,
            )
            files = sealed.files
            detail += reproducibility_note(sealed.reproducibility)
        detail = await self._keep(request, files, log, detail)
        if publishes_release(request):
            log.write_line(
                f"[isorunner] release {request.ref_name} queued: it is published from these "
                "files after the build (its progress is on the build page)"
            )
        return Outcome(Event.SUCCEED, detail)

    async def _sync_packages(
        self, record: BuildRecord, profile: Path, workspace: Path, log: LogSinkWriter
    ) -> tuple[Path | None, tuple[PackageEntry, ...] | None]:
        """Run the packages step and store its result.

        Returns:
            The repository to bind and the packages it holds, or (None, None) without
            a packages step.
        """
        if self._packages is None:
            return None, None
        request = record.request
        resolved = await self._packages.prepare(
            forge=request.forge.value,
            repo=request.repo,
            trusted=request.trusted,
            profile=profile,
            workspace=workspace,
            log=log.write_line,
        )
        entries = tuple(
            PackageEntry(p.name, p.version, p.repo, p.sha256) for p in resolved.packages
        )
        if self._record_packages is not None:
            await self._record_packages(record.id, list(entries))
        return resolved.repository, entries

    async def _keep(
        self, request: BuildRequest, files: list[Path], log: LogSinkWriter, detail: str
    ) -> str:
        """Delete a fork's ISOs unless they are to be kept; return the detail, noted."""
        if request.trusted or self._config.keep_untrusted_artifacts:
            log.write_line(f"[isorunner] kept {', '.join(f.name for f in files)}")
            return detail
        # Built from a fork: proven to build (and boot), never offered for download.
        for iso in (path for path in files if path.suffix == ".iso"):
            await anyio.Path(iso).unlink(missing_ok=True)
        log.write_line(
            "[isorunner] built from a fork: its ISO is not kept "
            "(storage.keep_untrusted_artifacts = false); its checksums and log stay"
        )
        return f"{detail}; ISO not kept (untrusted)"


class LogSinkWriter(Protocol):
    """The build log as the pipeline uses it: plain writes and the async sink."""

    def write_line(self, line: str) -> None:
        """Append one line."""
        ...

    async def __call__(self, line: str) -> None:
        """Append one line (async form, for the sandbox)."""
        ...


class ErrorWatch:
    """A build log that remembers its first error line (see `is_error_line`).

    Lines the sandbox sends (the build's own output, through `__call__`) are written
    after `BUILD_OUTPUT_MARK`, apart from isorunner's own (`write_line`).

    Args:
        log: The log to write to.
    """

    def __init__(self, log: LogSinkWriter) -> None:
        self._log = log
        self.first_error: str | None = None

    def _watch(self, line: str) -> None:
        if self.first_error is None and is_error_line(line):
            self.first_error = line.strip()

    def write_line(self, line: str) -> None:
        """Append one line."""
        self._watch(line)
        self._log.write_line(line)

    async def note(self, line: str) -> None:
        """Append one of isorunner's own lines (async form; not marked as the build's)."""
        self.write_line(line)

    async def __call__(self, line: str) -> None:
        """Append one line of the build's own output (the sandbox's sink), marked."""
        self._watch(line)
        await self._log(build_output(line))


def _fresh_dir(path: Path) -> None:
    _remove_tree(path)
    path.mkdir(parents=True, mode=0o750)


def _remove_tree(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)

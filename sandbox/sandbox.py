"""`BuildSandbox`: runs one build in a fresh, limited container; the only process spawner.

The I/O shell of the package. It creates the build's file systems (`overlay`) and
cgroups (`cgroups`), starts `systemd-nspawn` with the argv from `nspawn` (through
`cgexec.py`, so the container starts inside its cgroups), streams the output line by
line to the caller's sink, enforces the warning, timeout, disk and cancellation rules,
and always tears the container down: no process, mount, overlay or cgroup survives.

Who deletes what: on success `run` leaves only `builds/<id>/output/` (the ISO the caller
collects) and the caller calls `discard(build_id)` afterwards; on any failure, timeout or
cancellation everything is removed before the error propagates. `cleanup_stale()` is
called once at start-up, before any build, to remove what a crashed process left.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

import anyio
import structlog

from sandbox import overlay
from sandbox.base import missing_mount_points
from sandbox.cgroups import (
    BuildCgroup,
    parent_dirs,
    parse_proc_cgroup,
    plan_cgroups,
    remove_empty_parents,
    remove_tree,
)
from sandbox.config import SandboxConfig, format_size
from sandbox.exceptions import (
    BaseMissing,
    BuildFailed,
    Cancelled,
    DiskLimit,
    OutOfMemory,
    ProcessLimit,
    SandboxError,
    SetupError,
    TimedOut,
)
from sandbox.host import HostInfo, detect_host
from sandbox.nspawn import (
    WORK_MOUNT,
    Bind,
    ContainerSpec,
    container_argv,
    mkarchiso_command,
    nspawn_argv,
)
from sandbox.output import OutputFile, check_output
from sandbox.profile import check_profile
from sandbox.streams import pump_lines

LogSink = Callable[[str], Awaitable[None]]
WarningHook = Callable[[], Awaitable[None]]

_CGEXEC = Path(__file__).with_name("cgexec.py")
# The environment of nspawn itself: nothing of isorunner's (which may hold secrets).
_ENOSPC = "No space left on device"
"""How a failed write says the disk is full (strerror(ENOSPC)), in the build's output."""
_SPAWN_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}

log = structlog.get_logger()

_T = TypeVar("_T")


async def run_to_completion(work: Awaitable[_T]) -> _T:
    """Await `work` to its end even if the caller is cancelled meanwhile.

    `asyncio.shield` alone is not enough: the shielded work goes on, but the caller's
    `await` returns at the first cancellation, so clean-up would finish in the
    background while the caller (and the next build) already moves on; and anyio's
    cancel scopes (the runner's) cancel again at every await. The work is awaited in a
    shielded anyio scope until it is done; a cancellation that arrived meanwhile is
    raised afterwards.
    """
    task = asyncio.ensure_future(work)
    cancelled = False
    with anyio.CancelScope(shield=True):
        while True:
            try:
                result = await asyncio.shield(task)
            except asyncio.CancelledError:
                if task.done():
                    raise  # the work itself was cancelled
                cancelled = True
            else:
                break
    if cancelled:
        raise asyncio.CancelledError
    return result


@dataclass(frozen=True, slots=True)
class BuildResult:
    """A finished, accepted build.

    Attributes:
        build_id: The build.
        exit_code: The build command's exit status (0).
        duration_seconds: Wall time from container start to exit.
        output_dir: Where the files are until `BuildSandbox.discard(build_id)`.
        isos: The ISO files produced.
        files: Every output file, checked (see `sandbox.output`).
    """

    build_id: str
    exit_code: int
    duration_seconds: float
    output_dir: Path
    isos: tuple[Path, ...]
    files: tuple[OutputFile, ...]


@dataclass(frozen=True, slots=True)
class CommandResult:
    """What happened to a command run by `BuildSandbox.run_command`.

    Attributes:
        exit_code: The command's exit status (nspawn passes it through).
        duration_seconds: Wall time from container start to exit.
        cpu_seconds: CPU time the container used (None where no cgroup was ours).
        oom_killed: The memory limit made the kernel kill a process.
        pids_limited: A fork was refused at the pids limit.
        out_of_space: The build's disk was full when it ended, or a write failed
            with ENOSPC ("No space left on device" in its output).
    """

    exit_code: int
    duration_seconds: float
    cpu_seconds: float | None
    oom_killed: bool
    pids_limited: bool
    out_of_space: bool = False


@dataclass(slots=True)
class _Run:
    """A running container and why it is being stopped, if it is."""

    build_id: str
    watch_work: bool = False
    proc: asyncio.subprocess.Process | None = None
    cgroup: BuildCgroup | None = None
    stop_reason: SandboxError | None = None
    stopped: asyncio.Event = field(default_factory=asyncio.Event)
    saw_enospc: bool = False


class BuildSandbox:
    """Runs builds in hardened systemd-nspawn containers (see the module docstring)."""

    def __init__(self, config: SandboxConfig, *, host: HostInfo | None = None) -> None:
        self.config = config
        self.host = host if host is not None else detect_host()
        self._runs: dict[str, _Run] = {}

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
        """Build `profile_dir` into an ISO with mkarchiso.

        Args:
            build_id: Unique id of the build (a-z, 0-9, '-').
            profile_dir: The checked-out profile on the host (bound read-only).
            source_date_epoch: Passed as SOURCE_DATE_EPOCH (e.g. the commit time).
            log_sink: Receives each output line (without newline), in order.
            on_warning: Awaited once when the build has run `warning_seconds`.
            package_repo: The build's own package repository (repository `isorunner`:
                `isorunner.db` and the package files), bound read-only at the base's
                mirror path, /srv/isorunner/repo; None uses the base's own mirror.

        Returns:
            The result; its output dir lives until `discard(build_id)`.

        Raises:
            SandboxError: a subclass saying what went wrong (see `sandbox.exceptions`).
        """
        check_profile(profile_dir, max_file_bytes=self.config.max_profile_file_bytes)
        execution = await self._execute(
            build_id,
            make_argv=self._build_argv(
                profile_dir, mkarchiso_command(), source_date_epoch, package_repo
            ),
            log_sink=log_sink,
            on_warning=on_warning,
        )
        try:
            if execution.exit_code != 0:
                raise self._failure(execution)
            files = check_output(
                overlay.BuildDirs.of(self.config, build_id).output,
                max_bytes=self.config.max_output_bytes,
            )
        except SandboxError as exc:
            exc.build_id = build_id
            await self.discard(build_id)
            raise
        return BuildResult(
            build_id=build_id,
            exit_code=0,
            duration_seconds=execution.duration_seconds,
            output_dir=overlay.BuildDirs.of(self.config, build_id).output,
            isos=tuple(f.path for f in files if f.path.suffix == ".iso"),
            files=tuple(files),
        )

    async def run_command(
        self,
        build_id: str,
        profile_dir: Path,
        command: Sequence[str],
        *,
        source_date_epoch: int,
        log_sink: LogSink,
        on_warning: WarningHook | None = None,
        package_repo: Path | None = None,
    ) -> CommandResult:
        """Run any command in the same container set-up as a build, then remove everything.

        For tests and benchmarks. A non-zero exit is returned, not raised; `package_repo`
        is bound as for `run`.

        Raises:
            SandboxError: Set-up failed, or the run timed out, was cancelled or hit the
                disk limit.
        """
        result = await self._execute(
            build_id,
            make_argv=self._build_argv(profile_dir, command, source_date_epoch, package_repo),
            log_sink=log_sink,
            on_warning=on_warning,
        )
        await self.discard(build_id)
        return result

    async def run_container(
        self,
        run_id: str,
        spec: ContainerSpec,
        *,
        log_sink: LogSink,
        prepare: Callable[[Path], None] | None = None,
        collect: Callable[[Path], None] | None = None,
    ) -> CommandResult:
        """Run `spec` in a fresh container like a build's, then remove everything.

        The container gets the build's hardening, overlay root and limits; its
        /build/work is a new empty host directory owned by the container's root, bound
        before `spec.binds` (so they may bind files below it). Used by the boot test.

        Args:
            run_id: Unique id of the run (a-z, 0-9, '-'), as for a build.
            spec: The command and its binds, environment, network and user.
            log_sink: Receives each line the container writes on stdout and stderr.
            prepare: Called (in a thread) with the host path of /build/work before the
                container starts, to put its inputs there.
            collect: Called (in a thread) with the same path after the container ended
                (whatever its exit status), before everything is removed.

        Returns:
            What happened; a non-zero exit is returned, not raised.

        Raises:
            SandboxError: Set-up failed, or the run timed out, was cancelled or hit
                the disk limit.
        """

        def make_argv(dirs: overlay.BuildDirs, machine: str) -> list[str]:
            full = replace(spec, binds=(Bind(dirs.build_work, WORK_MOUNT), *spec.binds))
            return container_argv(
                self.config, machine=machine, root=dirs.merged, spec=full, host=self.host
            )

        try:
            return await self._execute(
                run_id,
                make_argv=make_argv,
                log_sink=log_sink,
                on_warning=None,
                prepare=prepare,
                collect=collect,
                watch_work=True,
            )
        finally:
            await run_to_completion(self.discard(run_id))

    async def cancel(self, build_id: str) -> bool:
        """Stop a running build; its `run` raises `Cancelled`.

        Returns:
            False if no such build is running.
        """
        run = self._runs.get(build_id)
        if run is None:
            return False
        await self._stop(run, Cancelled("cancelled", build_id=build_id))
        return True

    async def discard(self, build_id: str) -> None:
        """Remove everything left of a build, its output included."""
        await asyncio.to_thread(
            overlay.discard_build_dirs, overlay.BuildDirs.of(self.config, build_id)
        )

    def _build_argv(
        self,
        profile_dir: Path,
        command: Sequence[str],
        source_date_epoch: int,
        package_repo: Path | None,
    ) -> Callable[[overlay.BuildDirs, str], list[str]]:
        if not profile_dir.is_absolute():
            raise ValueError(f"profile_dir must be absolute: {profile_dir}")
        if package_repo is not None and not package_repo.is_absolute():
            raise ValueError(f"package_repo must be absolute: {package_repo}")

        def make_argv(dirs: overlay.BuildDirs, machine: str) -> list[str]:
            return nspawn_argv(
                self.config,
                machine=machine,
                root=dirs.merged,
                profile_dir=profile_dir,
                work_dir=dirs.build_work,
                output_dir=dirs.output,
                source_date_epoch=source_date_epoch,
                command=command,
                host=self.host,
                package_repo=package_repo,
            )

        return make_argv

    def _disk_limit(self, what: str) -> DiskLimit:
        size = format_size(self.config.max_disk_bytes)
        return DiskLimit(
            f"disk limit reached: {what} (its disk of {size}, sandbox.max_disk_bytes, holds "
            "/build/work and /build/output; /tmp is a tmpfs); make the build smaller or ask "
            "the operator to raise sandbox.max_disk_bytes"
        )

    def _failure(self, execution: CommandResult) -> SandboxError:
        code = execution.exit_code
        if execution.out_of_space:
            return self._disk_limit("the build ran out of space")
        if execution.oom_killed:
            limit = format_size(self.config.memory_limit)
            return OutOfMemory(
                f"out of memory (limit {limit}); reduce the build's memory use or ask the "
                "operator to raise memory_limit",
                exit_code=code,
            )
        if execution.pids_limited:
            return ProcessLimit(
                f"too many processes (limit {self.config.pids_limit}); the build was "
                "refused new processes",
                exit_code=code,
            )
        return BuildFailed(
            f"the build command exited with status {code}; see the build log", exit_code=code
        )

    def _check_base(self) -> None:
        base = self.config.base_dir
        missing = missing_mount_points(base)
        if not base.is_dir() or missing:
            raise BaseMissing(
                f"the sandbox base {base} is missing or not prepared "
                f"({', '.join(missing) or 'no directory'}); run scripts/setup-sandbox.sh"
            )

    def _cgroup_parents(self) -> dict[str, Path]:
        own = parse_proc_cgroup(Path("/proc/self/cgroup").read_text(encoding="ascii"))
        return parent_dirs(self.host, own, self.config.machine_prefix)

    def _make_cgroup(self, machine: str) -> BuildCgroup | None:
        if self.host.systemd_pid1:
            return None  # systemd-run's transient scope carries the limits
        parents = self._cgroup_parents()
        cgroup = BuildCgroup(plan_cgroups(self.config, self.host.cgroup_mode, parents, machine))
        cgroup.create()
        return cgroup

    async def _execute(
        self,
        build_id: str,
        *,
        make_argv: Callable[[overlay.BuildDirs, str], list[str]],
        log_sink: LogSink,
        on_warning: WarningHook | None,
        prepare: Callable[[Path], None] | None = None,
        collect: Callable[[Path], None] | None = None,
        watch_work: bool = False,
    ) -> CommandResult:
        self._check_base()
        machine = self.config.machine_name(build_id)
        if build_id in self._runs:
            raise SetupError("a build with this id is already running", build_id=build_id)
        run = _Run(build_id, watch_work=watch_work)
        self._runs[build_id] = run
        try:
            dirs = await asyncio.to_thread(overlay.create_build_dirs, self.config, build_id)
        except FileExistsError as exc:
            del self._runs[build_id]
            raise SetupError(
                "the build's directory already exists; discard it or run cleanup_stale",
                build_id=build_id,
            ) from exc
        except OSError as exc:
            del self._runs[build_id]
            if exc.errno == errno.ENOSPC:
                raise SetupError(
                    f"not enough free space under {self.config.sandbox_root} for the build's "
                    f"disk of {format_size(self.config.max_disk_bytes)} "
                    "(sandbox.max_disk_bytes): free some space, or lower the setting",
                    build_id=build_id,
                ) from exc
            raise SetupError(f"cannot create the build's file systems: {exc}") from exc
        ok = False
        try:
            await self._make_disk(dirs)
            if prepare is not None:
                try:
                    await asyncio.to_thread(prepare, dirs.build_work)
                except OSError as exc:
                    raise SetupError(
                        f"cannot prepare the run's inputs: {exc}", build_id=build_id
                    ) from exc
            run.cgroup = self._make_cgroup(machine)
            argv = make_argv(dirs, machine)
            if run.cgroup is not None:
                procs = [str(p) for p in run.cgroup.procs_files]
                argv = [sys.executable, "-I", "-S", str(_CGEXEC), *procs, "--", *argv]
            result = await self._supervise(run, argv, dirs, log_sink, on_warning)
            if collect is not None:
                await asyncio.to_thread(collect, dirs.build_work)
            ok = True
            return result
        finally:
            # A cancellation must not leave the container half torn down.
            await run_to_completion(self._teardown(run, dirs, keep_output=ok))

    async def _supervise(
        self,
        run: _Run,
        argv: list[str],
        dirs: overlay.BuildDirs,
        log_sink: LogSink,
        on_warning: WarningHook | None,
    ) -> CommandResult:
        started = time.monotonic()
        run.proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=dirs.top,
            env=_SPAWN_ENV,
            start_new_session=True,
        )
        assert run.proc.stdout is not None

        async def sink(line: str) -> None:
            if _ENOSPC in line:
                run.saw_enospc = True
            await log_sink(line)

        pump = asyncio.create_task(
            pump_lines(run.proc.stdout, sink, max_line_bytes=self.config.max_line_bytes)
        )
        helpers = [asyncio.create_task(self._watch_disk(run, dirs))]
        if on_warning is not None:
            helpers.append(asyncio.create_task(self._warn_later(on_warning)))
        try:
            try:
                await asyncio.wait_for(run.proc.wait(), timeout=self.config.timeout_seconds)
            except TimeoutError:
                await self._stop(
                    run,
                    TimedOut(
                        f"timed out after {self.config.timeout_seconds:g} s; the container "
                        "was stopped",
                        build_id=run.build_id,
                    ),
                )
                await run.proc.wait()
            duration = time.monotonic() - started
            # Whatever the payload left behind goes now, before the pipe is drained.
            await self._kill_all(run)
            await asyncio.wait_for(pump, timeout=self.config.kill_wait_seconds)
        except BaseException:
            await run_to_completion(self._kill_all(run))
            pump.cancel()
            raise
        finally:
            for task in helpers:
                task.cancel()
        if run.stop_reason is not None:
            raise run.stop_reason
        cgroup = run.cgroup
        full = await asyncio.to_thread(overlay.disk_full, dirs, margin=self._disk_margin)
        return CommandResult(
            exit_code=run.proc.returncode if run.proc.returncode is not None else -1,
            duration_seconds=duration,
            cpu_seconds=cgroup.cpu_usage_seconds() if cgroup else None,
            oom_killed=cgroup.oom_killed() if cgroup else False,
            pids_limited=cgroup.pids_limited() if cgroup else False,
            out_of_space=full or run.saw_enospc,
        )

    @property
    def _disk_margin(self) -> int:
        """Free bytes on a build's disk below which it counts as full (ext4 keeps a few)."""
        return max(1 << 20, self.config.max_disk_bytes // 200)

    async def _make_disk(self, dirs: overlay.BuildDirs) -> None:
        """Make and mount the build's disk, then its work and output directories.

        Raises:
            SetupError: mkfs.ext4 or the loop mount failed (their message included).
        """
        for argv in (overlay.mkfs_argv(self.config, dirs), overlay.mount_disk_argv(dirs)):
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                cwd="/",
                env=_SPAWN_ENV,
            )
            out, _ = await proc.communicate()
            if proc.returncode != 0:
                said = out.decode("utf-8", "replace").strip()[-500:]
                raise SetupError(
                    f"cannot make the build's disk: `{argv[0]}` exited with status "
                    f"{proc.returncode} ({said}); isorunner needs mkfs.ext4 (e2fsprogs) and "
                    "loop devices (/dev/loop-control)"
                )
        await asyncio.to_thread(overlay.prepare_disk, self.config, dirs)

    async def _warn_later(self, on_warning: WarningHook) -> None:
        await asyncio.sleep(self.config.warning_seconds)
        await on_warning()

    async def _watch_disk(self, run: _Run, dirs: overlay.BuildDirs) -> None:
        config = self.config
        while True:
            await asyncio.sleep(config.disk_check_seconds)
            watched = dirs.build_work if run.watch_work else dirs.output
            used = await asyncio.to_thread(_disk_usage, watched, config.max_output_bytes)
            if await asyncio.to_thread(overlay.disk_full, dirs, margin=self._disk_margin):
                await self._stop(run, self._disk_limit("the build filled its disk; it was stopped"))
                return
            if used > config.max_output_bytes:
                reason = f"the output exceeded {format_size(config.max_output_bytes)}"
            else:
                st = await asyncio.to_thread(os.statvfs, config.sandbox_root)
                if st.f_bavail * st.f_frsize >= config.min_free_bytes:
                    continue
                reason = f"the sandbox disk has less than {format_size(config.min_free_bytes)} free"
            await self._stop(
                run, DiskLimit(f"{reason}; the build was stopped", build_id=run.build_id)
            )
            return

    async def _stop(self, run: _Run, reason: SandboxError) -> None:
        if run.stop_reason is None:
            run.stop_reason = reason
            log.warning("sandbox_stopping", build_id=run.build_id, reason=reason.message)
        await self._kill_all(run)

    async def _kill_all(self, run: _Run) -> None:
        """Kill every process of the container: its cgroup, else nspawn's process group."""
        if run.cgroup is not None:
            if not await run.cgroup.kill(self.config.kill_wait_seconds):
                log.error("sandbox_kill_incomplete", build_id=run.build_id, pids=run.cgroup.pids())
            return
        proc = run.proc
        if proc is not None and proc.returncode is None:
            # systemd host: stopping the scope kills everything in it.
            scope = f"{self.config.machine_name(run.build_id)}.scope"
            await self._spawn_quietly(["systemctl", "kill", "--signal=KILL", scope])
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 9)

    async def _spawn_quietly(self, argv: list[str]) -> int:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            cwd="/",
            env=_SPAWN_ENV,
        )
        return await proc.wait()

    async def _teardown(self, run: _Run, dirs: overlay.BuildDirs, *, keep_output: bool) -> None:
        try:
            await self._kill_all(run)
            if run.cgroup is not None:
                await asyncio.to_thread(run.cgroup.remove)
                if all(other is run for other in self._runs.values()):
                    # The last build out removes the prefix directories isorunner made.
                    # On the loop, like `_make_cgroup`: no build can be creating its
                    # cgroup under them meanwhile (every build registers in _runs first).
                    remove_empty_parents(self._cgroup_parents())
            machine = self.config.machine_name(run.build_id)
            _remove_propagate_dir(machine)
            if keep_output:
                await asyncio.to_thread(overlay.release_build_dirs, dirs)
            else:
                await asyncio.to_thread(overlay.discard_build_dirs, dirs)
        finally:
            self._runs.pop(run.build_id, None)

    async def cleanup_stale(self) -> list[str]:
        """Remove containers left by a crashed process: processes, cgroups, mounts, dirs.

        Call once at start-up, before any build starts (it removes every build under
        `sandbox_root`, which must belong to this isorunner only).

        Returns:
            The build ids (or machine names) cleaned up.
        """
        cleaned: list[str] = []
        prefix = self.config.machine_prefix
        if self.host.systemd_pid1:
            await self._spawn_quietly(["systemctl", "kill", "--signal=KILL", f"{prefix}-*.scope"])
        else:
            parents = self._cgroup_parents()
            for parent in set(parents.values()):
                if not parent.is_dir():
                    continue
                for child in sorted(p for p in parent.iterdir() if p.is_dir()):
                    plan = plan_cgroups(self.config, self.host.cgroup_mode, parents, child.name)
                    await BuildCgroup(plan).kill(self.config.kill_wait_seconds)
                    remove_tree(child)
                    cleaned.append(child.name)
            remove_empty_parents(parents)
        for build_id in overlay.stale_build_ids(self.config):
            dirs = overlay.BuildDirs.of(self.config, build_id)
            for mount_point in _mounts_under(dirs.top):
                overlay.unmount(mount_point)
            await asyncio.to_thread(overlay.discard_build_dirs, dirs)
            _remove_propagate_dir(self.config.machine_name(build_id))
            cleaned.append(build_id)
        if cleaned:
            log.warning("sandbox_stale_removed", cleaned=cleaned)
        return cleaned


def _disk_usage(directory: Path, stop_above: int) -> int:
    """Allocated bytes under `directory` (links not followed); stops counting past `stop_above`."""
    total = 0
    pending = [directory]
    while pending and total <= stop_above:
        with contextlib.suppress(FileNotFoundError), os.scandir(pending.pop()) as entries:
            for entry in entries:
                st = entry.stat(follow_symlinks=False)
                total += max(st.st_size, st.st_blocks * 512)
                if entry.is_dir(follow_symlinks=False):
                    pending.append(Path(entry.path))
    return total


def _mounts_under(top: Path) -> list[Path]:
    """Mount points at or below `top`, deepest first (from /proc/self/mountinfo)."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text(encoding="utf-8").splitlines():
        point = line.split(" ")[4].replace("\\040", " ")
        if point == str(top) or point.startswith(f"{top}/"):
            found.append(Path(point))
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def _remove_propagate_dir(machine: str) -> None:
    # nspawn may leave /run/systemd/nspawn/propagate/<machine> behind.
    path = Path("/run/systemd/nspawn/propagate") / machine
    try:
        path.rmdir()
    except FileNotFoundError:
        return
    except OSError as exc:
        log.warning("sandbox_propagate_dir_left", path=str(path), error=exc.strerror)

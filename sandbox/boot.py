"""`BootTester`: boots an ISO in QEMU inside a sandbox container and says whether it came up.

The I/O shell of the boot test. Every QEMU runs through `BuildSandbox.run_container`,
so the guest gets what a build gets: an overlay root on the read-only base, a private
network namespace (no network at all unless `BootSpec.network`), memory, CPU, pids and
time limits in its own cgroups, and removal of every process, mount and file at the end.
QEMU itself runs as an unprivileged user under its seccomp filter, the ISO is bound
read-only, and the serial console and QMP are Unix sockets in the run's directory that
isorunner connects to from the host (through /proc/self/fd, so a long sandbox path
never hits the 108-byte socket path limit).

One boot: connect to the serial console (QEMU starts the guest only then), feed it to a
`SerialWatch` until the expected pattern, a failure pattern, the guest's end or the
timeout; take a screenshot over QMP (PNG); quit. Kernel mode first reads the ISO's boot
loader configuration (`sandbox.bootconfig`, extracted with xorriso in a container) and
boots that kernel and initramfs with the ISO's own command line plus console=ttyS0.

KVM is used only when a probe guest (`sandbox.vm.probe_image`) really runs under it;
the probe runs once per tester, and every boot's log says which accelerator ran and why.
"""

from __future__ import annotations

import asyncio
import os
import stat
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import structlog

from sandbox import overlay
from sandbox.bootconfig import CONFIG_DIRS, BootEntry, default_entry, kernel_command_line
from sandbox.config import SandboxConfig
from sandbox.exceptions import Cancelled, SandboxError, SetupError
from sandbox.guest import NOT_STARTED, GuestSession, Outcome, Verdict, read_regular
from sandbox.host import HostInfo, detect_host
from sandbox.nspawn import Bind, ContainerSpec
from sandbox.sandbox import BuildSandbox, CommandResult, run_to_completion
from sandbox.serial import DEFAULT_EXPECT, DEFAULT_FAILURES, SerialWatch
from sandbox.vm import (
    IMAGE,
    INITRD,
    KERNEL,
    NOBODY,
    PROBE_DISK,
    PROBE_EXIT_STATUS,
    PROBE_MARKER,
    QEMU,
    RUN_DIR,
    UEFI_VARS,
    Accelerator,
    Firmware,
    KernelBoot,
    Medium,
    UefiFirmware,
    VmSpec,
    drop_privileges,
    probe_argv,
    probe_image,
    qemu_argv,
    select_uefi_firmware,
)

LogSink = Callable[[str], Awaitable[None]]
BootMode = Literal["firmware", "kernel"]

log = structlog.get_logger()

#: Where QEMU's firmware descriptors live in the base (QEMU's interop spec), in order.
FIRMWARE_DESCRIPTOR_DIRS = ("etc/qemu/firmware", "usr/share/qemu/firmware")
#: QEMU's overhead on top of the guest's memory, for the container's memory limit.
QEMU_OVERHEAD_MIB = 768
#: The container may live this much longer than the boot timeout (start, screenshot, quit).
_GRACE_SECONDS = 120.0
_MAX_CONFIG_FILE = 64 << 10
_MAX_CONFIG_FILES = 128
_KEEP_CAPABILITIES = ("CAP_SETUID", "CAP_SETGID")  # for setpriv only; QEMU runs with none
#: Exit status of `_START_SCRIPT` when the ISO lacks the kernel or initramfs it names.
_MISSING_FILE = 3
#: Run as nobody in the container before QEMU: copy OVMF's variable store template, and
#: in kernel mode extract the kernel and the initramfs images (concatenated) from the ISO.
#: Arguments: vars template or "", the ISO, the kernel or "", the initrd count, the
#: initrds, then QEMU's argv. Paths from the ISO are arguments, never script text.
_START_SCRIPT = f"""
set -u
vars=$1 iso=$2 kernel=$3 count=$4
shift 4
if [ -n "$vars" ]; then cp -- "$vars" {UEFI_VARS} || exit 4; fi
extract() {{ xorriso -osirrox on -indev "$iso" -extract "$1" "$2" >/dev/null 2>&1 && [ -f "$2" ]; }}
if [ -n "$kernel" ]; then
    extract "$kernel" {KERNEL} || {{ echo "the kernel $kernel is not on the ISO" >&2; exit 3; }}
    : >{INITRD}
    while [ "$count" -gt 0 ]; do
        extract "$1" {INITRD}.part || {{ echo "the initramfs $1 is not on the ISO" >&2; exit 3; }}
        cat {INITRD}.part >>{INITRD} && rm -f {INITRD}.part
        shift
        count=$((count - 1))
    done
fi
exec "$@"
"""


@dataclass(frozen=True, slots=True)
class BootSpec:
    """What one boot test does.

    Attributes:
        firmware: "bios" (SeaBIOS) or "uefi" (OVMF).
        medium: The ISO as a CD-ROM or as a USB disk.
        mode: "firmware" boots through the ISO's boot loader; "kernel" boots its
            kernel and initramfs directly with its own command line plus console=ttyS0.
        expect: Substrings of the serial console that mean the system is up.
        failures: Substrings that mean the boot failed.
        timeout_seconds: How long the guest may take to show `expect`.
        memory_mib: Guest memory.
        cpus: Guest CPUs.
        network: Give the guest QEMU's user-mode network (outbound only).
    """

    firmware: Firmware
    medium: Medium = "cdrom"
    mode: BootMode = "firmware"
    expect: tuple[str, ...] = DEFAULT_EXPECT
    failures: tuple[str, ...] = DEFAULT_FAILURES
    timeout_seconds: float = 300.0
    memory_mib: int = 2048
    cpus: int = 1
    network: bool = False

    def __post_init__(self) -> None:
        if self.mode not in ("firmware", "kernel"):
            raise ValueError(f"mode must be 'firmware' or 'kernel', got {self.mode!r}")
        if not 1 <= self.timeout_seconds <= 24 * 3600:
            raise ValueError("timeout_seconds must be between 1 s and a day")
        SerialWatch(self.expect, self.failures)  # validates the patterns

    @property
    def name(self) -> str:
        """Short name for logs and pages, e.g. "uefi" or "bios, usb, kernel"."""
        parts: list[str] = [self.firmware]
        if self.medium != "cdrom":
            parts.append(self.medium)
        if self.mode != "firmware":
            parts.append(self.mode)
        return ", ".join(parts)


@dataclass(frozen=True, slots=True)
class BootResult:
    """How one boot test ended.

    Attributes:
        spec: What was tested.
        outcome: "passed", "failed" or "timed_out".
        accelerator: "kvm" or "tcg".
        seconds: From the guest's start to the verdict (to the expected line if passed).
        reason: One sentence a user can act on.
        serial_tail: The last lines of the serial console, oldest first.
        screenshot: The screen at the end, as PNG, when QEMU could take it.
        command_line: The kernel command line booted (kernel mode), or the ISO's default
            entry's when it was looked up to explain a failure.
        serial_console: Whether that command line has console=ttyS<n> (None: unknown).
    """

    spec: BootSpec
    outcome: Outcome
    accelerator: Accelerator
    seconds: float
    reason: str
    serial_tail: tuple[str, ...]
    screenshot: bytes | None
    command_line: str | None = None
    serial_console: bool | None = None

    @property
    def passed(self) -> bool:
        """True if the expected pattern showed."""
        return self.outcome == "passed"


class BootTester:
    """Boots ISOs in QEMU in sandbox containers (see the module docstring)."""

    def __init__(
        self,
        config: SandboxConfig,
        *,
        host: HostInfo | None = None,
        kvm_device: Path = Path("/dev/kvm"),
        probe_seconds: float = 5.0,
        serial_log_lines: int = 5000,
    ) -> None:
        """Set up a tester; nothing runs until `boot` or `accelerator`.

        Args:
            config: The build sandbox's settings; each boot's container gets them with
                its memory limit and timeout sized for the guest.
            host: Host facts (detected when not given).
            kvm_device: The KVM device bound into the probe's and the guests' containers.
            probe_seconds: How long the KVM probe guest may take.
            serial_log_lines: At most this many serial console lines go to the log sink.
        """
        self.config = config
        self.host = host if host is not None else detect_host()
        self.kvm_device = kvm_device
        self.probe_seconds = probe_seconds
        self.serial_log_lines = serial_log_lines
        self._probe_lock = asyncio.Lock()
        self._accelerator: tuple[Accelerator, str] | None = None
        self._sandboxes: dict[str, BuildSandbox] = {}

    async def accelerator(self) -> tuple[Accelerator, str]:
        """KVM if a probe guest really boots under it, else TCG; probed once.

        Returns:
            The accelerator and why it was chosen, in words for the build log.

        Raises:
            SandboxError: The probe's container could not be set up.
        """
        async with self._probe_lock:
            if self._accelerator is None:
                self._accelerator = await self._probe()
                log.info(
                    "boot.accelerator", accelerator=self._accelerator[0], why=self._accelerator[1]
                )
            return self._accelerator

    async def cancel(self, run_id: str) -> bool:
        """Stop a running boot test; its `boot` raises `Cancelled`.

        Returns:
            False if no such boot test is running.
        """
        sandbox = self._sandboxes.get(run_id)
        return sandbox is not None and await sandbox.cancel(run_id)

    async def boot(
        self, run_id: str, iso: Path, spec: BootSpec, *, log_sink: LogSink
    ) -> BootResult:
        """Boot `iso` as `spec` says and report how it went.

        Args:
            run_id: Unique id of this boot (a-z, 0-9, '-'; at most 46 characters, as
                kernel mode also runs `<run_id>-c`).
            iso: The ISO on the host (bound read-only into the container).
            spec: Firmware, medium, mode, patterns and limits.
            log_sink: Receives the accelerator line, QEMU's own messages ("qemu: ...")
                and the serial console ("console: ..."), bounded.

        Returns:
            The verdict with the serial tail and the screenshot.

        Raises:
            SetupError: The base cannot run the test (no QEMU, no UEFI firmware).
            Cancelled: `cancel(run_id)` was called.
            SandboxError: Another failure of the sandbox itself.
        """
        if not iso.is_absolute() or not await asyncio.to_thread(iso.is_file):
            raise SetupError(f"the ISO {iso} is not a file", build_id=run_id)
        accelerator, why = await self.accelerator()
        await log_sink(f"boot test ({spec.name}): {accelerator.upper()}, {why}")
        uefi = self.uefi_firmware() if spec.firmware == "uefi" else None
        entry: BootEntry | None = None
        kernel: KernelBoot | None = None
        if spec.mode == "kernel":
            entry = await self.default_entry(f"{run_id}-c", iso)
            if entry is None:
                return BootResult(
                    spec=spec,
                    outcome="failed",
                    accelerator=accelerator,
                    seconds=0.0,
                    reason="kernel mode: no boot loader entry of the ISO starts a kernel "
                    "(looked in /boot/syslinux, /loader/entries and /boot/grub/grub.cfg)",
                    serial_tail=(),
                    screenshot=None,
                )
            kernel = KernelBoot(
                KERNEL, INITRD if entry.initrds else None, kernel_command_line(entry)
            )
        vm = VmSpec(
            firmware=spec.firmware,
            medium=spec.medium,
            accelerator=accelerator,
            memory_mib=spec.memory_mib,
            cpus=spec.cpus,
            network=spec.network,
            uefi=uefi,
            kernel=kernel,
        )
        watch = SerialWatch(spec.expect, spec.failures)
        watched = await self._run_vm(
            run_id, iso=iso, vm=vm, entry=entry, spec=spec, watch=watch, log_sink=log_sink
        )
        result = BootResult(
            spec=spec,
            outcome=watched.outcome,
            accelerator=accelerator,
            seconds=round(watched.seconds, 3),
            reason=watched.reason,
            serial_tail=watch.lines(),
            screenshot=watched.screenshot,
            command_line=kernel.append if kernel else None,
            serial_console=True if kernel else None,
        )
        if result.outcome != "passed" and spec.mode == "firmware" and not watch.kernel_seen:
            result = await self._explain_silence(f"{run_id}-c", iso, result)
        return result

    def uefi_firmware(self) -> UefiFirmware:
        """OVMF's files in the base, from QEMU's firmware descriptors.

        Raises:
            SetupError: The base has no suitable UEFI firmware.
        """
        descriptors: list[tuple[str, bytes]] = []
        for rank, directory in enumerate(FIRMWARE_DESCRIPTOR_DIRS):
            folder = self.config.base_dir / directory
            if not folder.is_dir():
                continue
            for path in sorted(folder.glob("*.json")):
                data = _read_in_base(self.config.base_dir, path)
                if data is not None:
                    descriptors.append((f"{rank}-{path.name}", data))
        firmware = select_uefi_firmware(descriptors)
        if firmware is None:
            raise SetupError(
                f"the sandbox base {self.config.base_dir} has no UEFI firmware for QEMU "
                "(no /usr/share/qemu/firmware/*.json for x86_64 q35 without Secure Boot); "
                "install edk2-ovmf (Arch) or ovmf (Debian) in the base"
            )
        return firmware

    async def default_entry(self, run_id: str, iso: Path) -> BootEntry | None:
        """The ISO's default boot loader entry, from its configuration (extracted in a container).

        Raises:
            SandboxError: The container could not run.
        """
        command = ["xorriso", "-osirrox", "on", "-abort_on", "NEVER", "-indev", IMAGE]
        for iso_dir in CONFIG_DIRS:
            command += ["-extract", iso_dir, f"{RUN_DIR}/cfg{iso_dir}"]
        files: dict[str, str] = {}

        def collect(work: Path) -> None:
            files.update(_read_configs(work / "cfg"))

        spec = ContainerSpec(
            command=tuple(drop_privileges(command)),
            binds=(Bind(iso, IMAGE, read_only=True),),
            capabilities=_KEEP_CAPABILITIES,
        )
        sandbox = self._sandbox(run_id, timeout=120.0, memory_mib=256)
        try:
            await sandbox.run_container(
                run_id, spec, log_sink=_discard, prepare=self._prepare_run, collect=collect
            )
        finally:
            self._sandboxes.pop(run_id, None)
        return default_entry(files)

    def _sandbox(self, run_id: str, *, timeout: float, memory_mib: int) -> BuildSandbox:
        config = replace(
            self.config,
            memory_limit=(memory_mib + QEMU_OVERHEAD_MIB) << 20,
            timeout_seconds=timeout,
            warning_seconds=timeout,
            pids_limit=max(256, min(self.config.pids_limit, 1024)),
        )
        sandbox = BuildSandbox(config, host=self.host)
        self._sandboxes[run_id] = sandbox
        return sandbox

    def _prepare_run(self, work: Path) -> None:
        """Give the run's directory to the container's nobody; add the ISO's bind target."""
        (work / "image.iso").touch(mode=0o644)
        owner = NOBODY + (self.config.uid_base if self.config.isolation == "userns" else 0)
        for path in (work, work / "image.iso"):
            os.chown(path, owner, owner)

    async def probe(self, accelerator: Accelerator) -> tuple[bool, str]:
        """Boot the probe guest (`sandbox.vm.probe_image`) with `accelerator`.

        Args:
            accelerator: "kvm" (the device is bound into the container) or "tcg".

        Returns:
            Whether the guest ran to its end within `probe_seconds`, and what happened.

        Raises:
            SandboxError: The probe's container could not be set up.
        """
        if accelerator == "kvm" and not await asyncio.to_thread(self.kvm_device.exists):
            return False, f"{self.kvm_device} does not exist"
        output: list[str] = []

        async def sink(line: str) -> None:
            if len(output) < 200 and not _noise(line):
                output.append(line)

        def prepare(work: Path) -> None:
            self._prepare_run(work)
            probe = work / Path(PROBE_DISK).name
            probe.write_bytes(probe_image())
            os.chown(probe, *(work.stat().st_uid,) * 2)

        binds = (Bind(self.kvm_device, "/dev/kvm"),) if accelerator == "kvm" else ()
        spec = ContainerSpec(
            command=tuple(drop_privileges(probe_argv(accelerator, seconds=self.probe_seconds))),
            binds=binds,
            capabilities=_KEEP_CAPABILITIES,
        )
        run_id = f"{accelerator}-probe"
        sandbox = self._sandbox(run_id, timeout=self.probe_seconds + 60, memory_mib=64)
        started = time.monotonic()
        try:
            result = await sandbox.run_container(run_id, spec, log_sink=sink, prepare=prepare)
        finally:
            self._sandboxes.pop(run_id, None)
        took = time.monotonic() - started
        if result.exit_code == PROBE_EXIT_STATUS and any(PROBE_MARKER in line for line in output):
            return True, f"a probe guest ran (container and guest in {took:.1f} s)"
        if result.exit_code == 137:
            return False, f"a probe guest did not run within {self.probe_seconds:g} s"
        errors = [line for line in output if line.startswith((QEMU, "timeout:", "setpriv:"))]
        return False, errors[-1][:300] if errors else f"the probe exited with {result.exit_code}"

    async def _probe(self) -> tuple[Accelerator, str]:
        works, what = await self.probe("kvm")
        if works:
            return "kvm", f"because {what} under KVM"
        return "tcg", f"because KVM does not work here: {what}"

    async def _run_vm(
        self,
        run_id: str,
        *,
        iso: Path,
        vm: VmSpec,
        entry: BootEntry | None,
        spec: BootSpec,
        watch: SerialWatch,
        log_sink: LogSink,
    ) -> Verdict:
        initrds = entry.initrds if entry is not None else ()
        command = [
            "sh",
            "-c",
            _START_SCRIPT,
            "sh",
            vm.uefi.vars_template if vm.uefi else "",
            IMAGE,
            entry.kernel if entry is not None else "",
            str(len(initrds)),
            *initrds,
            *qemu_argv(vm),
        ]
        binds = [Bind(iso, IMAGE, read_only=True)]
        if vm.accelerator == "kvm":
            binds.append(Bind(self.kvm_device, "/dev/kvm"))
        container = ContainerSpec(
            command=tuple(drop_privileges(command)),
            binds=tuple(binds),
            network=spec.network,
            capabilities=_KEEP_CAPABILITIES,
        )
        qemu_lines: list[str] = []

        async def qemu_sink(line: str) -> None:
            if _noise(line):
                return
            if len(qemu_lines) < 200:
                qemu_lines.append(line)
                await log_sink(f"qemu: {line}")

        sandbox = self._sandbox(
            run_id, timeout=spec.timeout_seconds + _GRACE_SECONDS, memory_mib=spec.memory_mib
        )
        work = overlay.BuildDirs.of(sandbox.config, run_id).build_work
        task = asyncio.ensure_future(
            sandbox.run_container(run_id, container, log_sink=qemu_sink, prepare=self._prepare_run)
        )
        try:
            session = GuestSession(
                work=work,
                qemu=task,
                expect=spec.expect,
                timeout_seconds=spec.timeout_seconds,
                watch=watch,
                log_sink=log_sink,
                log_lines=self.serial_log_lines,
            )
            watched = await session.run()
            result, stopped = await _finish(task, sandbox, run_id)
        finally:
            if not task.done():
                task.cancel()
            await run_to_completion(asyncio.gather(task, return_exceptions=True))
            self._sandboxes.pop(run_id, None)
        if isinstance(result, Cancelled) and not stopped:
            raise Cancelled("the boot test was cancelled", build_id=run_id)
        if watched.outcome == "failed" and watched.reason == NOT_STARTED:
            return self._not_started(run_id, result, qemu_lines)
        return watched

    def _not_started(
        self, run_id: str, result: CommandResult | SandboxError, qemu_lines: list[str]
    ) -> Verdict:
        detail = qemu_lines[-1][:400] if qemu_lines else "no message"
        if isinstance(result, CommandResult) and result.exit_code == _MISSING_FILE:
            return Verdict("failed", 0.0, f"kernel mode: {detail}")
        raise SetupError(
            f"QEMU did not start in the sandbox ({detail}); the base needs qemu-system-x86 "
            "(and edk2-ovmf or ovmf for UEFI)",
            build_id=run_id,
        )

    async def _explain_silence(self, run_id: str, iso: Path, result: BootResult) -> BootResult:
        entry = await self.default_entry(run_id, iso)
        if entry is None or entry.serial_console:
            return replace(
                result,
                command_line=entry.append if entry else None,
                serial_console=entry.serial_console if entry else None,
            )
        reason = (
            f"{result.reason}; the kernel wrote nothing to the serial console: the ISO's "
            f"default boot entry ({entry.source}, {entry.label}) has no console=ttyS0 on its "
            "command line. Add console=ttyS0 to the profile's boot loader entries, or boot "
            "in kernel mode, which adds it"
        )
        return replace(result, reason=reason, command_line=entry.append, serial_console=False)


async def _finish(
    task: asyncio.Future[CommandResult], sandbox: BuildSandbox, run_id: str
) -> tuple[CommandResult | SandboxError, bool]:
    """Wait for QEMU's container to end after the quit; stop it if QEMU does not go.

    Returns:
        The container's result or error, and whether this function stopped it.
    """
    try:
        return await asyncio.wait_for(asyncio.shield(task), 30.0), False
    except TimeoutError:
        log.warning("boot.qemu_did_not_quit", run_id=run_id)
        await sandbox.cancel(run_id)
    except SandboxError as exc:
        return exc, False
    try:
        return await task, True
    except SandboxError as exc:
        return exc, True


def _noise(line: str) -> bool:
    """Lines of QEMU's and nspawn's that say nothing about the guest."""
    # QEMU announces the serial socket it waits on; this systemd's nspawn prints the
    # second line on exit with --keep-unit (tests/standin/CONTRACT.md: harmless).
    return "QEMU waiting for connection" in line or line.startswith(
        "Attempted to remove disk file system under"
    )


async def _discard(_line: str) -> None:
    """A log sink that drops the lines (xorriso's chatter while extracting configs)."""


def _read_configs(root: Path) -> dict[str, str]:
    """The boot loader configuration files xorriso extracted under `root`, by ISO path.

    The tree was written by the container from an untrusted ISO: links are never
    followed, only small regular files named *.cfg or *.conf are read, and only so many.
    """
    files: dict[str, str] = {}
    for directory, subdirs, names in os.walk(root, followlinks=False):
        subdirs[:] = sorted(subdirs)[:_MAX_CONFIG_FILES]
        for name in sorted(names):
            if len(files) >= _MAX_CONFIG_FILES or not name.endswith((".cfg", ".conf")):
                continue
            path = Path(directory, name)
            data = read_regular(path, _MAX_CONFIG_FILE)
            if data is not None:
                files["/" + path.relative_to(root).as_posix()] = data.decode("utf-8", "replace")
    return files


def _read_in_base(base: Path, path: Path, hops: int = 8) -> bytes | None:
    """Read a file of the base, resolving symbolic links inside the base, not on the host."""
    for _ in range(hops):
        try:
            info = path.lstat()
        except OSError:
            return None
        if not stat.S_ISLNK(info.st_mode):
            return read_regular(path, 1 << 20)
        target = os.readlink(path)
        path = base / target.lstrip("/") if target.startswith("/") else path.parent / target
        if ".." in Path(target).parts:
            return None
    return None

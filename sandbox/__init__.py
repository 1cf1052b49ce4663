"""The build sandbox: hardened systemd-nspawn containers that turn a profile into an ISO.

It knows nothing of forges or HTTP. The public API is re-exported here
(`from sandbox import BuildSandbox, SandboxConfig`); the modules:

- `sandbox.py`: `BuildSandbox`, the only process spawner (the I/O shell), and its
  results `BuildResult` and `CommandResult`.
- `config.py`: `SandboxConfig`, the frozen settings, and `parse_size`/`format_size`.
- `base.py`: the base's contract (mount points, manifest, UID range) and
  `validate_base`.
- `nspawn.py`: pure argv builders for systemd-nspawn (and systemd-run around it).
- `overlay.py`: a build's directories and its overlay mount.
- `cgroups.py`, `cgexec.py`, `host.py`: resource limits, the cgroup entry helper, and
  what the host offers (cgroup mode, systemd as PID 1).
- `profile.py`, `output.py`: checks of the profile going in and the files coming out.
- `streams.py`: the container's output, line by line.
- `exceptions.py`: the `SandboxError` tree.

The boot test (QEMU in a container like a build's):

- `boot.py`: `BootTester`, `BootSpec`, `BootResult` (the I/O shell; runs containers
  through `BuildSandbox.run_container`).
- `guest.py`: a running guest's serial console and QMP session, to its verdict.
- `vm.py`: pure QEMU argv builders, the KVM probe guest, the UEFI firmware choice.
- `serial.py`: `SerialWatch`, the verdict from a hostile serial console (pure).
- `bootconfig.py`: the kernel an ISO boots, read from its boot loader files (pure).
- `qmp.py`: the QEMU Machine Protocol client.
"""

from sandbox.base import (
    DEFAULT_UID_BASE,
    MANIFEST,
    MOUNT_POINTS,
    UID_COUNT,
    BaseInfo,
    validate_base,
)
from sandbox.boot import BootMode, BootResult, BootSpec, BootTester
from sandbox.config import SandboxConfig, format_size, parse_size
from sandbox.exceptions import (
    BaseMissing,
    BuildEnded,
    BuildFailed,
    Cancelled,
    DiskLimit,
    LimitSetupFailed,
    OutOfMemory,
    OutputRejected,
    ProcessLimit,
    ProfileInvalid,
    QmpError,
    SandboxError,
    SetupError,
    TimedOut,
)
from sandbox.guest import Outcome
from sandbox.nspawn import Bind, ContainerSpec, mkarchiso_command
from sandbox.output import OutputFile, check_output
from sandbox.sandbox import BuildResult, BuildSandbox, CommandResult, LogSink, WarningHook
from sandbox.serial import DEFAULT_EXPECT, DEFAULT_FAILURES
from sandbox.vm import Accelerator, Firmware, Medium

__all__ = [
    "DEFAULT_EXPECT",
    "DEFAULT_FAILURES",
    "DEFAULT_UID_BASE",
    "MANIFEST",
    "MOUNT_POINTS",
    "UID_COUNT",
    "Accelerator",
    "BaseInfo",
    "BaseMissing",
    "Bind",
    "BootMode",
    "BootResult",
    "BootSpec",
    "BootTester",
    "BuildEnded",
    "BuildFailed",
    "BuildResult",
    "BuildSandbox",
    "Cancelled",
    "CommandResult",
    "ContainerSpec",
    "DiskLimit",
    "Firmware",
    "LimitSetupFailed",
    "LogSink",
    "Medium",
    "OutOfMemory",
    "Outcome",
    "OutputFile",
    "OutputRejected",
    "ProcessLimit",
    "ProfileInvalid",
    "QmpError",
    "SandboxConfig",
    "SandboxError",
    "SetupError",
    "TimedOut",
    "WarningHook",
    "check_output",
    "format_size",
    "mkarchiso_command",
    "parse_size",
    "validate_base",
]

"""The `SandboxError` tree: every failure the sandbox reports, with data a caller can use.

Pure: no I/O. Kept apart from the modules that raise these to avoid import cycles.

```
SandboxError                 exit_code, log_path, build_id
├── SetupError               the host cannot run a sandbox (operator must act)
│   ├── BaseMissing          base_dir absent or not prepared (run setup-sandbox.sh)
│   └── LimitSetupFailed     cgroups could not be created or written
├── ProfileInvalid           a required profile file is missing, a link or too big (path)
├── QmpError                 QEMU's monitor refused a command or did not answer (boot test)
└── BuildEnded               the build ran and did not produce an accepted ISO
    ├── BuildFailed          the build command exited non-zero (exit_code)
    │   ├── OutOfMemory      the memory limit was hit ("out of memory (limit 8G)")
    │   └── ProcessLimit     the pids limit was hit (a fork bomb, or a limit too low)
    ├── TimedOut             stopped at timeout_seconds
    ├── Cancelled            stopped by `BuildSandbox.cancel`
    ├── DiskLimit            output over max_output_bytes, or the disk nearly full
    └── OutputRejected       an output file is unsafe (link, FIFO, device, hard link,
                             sparse, oversized) or no ISO was produced (path)
```

Messages say what failed, for which build, and what to do. They never contain secrets
(the sandbox is given none).
"""

from __future__ import annotations

from pathlib import Path


class SandboxError(Exception):
    """Root of the sandbox errors.

    Attributes:
        build_id: The build concerned, when there is one.
        exit_code: The build command's exit code when it ran to an exit, else None.
        log_path: Where the caller stored the build log, if it tells us; the runner
            sets it (the sandbox streams the log to a sink and stores no file itself).
    """

    def __init__(
        self,
        message: str,
        *,
        build_id: str | None = None,
        exit_code: int | None = None,
        log_path: Path | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.build_id = build_id
        self.exit_code = exit_code
        self.log_path = log_path

    def __str__(self) -> str:
        prefix = f"build {self.build_id}: " if self.build_id else ""
        return f"{prefix}{self.message}"


class SetupError(SandboxError):
    """The host is not ready to run sandboxes; an operator must act."""


class BaseMissing(SetupError):
    """The base root file system is absent or lacks what the contract requires."""


class LimitSetupFailed(SetupError):
    """Resource limits could not be put in place, so the build was not started."""


class ProfileInvalid(SandboxError):
    """The profile is unusable; `path` names the offending file (relative to the profile)."""

    def __init__(self, message: str, *, path: str, build_id: str | None = None) -> None:
        super().__init__(message, build_id=build_id)
        self.path = path


class QmpError(SandboxError):
    """QEMU's QMP monitor refused a command, closed its socket or did not answer in time."""


class BuildEnded(SandboxError):
    """The build ran but did not end with an accepted ISO."""


class BuildFailed(BuildEnded):
    """The build command exited with a non-zero status (see the build log)."""


class OutOfMemory(BuildFailed):
    """The container hit its memory limit and the kernel killed a process."""


class ProcessLimit(BuildFailed):
    """The container hit its process (pids) limit."""


class TimedOut(BuildEnded):
    """The build ran past timeout_seconds and was stopped."""


class Cancelled(BuildEnded):
    """The build was cancelled by the caller and stopped."""


class DiskLimit(BuildEnded):
    """The build wrote too much output, or the sandbox disk ran nearly full."""


class OutputRejected(BuildEnded):
    """An output file is unsafe to publish, or no ISO was produced."""

    def __init__(self, message: str, *, path: str | None = None, build_id: str | None = None):
        super().__init__(message, build_id=build_id)
        self.path = path

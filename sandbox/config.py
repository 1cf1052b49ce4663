"""`SandboxConfig`: the frozen settings of the build sandbox, and the size parser they use.

Pure: no I/O. The runner maps its `[sandbox]` configuration section onto
`SandboxConfig(...)` and passes it to `BuildSandbox`; nothing here reads the environment.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sandbox.base import DEFAULT_UID_BASE, UID_COUNT

Isolation = Literal["userns", "root"]

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?B?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_BUILD_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,47}$")


def parse_size(text: str | int) -> int:
    """Parse a byte size such as "8G", "512M", "1.5GiB" or 4096 (binary units).

    Args:
        text: A number of bytes, or a number followed by K, M, G or T (powers of 1024),
            optionally with an "i"/"iB"/"B" suffix.

    Returns:
        The size in bytes.

    Raises:
        ValueError: The text is not a size.
    """
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"size must not be negative: {text}")
        return text
    match = _SIZE_RE.match(text)
    if match is None:
        raise ValueError(f"not a size: {text!r} (expected e.g. 8G, 512M or 4096)")
    number, unit, _suffix = match.groups()
    return int(float(number) * _UNITS[unit.upper()])


def format_size(size: int) -> str:
    """Render a byte count the way users write limits ("8G", "512M", "4096").

    Args:
        size: A number of bytes.

    Returns:
        The shortest exact rendering with a binary unit, else the plain number.
    """
    for unit in ("T", "G", "M", "K"):
        factor = _UNITS[unit]
        if size >= factor and size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)


def check_build_id(build_id: str) -> str:
    """Return `build_id` if it is usable in paths, cgroup and machine names.

    Args:
        build_id: The runner's identifier for one build.

    Returns:
        The same string.

    Raises:
        ValueError: It is not 1-48 characters of lower-case letters, digits and
            hyphens starting with a letter or digit.
    """
    if not _BUILD_ID_RE.match(build_id):
        raise ValueError(
            f"build id {build_id!r} must be 1-48 characters of a-z, 0-9 and '-', "
            "starting with a letter or digit"
        )
    return build_id


@dataclass(frozen=True, slots=True)
class SandboxConfig:
    """Everything the sandbox needs to know; built once by the runner.

    Attributes:
        base_dir: The read-only base root file system (see tests/standin/CONTRACT.md).
        sandbox_root: Where per-build directories live (`builds/<build-id>/`); must be
            on a file system that supports overlayfs upper dirs (ext4, xfs, btrfs).
        memory_limit: Memory cap for the whole container, in bytes (swap not allowed).
        cpus: CPU quota in CPUs (4.0 = four cores' worth of time).
        pids_limit: Maximum number of tasks in the container.
        timeout_seconds: The build is stopped after this long.
        warning_seconds: `on_warning` is called after this long.
        max_output_bytes: Cap on each output file and on the output directory in total.
        max_disk_bytes: The size of the build's disk, which holds /build/work and
            /build/output: allocated on the host when the build starts, and all the
            build may write there (the kernel refuses more).
        uid_base: First host UID/GID of the container's range (the base is chowned to it).
        isolation: "userns" (default, a security boundary) or "root" (no user
            namespace; only for profiles that cannot build otherwise; NOT a boundary).
        machine_prefix: Prefix of container machine names and cgroup directories.
        nspawn: The systemd-nspawn executable.
        systemd_run: The systemd-run executable (used only where systemd is PID 1).
        tmpfs_size: Size option of the `/tmp` and `/var/tmp` tmpfs mounts.
        max_line_bytes: Longer log lines are cut to this length.
        max_profile_file_bytes: Cap on `profiledef.sh` and the packages list.
        min_free_bytes: The build is stopped when the file system holding
            `sandbox_root` has less free space than this.
        disk_check_seconds: How often output size and free space are checked.
        kill_wait_seconds: How long to wait for the container to die after SIGKILL.
    """

    base_dir: Path
    sandbox_root: Path
    memory_limit: int = 8 << 30
    cpus: float = 4.0
    pids_limit: int = 4096
    timeout_seconds: float = 1200.0
    warning_seconds: float = 900.0
    max_output_bytes: int = 4 << 30
    max_disk_bytes: int = 16 << 30
    uid_base: int = DEFAULT_UID_BASE
    isolation: Isolation = "userns"
    machine_prefix: str = "isorunner"
    nspawn: str = "systemd-nspawn"
    systemd_run: str = "systemd-run"
    tmpfs_size: str = "25%"
    max_line_bytes: int = 16384
    max_profile_file_bytes: int = 1 << 20
    min_free_bytes: int = 2 << 30
    disk_check_seconds: float = 5.0
    kill_wait_seconds: float = 10.0

    def __post_init__(self) -> None:
        if self.memory_limit < (16 << 20):
            raise ValueError(f"memory_limit {self.memory_limit} is below 16M")
        if not 0 < self.cpus <= 1024:
            raise ValueError(f"cpus must be in (0, 1024], got {self.cpus}")
        if self.pids_limit < 8:
            raise ValueError(f"pids_limit must be at least 8, got {self.pids_limit}")
        if not 0 < self.warning_seconds <= self.timeout_seconds:
            raise ValueError("warning_seconds must be positive and at most timeout_seconds")
        if self.max_output_bytes <= 0 or self.max_line_bytes < 80:
            raise ValueError("max_output_bytes must be positive and max_line_bytes >= 80")
        if self.max_disk_bytes < (64 << 20):
            raise ValueError(f"max_disk_bytes {self.max_disk_bytes} is below 64M")
        if self.uid_base <= 0 or self.uid_base % UID_COUNT or self.uid_base + UID_COUNT > 2**32:
            raise ValueError(
                f"uid_base {self.uid_base} must be a positive multiple of {UID_COUNT} below 2^32"
            )
        if self.isolation not in ("userns", "root"):
            raise ValueError(f"isolation must be 'userns' or 'root', got {self.isolation!r}")
        if not re.fullmatch(r"[a-z][a-z0-9]{0,14}", self.machine_prefix):
            raise ValueError("machine_prefix must be 1-15 characters of a-z, 0-9")
        if not self.base_dir.is_absolute() or not self.sandbox_root.is_absolute():
            raise ValueError("base_dir and sandbox_root must be absolute paths")

    @property
    def cpu_quota_percent(self) -> int:
        """The CPU quota in systemd's `CPUQuota=` percent (one CPU = 100%)."""
        return max(1, round(self.cpus * 100))

    def machine_name(self, build_id: str) -> str:
        """The container machine name (also its hostname and cgroup name) for a build."""
        return f"{self.machine_prefix}-{check_build_id(build_id)}"

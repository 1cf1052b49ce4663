"""`HostInfo`: what the host offers the sandbox (systemd as PID 1, cgroup layout).

`HostInfo` is a plain value; `detect_host()` is the I/O part that reads `/proc` and
`/sys/fs/cgroup` once at start-up. Tests build `HostInfo(...)` directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

CgroupMode = Literal["v1", "v2"]

#: v1 controllers the sandbox uses, and the hierarchy each lives in.
V1_CONTROLLERS = ("memory", "cpu", "cpuacct", "pids", "freezer")


@dataclass(frozen=True, slots=True)
class HostInfo:
    """Facts about the host that change the container command line and the limits.

    Attributes:
        systemd_pid1: systemd runs as PID 1, so a transient scope can carry the limits.
        cgroup_mode: "v2" on a unified host; "v1" on legacy or hybrid hosts (limits
            then go through the v1 controllers even though `unified/` exists).
        cgroup_root: Where the cgroup file system is mounted (`/sys/fs/cgroup`).
    """

    systemd_pid1: bool
    cgroup_mode: CgroupMode
    cgroup_root: Path = Path("/sys/fs/cgroup")


def detect_cgroup_mode(cgroup_root: Path) -> CgroupMode:
    """Tell a unified (v2) cgroup mount from a legacy or hybrid (v1) one.

    Args:
        cgroup_root: The cgroup mount point, normally `/sys/fs/cgroup`.

    Returns:
        "v2" if `cgroup_root` itself is a cgroup2 mount (it has `cgroup.controllers`),
        otherwise "v1".
    """
    return "v2" if (cgroup_root / "cgroup.controllers").is_file() else "v1"


def detect_host(cgroup_root: Path = Path("/sys/fs/cgroup")) -> HostInfo:
    """Inspect the running host (reads `/run/systemd/system`, `/proc/1/comm`, cgroupfs).

    Args:
        cgroup_root: The cgroup mount point.

    Returns:
        The host's `HostInfo`.
    """
    # sd_booted(3): systemd is PID 1 iff /run/systemd/system/ exists; also check the
    # name so a copied /run in a container does not fool us.
    comm = Path("/proc/1/comm").read_text(encoding="utf-8", errors="replace").strip()
    systemd_pid1 = Path("/run/systemd/system").is_dir() and comm == "systemd"
    return HostInfo(
        systemd_pid1=systemd_pid1,
        cgroup_mode=detect_cgroup_mode(cgroup_root),
        cgroup_root=cgroup_root,
    )

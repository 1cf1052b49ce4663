"""Per-build cgroups through the cgroup file system: layout, limits, OOM checks, kill, removal.

The layout and the limit values are pure (`parse_proc_cgroup`, `plan_cgroups`); the
`BuildCgroup` methods do the file I/O on the cgroup tree. Both cgroup v1 (legacy and
hybrid hosts such as the development machines: memory, cpu, cpuacct, pids and freezer
hierarchies) and v2 (unified: memory.max, cpu.max, pids.max, cgroup.kill) are
supported, chosen by `HostInfo.cgroup_mode`. Used where systemd is not PID 1; where it
is, systemd-run's transient scope carries the limits instead.

Build cgroups live under the cgroup of the isorunner process itself,
`<hierarchy>/<own path>/<machine_prefix>/<machine>`, so any limit placed on isorunner's
own service also bounds its builds, and `cleanup_stale` finds leftovers in one place.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from sandbox.config import SandboxConfig
from sandbox.exceptions import LimitSetupFailed
from sandbox.host import V1_CONTROLLERS, CgroupMode, HostInfo

CFS_PERIOD_US = 100_000


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """Map each controller to the cgroup path `/proc/<pid>/cgroup` lists for it.

    Args:
        text: The contents of `/proc/<pid>/cgroup`.

    Returns:
        Controller name (e.g. "memory", "name=systemd") to path; the v2 line "0::/x"
        is returned under the key "".
    """
    paths: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _hid, controllers, path = parts
        for controller in controllers.split(",") if controllers else [""]:
            paths[controller] = path
    return paths


def parent_dirs(host: HostInfo, own: Mapping[str, str], prefix: str) -> dict[str, Path]:
    """Where the build cgroups of this process go, per controller.

    Args:
        host: Host facts (cgroup mode and mount point).
        own: `parse_proc_cgroup` of this process.
        prefix: `SandboxConfig.machine_prefix`, the directory grouping all builds.

    Returns:
        Controller to parent directory; v2 uses the single key "".
    """
    if host.cgroup_mode == "v2":
        return {"": host.cgroup_root / own.get("", "/").lstrip("/") / prefix}
    return {
        controller: host.cgroup_root / controller / own.get(controller, "/").lstrip("/") / prefix
        for controller in V1_CONTROLLERS
    }


@dataclass(frozen=True, slots=True)
class CgroupPlan:
    """The directories to create and the limit files to write for one build.

    Attributes:
        mode: "v1" or "v2".
        dirs: Controller to the build's cgroup directory ("" for v2).
        writes: (file, value) pairs written in order; each must succeed.
        optional_writes: Pairs written only if the file exists (swap accounting).
    """

    mode: CgroupMode
    dirs: Mapping[str, Path]
    writes: tuple[tuple[Path, str], ...]
    optional_writes: tuple[tuple[Path, str], ...]


def plan_cgroups(
    config: SandboxConfig, mode: CgroupMode, parents: Mapping[str, Path], machine: str
) -> CgroupPlan:
    """Compute the cgroup directories and limit writes for one build.

    Args:
        config: Memory, CPU and pids limits.
        mode: "v1" or "v2".
        parents: `parent_dirs(...)`.
        machine: The build's machine name, used as the cgroup name.

    Returns:
        The plan `BuildCgroup.create` carries out.
    """
    dirs = {controller: parent / machine for controller, parent in parents.items()}
    quota = max(1000, round(config.cpus * CFS_PERIOD_US))
    if mode == "v2":
        d = dirs[""]
        return CgroupPlan(
            mode=mode,
            dirs=dirs,
            writes=(
                (d / "memory.max", str(config.memory_limit)),
                (d / "cpu.max", f"{quota} {CFS_PERIOD_US}"),
                (d / "pids.max", str(config.pids_limit)),
            ),
            # No swap: the workload must be stopped, not slowed to a crawl.
            optional_writes=((d / "memory.swap.max", "0"),),
        )
    return CgroupPlan(
        mode=mode,
        dirs=dirs,
        writes=(
            (dirs["memory"] / "memory.limit_in_bytes", str(config.memory_limit)),
            (dirs["cpu"] / "cpu.cfs_period_us", str(CFS_PERIOD_US)),
            (dirs["cpu"] / "cpu.cfs_quota_us", str(quota)),
            (dirs["pids"] / "pids.max", str(config.pids_limit)),
        ),
        # memsw = memory + swap; equal to the memory limit means no swap. It must be
        # written after memory.limit_in_bytes (memsw may never be below it).
        optional_writes=(
            (dirs["memory"] / "memory.memsw.limit_in_bytes", str(config.memory_limit)),
        ),
    )


def _read_keyed(path: Path) -> dict[str, int]:
    """Read a "key value" per line cgroup file (memory.events, oom_control, pids.events)."""
    values: dict[str, int] = {}
    with contextlib.suppress(FileNotFoundError):
        for line in path.read_text(encoding="ascii").splitlines():
            key, _, value = line.partition(" ")
            if value.strip().isdigit():
                values[key] = int(value)
    return values


class BuildCgroup:
    """The cgroups of one build: created before the container starts, removed after it ends."""

    def __init__(self, plan: CgroupPlan) -> None:
        self.plan = plan

    @property
    def procs_files(self) -> list[Path]:
        """The `cgroup.procs` files a process writes its pid to in order to join (deduplicated)."""
        seen: list[Path] = []
        for d in self.plan.dirs.values():
            procs = d / "cgroup.procs"
            if procs not in seen:
                seen.append(procs)
        return seen

    def _dir(self, v1_controller: str) -> Path:
        return self.plan.dirs["" if self.plan.mode == "v2" else v1_controller]

    def create(self) -> None:
        """Create the directories and write the limits.

        Raises:
            LimitSetupFailed: A directory or limit could not be written; whatever was
                created is removed again.
        """
        try:
            if self.plan.mode == "v2":
                self._enable_v2_controllers(self.plan.dirs[""].parent)
            for d in self.plan.dirs.values():
                d.mkdir(parents=True, exist_ok=True)
            for path, value in self.plan.writes:
                path.write_text(value, encoding="ascii")
            for path, value in self.plan.optional_writes:
                if path.exists():
                    path.write_text(value, encoding="ascii")
        except OSError as exc:
            self.remove()
            raise LimitSetupFailed(
                f"cannot set resource limits in {exc.filename or 'the cgroup tree'}: "
                f"{exc.strerror}; isorunner must run as root with the cgroup file system "
                "writable (or under systemd with Delegate=yes)",
            ) from exc

    @staticmethod
    def _enable_v2_controllers(parent: Path) -> None:
        # v2 "no internal processes": controllers can be enabled for children only in
        # a cgroup without processes of its own, so the builds get their own parent.
        parent.mkdir(parents=True, exist_ok=True)
        for level in (parent.parent, parent):
            control = level / "cgroup.subtree_control"
            if control.exists():
                control.write_text("+memory +cpu +pids", encoding="ascii")

    def oom_killed(self) -> bool:
        """True if the kernel's OOM killer killed a process in this build's memory cgroup."""
        if self.plan.mode == "v2":
            return _read_keyed(self._dir("") / "memory.events").get("oom_kill", 0) > 0
        memory = self._dir("memory")
        control = _read_keyed(memory / "memory.oom_control")
        if "oom_kill" in control:
            return control["oom_kill"] > 0 or control.get("under_oom", 0) > 0
        # Kernels before 4.13 have no oom_kill counter; failcnt counts limit hits.
        return _read_int(memory / "memory.failcnt") > 0

    def pids_limited(self) -> bool:
        """True if a fork was refused because the pids limit was reached."""
        return _read_keyed(self._dir("pids") / "pids.events").get("max", 0) > 0

    def cpu_usage_seconds(self) -> float:
        """CPU time used by the build so far, in seconds."""
        if self.plan.mode == "v2":
            return _read_keyed(self._dir("") / "cpu.stat").get("usage_usec", 0) / 1e6
        return _read_int(self._dir("cpuacct") / "cpuacct.usage") / 1e9

    def pids(self) -> set[int]:
        """The processes in the build's cgroups, child cgroups included."""
        found: set[int] = set()
        for d in set(self.plan.dirs.values()):
            for procs in _walk_files(d, "cgroup.procs"):
                with contextlib.suppress(FileNotFoundError):
                    found.update(int(p) for p in procs.read_text(encoding="ascii").split())
        return found

    async def kill(self, wait_seconds: float) -> bool:
        """Stop every process of the build; nothing forks past the kill.

        v2 writes `cgroup.kill`; v1 freezes the freezer cgroup, SIGKILLs every member
        and thaws it so the signals are delivered.

        Args:
            wait_seconds: How long to wait for the cgroups to become empty.

        Returns:
            True when no process is left.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_seconds
        while True:
            members = self.pids()
            if not members:
                return True
            if loop.time() > deadline:
                return False
            self._kill_once(members)
            await asyncio.sleep(0.02)

    def _kill_once(self, members: set[int]) -> None:
        if self.plan.mode == "v2":
            kill_file = self._dir("") / "cgroup.kill"
            if kill_file.exists():
                kill_file.write_text("1", encoding="ascii")
                return
            freeze, frozen, thawed = self._dir("") / "cgroup.freeze", "1", "0"
        else:
            freeze, frozen, thawed = self._dir("freezer") / "freezer.state", "FROZEN", "THAWED"
        try:
            freeze.write_text(frozen, encoding="ascii")
        except FileNotFoundError:
            freeze = Path()  # no freezer: plain SIGKILL, repeated by the caller
        for pid in members | self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if freeze != Path():
            freeze.write_text(thawed, encoding="ascii")

    def remove(self) -> None:
        """Remove the build's cgroup directories (children first); missing ones are fine.

        Raises:
            OSError: A directory is still busy (processes left), except ENOENT.
        """
        for d in set(self.plan.dirs.values()):
            remove_tree(d)


def remove_tree(cgroup_dir: Path) -> None:
    """Remove a cgroup and its child cgroups, deepest first (cgroupfs has no rm -r).

    Raises:
        OSError: A cgroup still holds processes (EBUSY), or another error than ENOENT.
    """
    if not cgroup_dir.is_dir():
        return
    for sub in sorted(
        (p for p in cgroup_dir.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True
    ):
        _rmdir(sub)
    _rmdir(cgroup_dir)


def remove_empty_parents(parents: Mapping[str, Path]) -> None:
    """Remove the per-instance directories that hold build cgroups, where empty.

    A directory still holding a build's cgroup (EBUSY, ENOTEMPTY) or already gone is
    left as it is: only what isorunner created and no longer uses goes.
    """
    for parent in set(parents.values()):
        try:
            parent.rmdir()
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.EBUSY, errno.ENOTEMPTY):
                raise


def _rmdir(path: Path) -> None:
    try:
        path.rmdir()
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            raise


def _walk_files(directory: Path, name: str) -> list[Path]:
    if not directory.is_dir():
        return []
    return [directory / name, *(p / name for p in directory.rglob("*") if p.is_dir())]


def _read_int(path: Path) -> int:
    try:
        return int(path.read_text(encoding="ascii").strip() or 0)
    except FileNotFoundError:
        return 0

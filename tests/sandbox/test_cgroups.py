"""Tests for sandbox.cgroups on fake cgroup trees (v1 hybrid and v2) in temporary dirs."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandbox.cgroups import (
    BuildCgroup,
    parent_dirs,
    parse_proc_cgroup,
    plan_cgroups,
    remove_empty_parents,
)
from sandbox.config import SandboxConfig
from sandbox.exceptions import LimitSetupFailed
from sandbox.host import HostInfo, detect_cgroup_mode

HYBRID = """9:name=systemd:/
8:pids:/
6:freezer:/
4:memory:/svc/abc
2:cpuacct:/
1:cpu:/
0::/
"""


def _config() -> SandboxConfig:
    return SandboxConfig(
        base_dir=Path("/b"), sandbox_root=Path("/s"), memory_limit=1 << 30, cpus=1.5, pids_limit=99
    )


def _v1_tree(root: Path) -> HostInfo:
    for controller in ("memory", "cpu", "cpuacct", "pids", "freezer"):
        (root / controller).mkdir(parents=True)
    (root / "unified").mkdir()
    (root / "unified" / "cgroup.controllers").write_text("")
    return HostInfo(systemd_pid1=False, cgroup_mode=detect_cgroup_mode(root), cgroup_root=root)


def _v2_tree(root: Path) -> HostInfo:
    root.mkdir()
    (root / "cgroup.controllers").write_text("cpu memory pids")
    (root / "svc").mkdir()
    (root / "svc" / "cgroup.subtree_control").write_text("")
    return HostInfo(systemd_pid1=False, cgroup_mode=detect_cgroup_mode(root), cgroup_root=root)


def test_parse_proc_cgroup_maps_each_controller() -> None:
    """Every controller of /proc/self/cgroup maps to its path; v2 is under ''."""
    parsed = parse_proc_cgroup(HYBRID + "3:cpu,cpuacct:/x\n")
    assert parsed["memory"] == "/svc/abc"
    assert parsed["name=systemd"] == "/"
    assert parsed[""] == "/"
    assert parsed["cpuacct"] == "/x"


def test_detect_cgroup_mode_treats_hybrid_as_v1(tmp_path: Path) -> None:
    """A hybrid tree (v1 hierarchies plus unified/) is v1; a cgroup2 root is v2."""
    assert _v1_tree(tmp_path / "a").cgroup_mode == "v1"
    assert _v2_tree(tmp_path / "b").cgroup_mode == "v2"


def test_parent_dirs_v1_nest_under_the_own_cgroup_of_each_controller(tmp_path: Path) -> None:
    """v1 build cgroups go under this process's cgroup in each hierarchy, then the prefix."""
    host = _v1_tree(tmp_path)
    parents = parent_dirs(host, parse_proc_cgroup(HYBRID), "isorunner")
    assert parents["memory"] == tmp_path / "memory/svc/abc/isorunner"
    assert parents["pids"] == tmp_path / "pids/isorunner"
    assert set(parents) == {"memory", "cpu", "cpuacct", "pids", "freezer"}


def test_plan_cgroups_v1_writes_hybrid_limits(tmp_path: Path) -> None:
    """v1 limits: memory.limit_in_bytes, CFS period and quota, pids.max; memsw optional."""
    host = _v1_tree(tmp_path)
    parents = parent_dirs(host, parse_proc_cgroup(HYBRID), "isorunner")
    plan = plan_cgroups(_config(), "v1", parents, "isorunner-b1")
    mem = tmp_path / "memory/svc/abc/isorunner/isorunner-b1"
    cpu = tmp_path / "cpu/isorunner/isorunner-b1"
    assert plan.writes == (
        (mem / "memory.limit_in_bytes", str(1 << 30)),
        (cpu / "cpu.cfs_period_us", "100000"),
        (cpu / "cpu.cfs_quota_us", "150000"),
        (tmp_path / "pids/isorunner/isorunner-b1/pids.max", "99"),
    )
    assert plan.optional_writes == ((mem / "memory.memsw.limit_in_bytes", str(1 << 30)),)


def test_build_cgroup_create_v1_writes_files_and_lists_procs(tmp_path: Path) -> None:
    """Creating a v1 build cgroup makes every hierarchy's dir and writes the limit files."""
    host = _v1_tree(tmp_path)
    plan = plan_cgroups(_config(), "v1", parent_dirs(host, {}, "isorunner"), "isorunner-b1")
    cgroup = BuildCgroup(plan)
    cgroup.create()
    for path, value in plan.writes:
        assert path.read_text() == value
    # memsw is absent on the fake tree (no swap accounting): skipped, not created.
    assert not plan.optional_writes[0][0].exists()
    assert len(cgroup.procs_files) == 5
    assert all(p.name == "cgroup.procs" for p in cgroup.procs_files)


def test_build_cgroup_create_v2_enables_controllers_and_writes_limits(tmp_path: Path) -> None:
    """v2: controllers are enabled for the builds' parent, then memory/cpu/pids limits set."""
    host = _v2_tree(tmp_path / "cg")
    parents = parent_dirs(host, {"": "/svc"}, "isorunner")
    plan = plan_cgroups(_config(), "v2", parents, "isorunner-b2")
    (parents[""]).mkdir()
    (parents[""] / "cgroup.subtree_control").write_text("")
    BuildCgroup(plan).create()
    build = tmp_path / "cg/svc/isorunner/isorunner-b2"
    assert (build / "memory.max").read_text() == str(1 << 30)
    assert (build / "cpu.max").read_text() == "150000 100000"
    assert (build / "pids.max").read_text() == "99"
    assert (tmp_path / "cg/svc/isorunner/cgroup.subtree_control").read_text() == (
        "+memory +cpu +pids"
    )


def test_build_cgroup_create_fails_with_an_actionable_error(tmp_path: Path) -> None:
    """A cgroup tree that cannot be written raises LimitSetupFailed naming the problem."""
    host = _v1_tree(tmp_path)
    (tmp_path / "pids" / "isorunner").write_text("a file where a directory should be")
    plan = plan_cgroups(_config(), "v1", parent_dirs(host, {}, "isorunner"), "isorunner-b3")
    with pytest.raises(LimitSetupFailed, match="cannot set resource limits"):
        BuildCgroup(plan).create()


def test_build_cgroup_reads_v1_oom_and_pids_events(tmp_path: Path) -> None:
    """oom_kill in memory.oom_control and max in pids.events are reported."""
    host = _v1_tree(tmp_path)
    cgroup = BuildCgroup(plan_cgroups(_config(), "v1", parent_dirs(host, {}, "p"), "m"))
    cgroup.create()
    mem, pids = cgroup.plan.dirs["memory"], cgroup.plan.dirs["pids"]
    assert not cgroup.oom_killed()
    assert not cgroup.pids_limited()
    (mem / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 1\n")
    (pids / "pids.events").write_text("max 3\n")
    (cgroup.plan.dirs["cpuacct"] / "cpuacct.usage").write_text("2500000000\n")
    assert cgroup.oom_killed()
    assert cgroup.pids_limited()
    assert cgroup.cpu_usage_seconds() == 2.5


def test_build_cgroup_v1_old_kernel_falls_back_to_failcnt(tmp_path: Path) -> None:
    """Without an oom_kill counter, memory.failcnt tells that the limit was hit."""
    host = _v1_tree(tmp_path)
    cgroup = BuildCgroup(plan_cgroups(_config(), "v1", parent_dirs(host, {}, "p"), "m"))
    cgroup.create()
    (cgroup.plan.dirs["memory"] / "memory.oom_control").write_text("under_oom 0\n")
    (cgroup.plan.dirs["memory"] / "memory.failcnt").write_text("0\n")
    assert not cgroup.oom_killed()
    (cgroup.plan.dirs["memory"] / "memory.failcnt").write_text("12\n")
    assert cgroup.oom_killed()


def test_build_cgroup_reads_v2_events(tmp_path: Path) -> None:
    """v2 reads oom_kill from memory.events, max from pids.events and usage_usec."""
    host = _v2_tree(tmp_path / "cg")
    cgroup = BuildCgroup(plan_cgroups(_config(), "v2", parent_dirs(host, {}, "p"), "m"))
    cgroup.create()
    d = cgroup.plan.dirs[""]
    (d / "memory.events").write_text("low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n")
    (d / "pids.events").write_text("max 0\n")
    (d / "cpu.stat").write_text("usage_usec 1500000\nuser_usec 1\n")
    assert cgroup.oom_killed()
    assert not cgroup.pids_limited()
    assert cgroup.cpu_usage_seconds() == 1.5


@pytest.mark.anyio
async def test_build_cgroup_kill_on_empty_cgroup_returns_at_once(tmp_path: Path) -> None:
    """Killing a cgroup without processes succeeds immediately."""
    host = _v2_tree(tmp_path / "cg")
    cgroup = BuildCgroup(plan_cgroups(_config(), "v2", parent_dirs(host, {}, "p"), "m"))
    cgroup.create()
    (cgroup.plan.dirs[""] / "cgroup.procs").write_text("")
    assert await cgroup.kill(0.1)
    assert cgroup.pids() == set()


def test_remove_empty_parents_removes_only_empty_ones(tmp_path: Path) -> None:
    """Empty per-instance directories go; one still holding a build, or gone, is left."""
    empty, busy = tmp_path / "memory" / "iso1", tmp_path / "pids" / "iso1"
    empty.mkdir(parents=True)
    (busy / "iso1-build-7").mkdir(parents=True)
    remove_empty_parents({"memory": empty, "pids": busy, "cpu": tmp_path / "cpu" / "iso1"})
    assert not empty.exists()
    assert (busy / "iso1-build-7").is_dir()

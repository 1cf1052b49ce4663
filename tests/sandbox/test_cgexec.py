"""Tests for sandbox.cgexec, the entry point that joins cgroups before exec."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import sandbox.cgexec

CGEXEC = Path(sandbox.cgexec.__file__)


def test_cgexec_writes_its_own_pid_then_execs(tmp_path: Path) -> None:
    """The pid written to each cgroup.procs is the pid of the command it becomes."""
    procs = [tmp_path / "a.procs", tmp_path / "b.procs"]
    out = subprocess.run(
        [sys.executable, "-I", "-S", str(CGEXEC), *map(str, procs), "--", "sh", "-c", "echo $$"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert procs[0].read_text() == out.stdout.strip()
    assert procs[1].read_text() == out.stdout.strip()


def test_cgexec_refuses_to_run_when_a_cgroup_cannot_be_joined(tmp_path: Path) -> None:
    """If a cgroup cannot be joined the command never runs and the exit status is 125."""
    marker = tmp_path / "ran"
    rc = sandbox.cgexec.main(
        [str(tmp_path / "missing" / "cgroup.procs"), "--", "touch", str(marker)]
    )
    assert rc == 125
    assert not marker.exists()


def test_cgexec_rejects_a_missing_separator_or_command() -> None:
    """Usage errors exit 125 without running anything."""
    assert sandbox.cgexec.main(["x"]) == 125
    assert sandbox.cgexec.main(["x", "--"]) == 125

"""Tests for the shipped service files: Containerfile, systemd unit and tmpfiles snippet.

Neither the image nor the unit can run on the development machines (no container
engine, no Arch mirror, systemd is not PID 1), so these tests read the files and
check what the README and the code rely on; `systemd-analyze verify` checks the
unit's syntax where it is installed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
CONTAINERFILE = ROOT / "Containerfile"
UNIT = ROOT / "contrib" / "systemd" / "isorunner.service"
TMPFILES = ROOT / "contrib" / "systemd" / "isorunner.tmpfiles"
CREDENTIALS = "/run/credentials/isorunner.service/"


def instructions(text: str) -> list[tuple[str, str]]:
    """The Containerfile's instructions as (KEYWORD, arguments), continuations joined."""
    joined = re.sub(r"\\\n", " ", text)
    result = []
    for line in joined.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            keyword, _, rest = stripped.partition(" ")
            result.append((keyword.upper(), " ".join(rest.split())))
    return result


def unit_settings(text: str) -> dict[str, list[str]]:
    """`Section.Key` → every value given (systemd keys may repeat)."""
    settings: dict[str, list[str]] = {}
    section = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", ";")):
            continue
        if stripped.startswith("["):
            section = stripped.strip("[]")
            continue
        key, _, value = stripped.partition("=")
        settings.setdefault(f"{section}.{key}", []).append(value)
    return settings


def test_containerfile_runs_systemd_on_arch_with_a_state_volume() -> None:
    """Arch base, systemd as PID 1 with its stop signal, state on a volume, port 8000."""
    found = instructions(CONTAINERFILE.read_text())
    assert found[0] == ("FROM", "docker.io/library/archlinux:latest")
    assert ("CMD", '["/usr/lib/systemd/systemd"]') in found
    assert ("STOPSIGNAL", "SIGRTMIN+3") in found
    assert ("VOLUME", '["/var/lib/isorunner"]') in found
    assert ("EXPOSE", "8000") in found


def test_containerfile_copies_every_package_and_existing_file() -> None:
    """Every wheel package is copied, and every COPY source exists in the tree."""
    found = instructions(CONTAINERFILE.read_text())
    sources = [
        source for keyword, args in found if keyword == "COPY" for source in args.split()[:-1]
    ]
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["hatch"]["build"][
        "targets"
    ]["wheel"]["packages"]
    assert set(packages) <= set(sources)
    for source in sources:
        assert (ROOT / source).exists(), source
    runs = " ".join(args for keyword, args in found if keyword == "RUN")
    assert "uv sync --locked --no-dev --no-editable" in runs
    assert "systemctl enable isorunner.service" in runs


def test_containerfile_documents_the_run_flags_the_sandbox_needs() -> None:
    """The documented `podman run` carries each flag the comments explain."""
    text = CONTAINERFILE.read_text()
    for flag in (
        "--privileged",
        "--systemd=always",
        "--cgroupns=private",
        "--userns=host",
        "-v isorunner-state:/var/lib/isorunner",
        "target=/etc/credstore/github-token",
    ):
        assert flag in text, flag
    for explained in ("--privileged", "--systemd=always", "--userns=host", "-v …:/var/lib"):
        assert f"# {explained}" in text, explained


def test_unit_stops_cleanly_restarts_and_keeps_state() -> None:
    """KillMode=mixed, restart on failure, /var/lib/isorunner, the image's binary."""
    settings = unit_settings(UNIT.read_text())
    assert settings["Service.KillMode"] == ["mixed"]
    assert settings["Service.Restart"] == ["on-failure"]
    assert settings["Service.StateDirectory"] == ["isorunner"]
    (exec_start,) = settings["Service.ExecStart"]
    assert exec_start.startswith("/opt/isorunner/bin/isorunner serve --config ")
    assert "/opt/isorunner" in CONTAINERFILE.read_text()


def test_unit_hardening_leaves_nspawn_its_needs() -> None:
    """None of the settings that break systemd-nspawn is switched on."""
    settings = unit_settings(UNIT.read_text())
    for key in (
        "PrivateDevices",
        "ProtectKernelTunables",
        "ProtectControlGroups",
        "RestrictNamespaces",
        "NoNewPrivileges",
        "RestrictSUIDSGID",
        "SystemCallFilter",
        "PrivateUsers",
        "PrivateNetwork",
    ):
        assert f"Service.{key}" not in settings, key
    assert settings["Service.ProtectSystem"] == ["full"]


def test_readme_credential_paths_match_the_units_credentials() -> None:
    """Each credential path in the README is a LoadCredential= id of the unit."""
    ids = {line.split("=", 1)[1].lstrip("#") for line in _credential_lines()}
    readme = (ROOT / "README.md").read_text()
    used = set(re.findall(re.escape(CREDENTIALS) + r"([a-z-]+)", readme))
    assert used
    assert used <= ids


def _credential_lines() -> list[str]:
    return [
        line.strip().lstrip("#")
        for line in UNIT.read_text().splitlines()
        if re.match(r"#?LoadCredential=[a-z-]+$", line.strip())
    ]


def test_tmpfiles_snippet_creates_the_state_layout() -> None:
    """The tmpfiles snippet creates the directories the default settings use."""
    paths = {line.split()[1] for line in TMPFILES.read_text().splitlines() if line[:1] == "d"}
    assert {
        "/var/lib/isorunner/logs",
        "/var/lib/isorunner/artifacts",
        "/var/lib/isorunner/sandbox",
        "/etc/credstore",
    } <= paths


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    """The systemd tools accept the unit (the binary path swapped for one that exists)."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("needs systemd-analyze")
    unit = tmp_path / "isorunner.service"
    unit.write_text(UNIT.read_text().replace("/opt/isorunner/bin/isorunner", "/bin/true"))
    result = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, check=False
    )
    problems = [line for line in result.stderr.splitlines() if str(unit) in line]
    assert problems == []
    assert result.returncode == 0, result.stderr

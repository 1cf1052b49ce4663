"""Tests for the host tool list (runner/hosttools.txt, runner.hosttools).

The list must name every program the code and scripts run (found by tests/runner/
toolscan.py: Python's AST, shell scripts through shfmt's parser), name nothing nobody
runs, be read the same way by scripts/install (bash) and by Python, and agree with
the Containerfile and README's Arch package lines. `check_tools` is fed a fake PATH.
"""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

import pytest

from runner.check import check_tools
from runner.hosttools import (
    SERVICE_NEEDS,
    HostTool,
    ToolListError,
    Which,
    host_system,
    missing_tools,
    parse_tools,
    read_tools,
)
from tests.conftest import require_tool
from tests.runner.toolscan import (
    ROOT,
    programs_in_tree,
    python_files,
    python_programs,
    quoted,
    shell_programs,
)

ALL_NEEDS = frozenset({"run", "setup", "base", "install", "test", "bench"})
ROW = "repo-add  pacman-package-manager  pacman  setup  -  indexes the mirror"


def listed_programs() -> set[str]:
    """Every program the shipped list names."""
    return {program for tool in read_tools() for program in tool.programs}


def present_except(*absent: str) -> Which:
    """A PATH lookup that finds every program but `absent`."""

    def which(name: str) -> str | None:
        return None if name in absent else f"/usr/bin/{name}"

    return which


# --- the shipped list ---------------------------------------------------------------


def test_tool_list_names_every_program_the_code_runs() -> None:
    """Each program a module or script runs (toolscan's rules) is in the list."""
    require_tool("shfmt")
    listed = listed_programs()
    unlisted = {
        name: sorted(files) for name, files in programs_in_tree().items() if name not in listed
    }
    assert unlisted == {}, f"add to runner/hosttools.txt: {unlisted}"


def test_tool_list_names_no_program_nobody_runs() -> None:
    """Each listed program is run by the code (or named in it), or by a listed program."""
    require_tool("shfmt")
    found = set(programs_in_tree())
    named = {
        node.value
        for path in python_files()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    }
    listed = listed_programs()
    stale = {
        program
        for tool in read_tools()
        if tool.via is None
        for program in tool.programs
        if program not in found and program not in named
    }
    assert stale == set(), f"nothing runs {quoted(stale)}: drop it from runner/hosttools.txt"
    vias = {tool.via for tool in read_tools() if tool.via is not None}
    assert vias <= listed


def test_tool_list_gives_each_host_program_a_package() -> None:
    """A program needed on the host has a Debian or an Arch package; `base` ones are Arch's."""
    for tool in read_tools():
        assert tool.debian or tool.arch, tool.programs
        if tool.needs == {"base"}:
            assert tool.debian is None
            assert tool.arch is not None


def test_scripts_install_reads_the_list_as_python_does() -> None:
    """`scripts/install --list` prints the Debian packages of the chosen needs, no more."""
    for args, needs in (
        ([], ALL_NEEDS),
        (["--runtime"], frozenset({"run", "setup", "install"})),
    ):
        printed = subprocess.run(
            ["bash", str(ROOT / "scripts" / "install"), "--list", *args],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        expected = {t.debian for t in read_tools() if t.needs & needs and t.debian is not None}
        assert sorted(printed) == sorted(expected)
    assert "pacman-package-manager" in expected
    assert "chromium" not in expected


def arch_packages_installed_by(text: str, command: str) -> set[str]:
    """The package names after `command` in `text` (backslash continuations joined)."""
    joined = re.sub(r"\\\n", " ", text)
    match = re.search(re.escape(command) + r"([^&`]*)", joined)
    assert match is not None, command
    return {word for word in match.group(1).split() if not word.startswith("-")}


def test_containerfile_and_readme_install_the_arch_packages_the_service_needs() -> None:
    """The image's and README's pacman lines hold each Arch package the service needs."""
    needed = {
        tool.arch
        for tool in read_tools()
        if tool.needs & (SERVICE_NEEDS | {"install"}) and tool.arch is not None
    }
    image = arch_packages_installed_by(
        (ROOT / "Containerfile").read_text(), "pacman -Syu --noconfirm --needed"
    )
    readme = arch_packages_installed_by((ROOT / "README.md").read_text(), "pacman -S --needed")
    assert needed - image == set()
    assert needed - readme == set()


# --- parsing ------------------------------------------------------------------------


def test_parse_tools_reads_columns_and_dashes() -> None:
    """Comma lists split, "-" means none, the purpose keeps its spaces."""
    [tool] = parse_tools(
        "# comment\n\nsetcap,getcap  libcap2-bin  -  setup,test  tar  keeps file capabilities\n"
    )
    assert tool == HostTool(
        programs=("setcap", "getcap"),
        debian="libcap2-bin",
        arch=None,
        needs=frozenset({"setup", "test"}),
        via="tar",
        purpose="keeps file capabilities",
    )
    assert tool.package("debian") == "libcap2-bin"
    assert tool.package("arch") is None


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("repo-add pacman-package-manager pacman setup -", "needs 6 columns"),
        ("repo-add pacman-package-manager pacman later - x", r"unknown need \['later'\]"),
        ("Repo-Add pacman-package-manager pacman setup - x", "bad program name"),
        ("repo-add pacman;rm pacman setup - x", "bad package name"),
        (f"{ROW}\n{ROW}", r"line 2: \['repo-add'\] listed twice"),
    ],
)
def test_parse_tools_refuses_a_malformed_row(text: str, problem: str) -> None:
    """A bad row is named by its line number and problem."""
    with pytest.raises(ToolListError, match=problem):
        parse_tools(text)


def test_parse_tools_is_linear_on_a_long_hostile_row() -> None:
    """A 200 000-character row is refused quickly, not matched with backtracking."""
    with pytest.raises(ToolListError, match="bad program name"):
        parse_tools("a" * 100_000 + "!" + "-" * 100_000 + " d a setup - x")


# --- what is missing ----------------------------------------------------------------


def test_missing_tools_picks_the_package_of_the_host_system() -> None:
    """On Debian the Debian package is named, on Arch the Arch one; unneeded rows skip."""
    tools = parse_tools(
        f"{ROW}\npacstrap  -  arch-install-scripts  setup  -  installs the base\n"
        "chromium  chromium  chromium  test  -  is the browser\n"
    )
    which = present_except("repo-add", "pacstrap", "chromium")
    on_debian = missing_tools(tools, needs=SERVICE_NEEDS, system="debian", which=which)
    on_arch = missing_tools(tools, needs=SERVICE_NEEDS, system="arch", which=which)
    assert [m.program for m in on_debian] == ["repo-add"]
    assert [m.program for m in on_arch] == ["repo-add", "pacstrap"]
    assert on_debian[0].message() == (
        "repo-add is missing: install the Debian package pacman-package-manager "
        "(it indexes the mirror)"
    )
    assert on_arch[0].message().startswith("repo-add is missing: install the Arch package pacman")


def test_check_tools_names_each_missing_program_with_its_package() -> None:
    """`isorunner check` fails one line per missing program, naming its package."""
    findings = check_tools(present_except("systemd-nspawn", "gpg"), "debian")
    assert [(f.ok, f.message) for f in findings] == [
        (
            False,
            "systemd-nspawn is missing: install the Debian package systemd-container (it runs "
            "each build container; setup-sandbox.sh runs pacman in the new root with it)",
        ),
        (
            False,
            "gpg is missing: install the Debian package gpg (it checks the bootstrap "
            "tarball's signature by Arch's release key; makes the optional detached GPG "
            "signature of releases ([signing] gpg_key))",
        ),
    ]
    arch = check_tools(present_except("systemd-nspawn"), "arch")
    assert "install the Arch package systemd " in arch[0].message


def test_check_tools_passes_when_every_service_program_is_found() -> None:
    """With everything on PATH there is one ok finding; test-only programs are not asked."""
    asked: list[str] = []

    def which(name: str) -> str:
        asked.append(name)
        return f"/usr/bin/{name}"

    [finding] = check_tools(which, "debian")
    assert finding.ok
    assert "systemd-nspawn" in asked
    assert "pacman-key" in asked
    assert "repo-add" not in asked
    assert "chromium" not in asked
    assert "pacstrap" not in asked


def test_host_system_is_arch_only_with_arch_release(tmp_path: Path) -> None:
    """/etc/arch-release decides, as in scripts/setup-sandbox.sh."""
    marker = tmp_path / "arch-release"
    assert host_system(marker) == "debian"
    marker.touch()
    assert host_system(marker) == "arch"


# --- the scanner itself ---------------------------------------------------------------


def test_shell_programs_finds_commands_and_skips_data_builtins_and_functions() -> None:
    """Pipelines, $(…), case arms, runners and find -exec count; heredocs and builtins do not."""
    require_tool("shfmt")
    script = """#!/bin/bash
helper() { gpg --verify "$(basename -- "$1")" | grep -q good; }
x="$(date +%s)"
case "$1" in -r) setcap cap_net_raw+ep f ;; esac
setpriv --reuid=1 env HOME="${x}" makepkg --force
find . -exec getcap {} +
command -v debootstrap >/dev/null
cat <<EOF
not_a_program --at-all
EOF
echo done; helper; scripts/install; "${var}" arg
"""
    assert shell_programs(script) == {
        "gpg",
        "basename",
        "grep",
        "date",
        "setcap",
        "setpriv",
        "env",
        "makepkg",
        "find",
        "getcap",
        "debootstrap",
        "cat",
    }


def test_python_programs_finds_argv_heads_and_lookups() -> None:
    """Spawn calls, argv names, option lists, helpers, loops, parametrize count; CLI args not."""
    source = """
import subprocess, shutil, pytest
subprocess.run(["xorriso", "-indev", iso])
proc = await asyncio.create_subprocess_exec(*argv)
argv = ["setpriv", "--reuid=1", *rest]
cmd = pin(cpu) + ["wrk", "-t1"]
def pin(cpu): return ["taskset", "-c", str(cpu)]
subprocess.run(f"curl -s {url} | tar -xz", shell=True)
shutil.which("chromium")
for tool in ("repo-add", "bsdtar"):
    require_tool(tool)
@pytest.mark.parametrize(("tool", "field"), [("b2sum", "b2")])
def t(tool, field): ...
run("gpg", "--verify", sig)
await sandbox.run("it-ok", profile)
main(["check", "--config", path])
assert calls == ["fail", "/t/proc"]
labels = ["forge", "kind"]
"""
    assert python_programs(source) == {
        "xorriso",
        "setpriv",
        "taskset",
        "curl",
        "tar",
        "wrk",
        "gpg",
        "chromium",
        "repo-add",
        "bsdtar",
        "b2sum",
    }

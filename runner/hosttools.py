"""The external programs isorunner needs on its host, and which of them are missing.

The list itself is package data, `runner/hosttools.txt`: one row per package naming its
programs, its Debian and Arch package names, who needs them and what for.
`scripts/install` reads the same file to decide what to `apt-get`, and
`isorunner check` uses this module to name a missing program with its package.

Pure apart from `read_tools` (reads the packaged file) and `host_system` (looks at
/etc/arch-release); the PATH lookup is injected.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

#: Who needs a program (the file's header says what each means).
NEEDS = frozenset({"run", "setup", "base", "install", "test", "bench"})
#: What a running installation needs on its host: `isorunner check` looks for these.
SERVICE_NEEDS = frozenset({"run", "setup"})
DATA_FILE = "hosttools.txt"
ARCH_RELEASE = Path("/etc/arch-release")

System = Literal["debian", "arch"]
Which = Callable[[str], str | None]

_PROGRAM = re.compile(r"[a-z0-9][a-z0-9+._-]*")
_PACKAGE = re.compile(r"[a-z0-9][a-z0-9+._-]*|-")
_FIELDS = 6


class ToolListError(ValueError):
    """A row of the host tool list is malformed (a defect in the package, not the host)."""


@dataclass(frozen=True, slots=True)
class HostTool:
    """One row: programs that come from one package, and why they are needed."""

    programs: tuple[str, ...]
    debian: str | None
    arch: str | None
    needs: frozenset[str]
    via: str | None
    purpose: str

    def package(self, system: System) -> str | None:
        """The package that provides the programs on `system`; None: not needed there."""
        return self.debian if system == "debian" else self.arch


@dataclass(frozen=True, slots=True)
class MissingTool:
    """A program that is needed but not on PATH, and where to get it."""

    program: str
    tool: HostTool
    system: System

    def message(self) -> str:
        """One line a user can act on: what is missing, what to install, and why."""
        package = self.tool.package(self.system)
        return (
            f"{self.program} is missing: install the {self.system.capitalize()} package "
            f"{package} (it {self.tool.purpose})"
        )


def parse_tools(text: str) -> tuple[HostTool, ...]:
    """Parse the list's text: whitespace-separated columns, `#` comments.

    Raises:
        ToolListError: A row is malformed, names an unknown need, or repeats a program.
    """
    tools: list[HostTool] = []
    seen: set[str] = set()
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split(None, _FIELDS - 1)
        if len(fields) != _FIELDS:
            raise ToolListError(f"{DATA_FILE} line {number}: needs {_FIELDS} columns")
        programs_text, debian, arch, needs_text, via, purpose = fields
        # "-": a package of data, not programs (a keyring): installed, never looked up.
        programs = () if programs_text == "-" else tuple(programs_text.split(","))
        needs = frozenset(needs_text.split(","))
        if not all(_PROGRAM.fullmatch(name) for name in programs):
            raise ToolListError(f"{DATA_FILE} line {number}: bad program name")
        if not (_PACKAGE.fullmatch(debian) and _PACKAGE.fullmatch(arch)):
            raise ToolListError(f"{DATA_FILE} line {number}: bad package name")
        if not needs <= NEEDS:
            raise ToolListError(f"{DATA_FILE} line {number}: unknown need {sorted(needs - NEEDS)}")
        repeated = seen.intersection(programs)
        if repeated:
            raise ToolListError(f"{DATA_FILE} line {number}: {sorted(repeated)} listed twice")
        seen.update(programs)
        tools.append(
            HostTool(
                programs=programs,
                debian=None if debian == "-" else debian,
                arch=None if arch == "-" else arch,
                needs=needs,
                via=None if via == "-" else via,
                purpose=purpose,
            )
        )
    return tuple(tools)


def read_tools() -> tuple[HostTool, ...]:
    """The list shipped in the package (`runner/hosttools.txt`)."""
    return parse_tools(resources.files(__package__).joinpath(DATA_FILE).read_text("utf-8"))


def host_system(arch_release: Path = ARCH_RELEASE) -> System:
    """`arch` on Arch Linux (as scripts/setup-sandbox.sh decides), else `debian`."""
    return "arch" if arch_release.exists() else "debian"


def missing_tools(
    tools: Iterable[HostTool],
    *,
    needs: frozenset[str],
    system: System,
    which: Which,
) -> list[MissingTool]:
    """The programs needed for `needs` on `system` that `which` does not find.

    Args:
        tools: The list (`read_tools()`).
        needs: Which uses count, e.g. `SERVICE_NEEDS`.
        system: Picks the package column; a program without a package there is skipped.
        which: Finds a program on PATH (`shutil.which`); tests inject a fake.
    """
    return [
        MissingTool(program, tool, system)
        for tool in tools
        if tool.needs & needs and tool.package(system) is not None
        for program in tool.programs
        if which(program) is None
    ]

"""Running the host's real pacman against a private database, config and keyring.

The config text, the argv and the reading of pacman's output are pure functions
(`pacman_conf`, `resolve_argv`, `parse_resolved`, `resolve_error`); `run_pacman` is the
one function here that spawns a process.

pacman is used for what it alone does right: resolving the profile's targets with
their dependencies, groups and providers (`-Sp`, which also checks each database's
signature, under the repository's SigLevel, as it loads it). Its config names no
reachable server (`file:///nonexistent`), so pacman never downloads anything itself:
isorunner's downloader does that, with retries, resume and progress lines.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from runner.packages.exceptions import (
    DependencyUnresolvable,
    PackageError,
    PackageNotFound,
    PackageSetupError,
    SignatureInvalid,
)
from runner.packages.sources import DEFAULT_SIG_LEVEL, Repository

#: Where pacman would download from: nowhere. Every file is put in place beforehand.
OFFLINE_SERVER = "file:///nonexistent/isorunner-offline/$repo"
#: How much of pacman's output is kept (its errors come first, and are short).
MAX_OUTPUT_BYTES = 1 << 20
#: pacman's print format: repository, name, version, separated by single spaces.
PRINT_FORMAT = "%r %n %v"
_ENV_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True, slots=True)
class PacmanPaths:
    """The private places one pacman run uses (all under one work directory).

    Attributes:
        config: The generated pacman.conf.
        dbpath: `DBPath`: `sync/<repo>.db` files and an empty `local/`.
        cachedir: `CacheDir`: empty for resolution; the files to check for verification.
        gpgdir: `GPGDir`: the keyring (shared, never written by isorunner).
        root: `RootDir`: an empty directory; nothing is installed.
    """

    config: Path
    dbpath: Path
    cachedir: Path
    gpgdir: Path
    root: Path

    @classmethod
    def under(cls, work: Path, *, gpgdir: Path) -> PacmanPaths:
        """The layout under `work`."""
        return cls(
            config=work / "pacman.conf",
            dbpath=work / "db",
            cachedir=work / "cache",
            gpgdir=gpgdir,
            root=work / "root",
        )


@dataclass(frozen=True, slots=True)
class Resolved:
    """One package of pacman's answer: which repository, which name and version."""

    repo: str
    name: str
    version: str

    @property
    def key(self) -> str:
        """The package's database entry name, `<name>-<version>`."""
        return f"{self.name}-{self.version}"


def pacman_conf(paths: PacmanPaths, *, arch: str, repositories: Sequence[Repository]) -> str:
    """The pacman.conf of a private run (no hooks, no log outside the work dir).

    Args:
        paths: Where the run's files live.
        arch: The build's architecture.
        repositories: The repositories, in search order; a non-default SigLevel is
            written into the repository's section.

    Returns:
        The file's text.
    """
    work = paths.config.parent
    lines = [
        "# Written by isorunner for one private pacman run; never edit.",
        "[options]",
        f"RootDir = {paths.root}",
        f"DBPath = {paths.dbpath}/",
        f"CacheDir = {paths.cachedir}/",
        f"LogFile = {work}/pacman.log",
        f"HookDir = {work}/hooks/",
        f"GPGDir = {paths.gpgdir}/",
        f"Architecture = {arch}",
        f"SigLevel = {DEFAULT_SIG_LEVEL}",
        "",
    ]
    for repo in repositories:
        lines.append(f"[{repo.name}]")
        if repo.sig_level != DEFAULT_SIG_LEVEL:
            lines.append(f"SigLevel = {repo.sig_level}")
        lines.extend((f"Server = {OFFLINE_SERVER}", ""))
    return "\n".join(lines)


def resolve_argv(pacman: str, paths: PacmanPaths, targets: Sequence[str]) -> list[str]:
    """`pacman -Sp`: print what installing `targets` into an empty root would take."""
    return [
        pacman,
        "--config",
        str(paths.config),
        "--noconfirm",
        "--noprogressbar",
        "-Sp",
        "--print-format",
        PRINT_FORMAT,
        "--",
        *targets,
    ]


def parse_resolved(stdout: str, repositories: Sequence[str]) -> list[Resolved]:
    """Read `pacman -Sp --print-format "%r %n %v"` output.

    Lines that are not `<known repo> <name> <version>` (prompts pacman prints about
    providers, for example) are skipped.
    """
    known = set(repositories)
    resolved: list[Resolved] = []
    for line in stdout.splitlines():
        parts = line.split(" ")
        if len(parts) == 3 and parts[0] in known and all(parts):
            resolved.append(Resolved(*parts))
    return resolved


_NOT_FOUND = re.compile(r"^error: target not found: (\S+)$")
_DB_INVALID = re.compile(r"^error: database '([^']+)' is not valid")
_DB_SIG = re.compile(r"^error: ([A-Za-z0-9@._+-]+): signature from .* is (?:invalid|unknown trust)")


def _error_lines(output: str) -> list[str]:
    """Pacman's error lines and the `::` lines that explain a dependency failure."""
    kept = []
    for raw in output.splitlines():
        line = raw.strip()
        if line.startswith("error:") or (
            line.startswith(":: ") and ("unable to satisfy" in line or "in conflict" in line)
        ):
            kept.append(line)
    return kept


def resolve_error(output: str, repositories: Sequence[str]) -> PackageError:
    """Turn the output of a failed `pacman -Sp` into the error a user can act on.

    Args:
        output: pacman's stderr and stdout.
        repositories: The repositories searched, in order.

    Returns:
        `PackageNotFound`, `SignatureInvalid` (a database), `DependencyUnresolvable`,
        or `PackageSetupError` quoting pacman when nothing better is known.
    """
    lines = _error_lines(output)
    missing = [m.group(1) for line in lines if (m := _NOT_FOUND.match(line))]
    if missing:
        return PackageNotFound(missing, repositories)
    for line in lines:
        match = _DB_INVALID.match(line) or _DB_SIG.match(line)
        if match and match.group(1) in repositories:
            return SignatureInvalid(
                f"the database of [{match.group(1)}] did not verify ({line}); the mirror "
                "may serve a tampered or stale database, or the keyring is out of date",
                package=f"{match.group(1)} database",
            )
    if any("could not satisfy dependencies" in line or "conflict" in line for line in lines):
        return DependencyUnresolvable(
            "pacman cannot install the profile's packages together: "
            + "; ".join(line for line in lines if not line.startswith("error: failed to prepare"))
        )
    quoted = "; ".join(lines[:5]) or output.strip()[-500:] or "no output"
    return PackageSetupError(f"pacman could not resolve the packages: {quoted}")


@dataclass(frozen=True, slots=True)
class PacmanRun:
    """What one pacman run did: exit status and its output (bounded)."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        """The standard error then the standard output: errors first."""
        return f"{self.stderr}\n{self.stdout}"


async def run_pacman(argv: Sequence[str], *, home: Path, seconds: float) -> PacmanRun:
    """Run pacman and collect its output; the process is killed on timeout or cancel.

    Args:
        argv: The command (from `resolve_argv` or `verify_argv`).
        home: HOME for pacman and gpg (the run's work directory).
        seconds: How long the run may take before it is stopped.

    Returns:
        The exit status and output.

    Raises:
        PackageSetupError: pacman is not installed, or ran past `timeout`.
    """
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={"PATH": _ENV_PATH, "LC_ALL": "C", "HOME": str(home)},
            cwd=home,
        )
    except FileNotFoundError as exc:
        raise PackageSetupError(
            f"{argv[0]} is not installed; install pacman on the host "
            "(Debian: pacman-package-manager; scripts/install does it)"
        ) from exc
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout=seconds)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise PackageSetupError(
            f"pacman did not finish within {seconds:g} s; is the host overloaded?"
        ) from None
    except BaseException:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    assert proc.returncode is not None
    return PacmanRun(
        proc.returncode,
        out[:MAX_OUTPUT_BYTES].decode("utf-8", "replace"),
        err[:MAX_OUTPUT_BYTES].decode("utf-8", "replace"),
    )

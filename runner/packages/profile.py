"""What a profile asks of package sync: its package names and its repository names.

Parsing is pure (`parse_package_list`, `parse_repository_names`, `check_package_name`);
`read_profile_packages` is the small I/O part that opens the profile's files without
following links and with a size cap. The profile is hostile: only names are taken from
it, as data. Nothing in it is executed; `Include` lines of its pacman.conf are not
followed and its `Server` lines are ignored (the runner's config says where packages
come from).

mkarchiso reads `packages.<arch>` (else `packages`) for the ISO and
`bootstrap_packages.<arch>` (else `bootstrap_packages`) for the bootstrap tarball, one
name a line, `#` starting a comment (reference/mkarchiso-nspawn.md §3.3). Which build
modes a profile uses is decided in `profiledef.sh`, which only the sandbox runs, so both
lists are synced.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from runner.packages.exceptions import ProfilePackagesInvalid

#: The most bytes read from one list or the pacman.conf.
MAX_FILE_BYTES = 256 * 1024
#: The most package names a profile may list (all lists together).
MAX_PACKAGES = 4096
#: The longest package name accepted (pacman sets none; file names stop at 255).
MAX_NAME_LENGTH = 128
#: The most repositories a profile's pacman.conf may name.
MAX_REPOSITORIES = 32
#: The longest repository name accepted.
MAX_REPOSITORY_LENGTH = 64

# makepkg's rule for pkgname (lint_pkgname): alphanumerics and @ . _ + -, not starting
# with a hyphen or a dot. Checked character by character: linear in the name's length.
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789@._+-")
# pacman.conf section names are used in file names (<repo>.db); same alphabet.
_REPOSITORY_CHARS = _NAME_CHARS


@dataclass(frozen=True, slots=True)
class ProfilePackages:
    """What package sync reads from one profile.

    Attributes:
        targets: The package names, in the order of first appearance, without duplicates.
        lists: The list files they came from, relative to the profile.
        repositories: The repository names of the profile's pacman.conf in order, or
            None when the profile has no pacman.conf.
    """

    targets: tuple[str, ...]
    lists: tuple[str, ...]
    repositories: tuple[str, ...] | None


def check_package_name(name: str) -> str | None:
    """Say what is wrong with a package name, or return None when pacman can take it.

    Args:
        name: One entry of a package list, already stripped of blanks and comments.

    Returns:
        None for a valid name, else a short reason.
    """
    if len(name) > MAX_NAME_LENGTH:
        return f"is longer than {MAX_NAME_LENGTH} characters"
    if name[0] in "-.":
        return "starts with a hyphen or a dot"
    for char in name:
        if char not in _NAME_CHARS:
            return f"holds {char!r}; names use letters, digits and @ . _ + - only"
    return None


def _shown(text: str) -> str:
    return repr(text[:40] + ("…" if len(text) > 40 else ""))


def parse_package_list(text: str, *, path: str) -> list[str]:
    """Return the package names of one list: `#` comments and blank lines dropped.

    As mkarchiso reads it (`sed '/^[[:blank:]]*#.*/d;s/#.*//;/^[[:blank:]]*$/d'`), except
    that a name with blanks around it is refused here rather than passed on to fail
    later as "target not found".

    Args:
        text: The list file's contents.
        path: Its name in the profile, for messages.

    Returns:
        The names in file order.

    Raises:
        ProfilePackagesInvalid: A line holds more than one name or an invalid one, or
            the list is longer than `MAX_PACKAGES`.
    """
    names: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0]
        if not line.strip():
            continue
        if line != line.strip():
            # mkarchiso passes the line to pacman as it is: "linux " is not found.
            raise ProfilePackagesInvalid(
                f"{path} line {number}: {_shown(line)} has blanks around the name "
                "(a comment after a name leaves them too); write the name alone on its line",
                path=path,
            )
        if len(names) >= MAX_PACKAGES:
            raise ProfilePackagesInvalid(
                f"{path} names more than {MAX_PACKAGES} packages; split the profile", path=path
            )
        if any(c.isspace() for c in line):
            raise ProfilePackagesInvalid(
                f"{path} line {number}: {_shown(line)} holds more than one word; "
                "write one package name a line",
                path=path,
            )
        reason = check_package_name(line)
        if reason is not None:
            raise ProfilePackagesInvalid(
                f"{path} line {number}: the package name {_shown(line)} {reason}", path=path
            )
        names.append(line)
    return names


def check_repository_name(name: str) -> str | None:
    """Say what is wrong with a repository name, or return None when it is usable."""
    if not name or len(name) > MAX_REPOSITORY_LENGTH:
        return f"must be 1 to {MAX_REPOSITORY_LENGTH} characters"
    if name[0] in "-.":
        return "starts with a hyphen or a dot"
    for char in name:
        if char not in _REPOSITORY_CHARS:
            return f"holds {char!r}; names use letters, digits and @ . _ + - only"
    return None


def parse_repository_names(text: str, *, path: str = "pacman.conf") -> tuple[str, ...]:
    """Return the repository section names of a pacman.conf, in order, once each.

    `[options]` is not a repository. Every other line (Server, SigLevel, Include, …) is
    ignored: the runner's config says where packages come from.

    Args:
        text: The file's contents.
        path: Its name in the profile, for messages.

    Returns:
        The repository names.

    Raises:
        ProfilePackagesInvalid: A section header is malformed or names an invalid
            repository, or there are more than `MAX_REPOSITORIES`.
    """
    names: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line.startswith("["):
            continue
        if not line.endswith("]"):
            raise ProfilePackagesInvalid(
                f"{path} line {number}: {_shown(line)} is not a [section] header", path=path
            )
        name = line[1:-1].strip()
        if name == "options" or name in names:
            continue
        reason = check_repository_name(name)
        if reason is not None:
            raise ProfilePackagesInvalid(
                f"{path} line {number}: the repository name {_shown(name)} {reason}", path=path
            )
        if len(names) >= MAX_REPOSITORIES:
            raise ProfilePackagesInvalid(
                f"{path} names more than {MAX_REPOSITORIES} repositories", path=path
            )
        names.append(name)
    return tuple(names)


def list_files(arch: str) -> tuple[tuple[str, str], ...]:
    """The list files mkarchiso reads for `arch`: (preferred name, fallback name) pairs."""
    return ((f"packages.{arch}", "packages"), (f"bootstrap_packages.{arch}", "bootstrap_packages"))


def _read_text(profile_dir: Path, name: str) -> str | None:
    """Read `profile_dir/name` as UTF-8 without following links; None when it is absent."""
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused below).
        fd = os.open(profile_dir / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ProfilePackagesInvalid(
                f"{name} is a symbolic link; it must be a regular file in the profile", path=name
            ) from None
        raise ProfilePackagesInvalid(f"cannot read {name}: {exc.strerror}", path=name) from None
    with os.fdopen(fd, "rb") as handle:
        st = os.fstat(handle.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ProfilePackagesInvalid(f"{name} is not a regular file", path=name)
        data = handle.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise ProfilePackagesInvalid(
            f"{name} is over {MAX_FILE_BYTES} bytes; make it smaller", path=name
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ProfilePackagesInvalid(f"{name} is not UTF-8 text", path=name) from None


def read_profile_packages(profile_dir: Path, *, arch: str) -> ProfilePackages:
    """Read the package names and repository names a profile asks for (see module doc).

    Args:
        profile_dir: The extracted profile on the host.
        arch: The build's architecture (`packages.<arch>` is preferred to `packages`).

    Returns:
        What the profile asks for.

    Raises:
        ProfilePackagesInvalid: A file is a link, too big, not text, or malformed; or
            the profile lists no package at all.
    """
    targets: dict[str, None] = {}
    used: list[str] = []
    for preferred, fallback in list_files(arch):
        for name in (preferred, fallback):
            text = _read_text(profile_dir, name)
            if text is None:
                continue
            used.append(name)
            for target in parse_package_list(text, path=name):
                targets.setdefault(target, None)
            break
    if len(targets) > MAX_PACKAGES:
        raise ProfilePackagesInvalid(
            f"the package lists name more than {MAX_PACKAGES} packages together",
            path=used[-1],
        )
    if not targets:
        raise ProfilePackagesInvalid(
            f"the profile names no package: add packages.{arch} (one package a line)",
            path=f"packages.{arch}",
        )
    conf = _read_text(profile_dir, "pacman.conf")
    repositories = None if conf is None else parse_repository_names(conf)
    return ProfilePackages(targets=tuple(targets), lists=tuple(used), repositories=repositories)

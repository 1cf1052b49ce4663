"""Checks on a profile directory before it is handed to a build.

Does read-only file-system I/O (lstat only; nothing is opened through a link). The
profile is untrusted: links inside it are legitimate (Arch's releng ships absolute links
such as `airootfs/etc/localtime`), so they are kept as they are and only ever resolved
inside the container. Only the two files mkarchiso reads first must be regular files.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from sandbox.exceptions import ProfileInvalid

PROFILEDEF = "profiledef.sh"


@dataclass(frozen=True, slots=True)
class ProfileFiles:
    """The checked files of a profile.

    Attributes:
        profile_dir: The profile directory (host side).
        packages: Names of the package list files found (`packages.x86_64`, ...).
    """

    profile_dir: Path
    packages: tuple[str, ...]


def _is_package_list(name: str) -> bool:
    return name == "packages" or (name.startswith("packages.") and len(name) > len("packages."))


def _check_regular(path: Path, name: str, max_bytes: int) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise ProfileInvalid(
            f"the profile has no {name}; add it at the top of the profile repository",
            path=name,
        ) from None
    if stat.S_ISLNK(st.st_mode):
        raise ProfileInvalid(
            f"{name} is a symbolic link; it must be a regular file in the profile", path=name
        )
    if not stat.S_ISREG(st.st_mode):
        raise ProfileInvalid(f"{name} is not a regular file", path=name)
    if st.st_size > max_bytes:
        raise ProfileInvalid(
            f"{name} is {st.st_size} bytes, over the limit of {max_bytes}; make it smaller",
            path=name,
        )


def check_profile(profile_dir: Path, *, max_file_bytes: int) -> ProfileFiles:
    """Check that a profile has `profiledef.sh` and a package list as small regular files.

    Args:
        profile_dir: The profile directory on the host.
        max_file_bytes: Size cap for each checked file.

    Returns:
        What was found.

    Raises:
        ProfileInvalid: The directory or a required file is missing, a link, not a
            regular file or too big; `path` names it relative to the profile.
    """
    try:
        top = os.lstat(profile_dir)
    except FileNotFoundError:
        raise ProfileInvalid(f"profile directory {profile_dir} does not exist", path=".") from None
    if not stat.S_ISDIR(top.st_mode):
        raise ProfileInvalid(f"profile {profile_dir} is not a directory", path=".")
    _check_regular(profile_dir / PROFILEDEF, PROFILEDEF, max_file_bytes)
    with os.scandir(profile_dir) as entries:
        lists = sorted(e.name for e in entries if _is_package_list(e.name))
    if not lists:
        raise ProfileInvalid(
            "the profile has no package list; add packages.x86_64 (one package per line)",
            path="packages.x86_64",
        )
    for name in lists:
        _check_regular(profile_dir / name, name, max_file_bytes)
    return ProfileFiles(profile_dir=profile_dir, packages=tuple(lists))

"""The sandbox base's contract, stated once: what a prepared base holds, and checking it.

The constants are pure; `missing_mount_points`, `read_manifest` and `validate_base` read a
few small files and directory entries of the base (blocking I/O; run them on a
thread from async code). The full contract, shared with `scripts/setup-sandbox.sh`
and the test stand-in, is `tests/standin/CONTRACT.md`:

- the mount points `build/profile`, `build/work`, `build/output` and
  `srv/isorunner/repo` (empty directories, because the container's root is read-only;
  the last is where each build's own package repository is bound);
- the manifest `etc/isorunner/manifest.json`, a JSON object recording among others
  `created` and `uid_base`;
- the UID range: the whole base is owned by `uid_base .. uid_base + 65535`
  (container root = `uid_base`), which `--private-users=<uid_base>:65536` maps.

Used by `BuildSandbox` (mount points before each build), by `isorunner check` and by
`GET /readyz` (`validate_base`, through `runner.check.check_base`). Paths here are relative to the
base root; inside the container they are absolute (`/build/profile`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from sandbox.exceptions import BaseMissing

PROFILE_MOUNT: Final = "build/profile"
"""Where the profile is bound read-only."""
WORK_MOUNT: Final = "build/work"
"""Where mkarchiso's work directory is bound (on disk, not tmpfs)."""
OUTPUT_MOUNT: Final = "build/output"
"""Where the build writes its ISO."""
PACKAGE_REPO_MOUNT: Final = "srv/isorunner/repo"
"""Where each build's own package repository is bound read-only (runner/packages)."""
MOUNT_POINTS: Final = (PROFILE_MOUNT, WORK_MOUNT, OUTPUT_MOUNT, PACKAGE_REPO_MOUNT)
"""The directories the base must hold for the binds, relative to its root."""

MANIFEST: Final = "etc/isorunner/manifest.json"
"""The manifest `scripts/setup-sandbox.sh` writes last, relative to the base root."""
OFFLINE_PACMAN_CONF: Final = "etc/isorunner/pacman.conf"
"""The offline pacman.conf passed to `mkarchiso -C`, relative to the base root."""

DEFAULT_UID_BASE: Final = 2147352576
"""Default first host UID/GID of the container's range (0x7FFE0000)."""
UID_COUNT: Final = 65536
"""Size of the UID/GID range a container gets (`--private-users=<base>:65536`)."""

_SETUP = "scripts/setup-sandbox.sh"


@dataclass(frozen=True, slots=True)
class BaseInfo:
    """A base that passed `validate_base`, as its manifest describes it.

    Attributes:
        path: The base root.
        created: When the base was made (ISO-8601), or "?" when the manifest omits it.
        uid_base: The first UID of the range that owns it.
    """

    path: Path
    created: str
    uid_base: int


def missing_mount_points(base: Path) -> list[str]:
    """Return the mount points (relative paths) that are not directories in `base`."""
    return [point for point in MOUNT_POINTS if not (base / point).is_dir()]


def read_manifest(base: Path) -> dict[str, object]:
    """Read and parse the base's manifest.

    Raises:
        BaseMissing: The manifest cannot be read, is not JSON, or is not an object.
    """
    manifest = base / MANIFEST
    try:
        data = json.loads(manifest.read_text())
    except (OSError, ValueError) as exc:
        raise BaseMissing(f"{manifest} is unreadable ({exc}): run {_SETUP} again") from exc
    if not isinstance(data, dict):
        raise BaseMissing(f"{manifest} is not a JSON object: run setup-sandbox.sh again")
    return data


def validate_base(
    base: Path, *, uid_base: int, isolation: Literal["userns", "root"] = "userns"
) -> BaseInfo:
    """Check that `base` is a prepared base for containers of the UID range `uid_base`.

    Args:
        base: The base root.
        uid_base: The configured first UID of the containers' range.
        isolation: "userns" also requires the base root to be owned by `uid_base`.

    Returns:
        What the manifest says of the base.

    Raises:
        BaseMissing: The base is absent, has no readable manifest, was made for another
            UID range, lacks a mount point or belongs to another UID; the message says
            what to run.
    """
    if not base.is_dir():
        raise BaseMissing(f"{base} is missing: run {_SETUP}")
    data = read_manifest(base)
    if data.get("uid_base") != uid_base:
        raise BaseMissing(
            f"the base is owned by uid range {data.get('uid_base')} but sandbox.uid_base is "
            f"{uid_base}: make them agree (set sandbox.uid_base, or rebuild the base with "
            f"{_SETUP} --uid-base {uid_base})"
        )
    missing = missing_mount_points(base)
    if missing:
        raise BaseMissing(
            f"{base} lacks {', '.join(missing)} (needed for the read-only binds): "
            f"run {_SETUP} again"
        )
    owner = base.stat().st_uid
    if isolation == "userns" and owner != uid_base:
        raise BaseMissing(
            f"{base} belongs to uid {owner}, not sandbox.uid_base {uid_base}: the manifest "
            f"and the files disagree; rebuild the base with {_SETUP}"
        )
    return BaseInfo(path=base, created=str(data.get("created", "?")), uid_base=uid_base)

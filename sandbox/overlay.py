"""Per-build file systems: the overlay root over the read-only base, work and output dirs.

`BuildDirs` (the layout) is pure; `create_build_dirs`, `release_build_dirs`,
`discard_build_dirs` and `stale_build_ids` do file-system I/O and call mount(2) and
umount2(2) directly (no process is spawned). Creating a build's file systems costs a
few mkdirs and one mount, whatever the size of the base.

Layout under `sandbox_root/builds/<build-id>/`:

    upper/       overlay upper dir (what the container writes to its root; little, as
                 the root is read-only inside)
    ovl-work/    overlayfs's own work dir
    merged/      the overlay mount: the container's root
    build-work/  mkarchiso's work dir, bound at /build/work (on disk, not tmpfs)
    output/      bound at /build/output; the ISO ends up here

Who deletes what: `release_build_dirs` (called by `BuildSandbox` when a build ends,
whatever the outcome) unmounts the overlay and removes everything but `output/`; the
caller collects the ISO and then calls `BuildSandbox.discard(build_id)`, which removes
the rest. `BuildSandbox.cleanup_stale()` removes whatever a crashed process left.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from sandbox.config import SandboxConfig, check_build_id

MNT_DETACH = 2


@dataclass(frozen=True, slots=True)
class BuildDirs:
    """The directories of one build (see the module docstring for the layout)."""

    top: Path

    @classmethod
    def of(cls, config: SandboxConfig, build_id: str) -> BuildDirs:
        """The layout for `build_id` under `config.sandbox_root`."""
        return cls(config.sandbox_root / "builds" / check_build_id(build_id))

    @property
    def upper(self) -> Path:
        """Overlay upper dir."""
        return self.top / "upper"

    @property
    def ovl_work(self) -> Path:
        """Overlay work dir."""
        return self.top / "ovl-work"

    @property
    def merged(self) -> Path:
        """The overlay mount point, the container's root."""
        return self.top / "merged"

    @property
    def build_work(self) -> Path:
        """The host directory bound at /build/work (mkarchiso's work dir)."""
        return self.top / "build-work"

    @property
    def output(self) -> Path:
        """The output dir on the host."""
        return self.top / "output"

    def mount_options(self, base_dir: Path) -> str:
        """The overlayfs mount data string.

        Raises:
            ValueError: A path contains a character overlayfs cannot take (comma, colon, backslash).
        """
        paths = (base_dir, self.upper, self.ovl_work)
        for path in paths:
            if any(c in str(path) for c in ",:\\"):
                raise ValueError(f"overlayfs cannot use a path with ',', ':' or '\\': {path}")
        return f"lowerdir={base_dir},upperdir={self.upper},workdir={self.ovl_work}"


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _mount_overlay(target: Path, options: str) -> None:
    rc = _libc().mount(b"isorunner", os.fsencode(target), b"overlay", 0, options.encode())
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount overlay on {target}: {os.strerror(err)}", str(target))


def unmount(target: Path) -> None:
    """Unmount `target`, lazily if it is busy; a path that is not mounted is fine.

    Raises:
        OSError: umount2 failed for another reason than "not mounted" or "no such path".
    """
    for flags in (0, MNT_DETACH):
        if _libc().umount2(os.fsencode(target), flags) == 0:
            return
        err = ctypes.get_errno()
        if err in (errno.EINVAL, errno.ENOENT):
            return
        if err != errno.EBUSY:
            raise OSError(err, f"umount {target}: {os.strerror(err)}", str(target))
    raise OSError(errno.EBUSY, f"umount {target}: still busy", str(target))


def create_build_dirs(config: SandboxConfig, build_id: str) -> BuildDirs:
    """Create the build's directories, owned by the container's root, and mount the overlay.

    Args:
        config: Where the base and the sandbox root are; the UID range.
        build_id: The build (must not have directories already).

    Returns:
        The layout, with `merged` mounted.

    Raises:
        FileExistsError: The build's directory exists (a previous run was not discarded).
        OSError: A directory or the mount could not be made; what was made is removed.
    """
    dirs = BuildDirs.of(config, build_id)
    dirs.top.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    dirs.top.mkdir(mode=0o700)
    try:
        for path in (dirs.upper, dirs.ovl_work, dirs.merged, dirs.build_work, dirs.output):
            path.mkdir(mode=0o755)
        owner = config.uid_base if config.isolation == "userns" else 0
        # The overlay root takes the upper dir's owner: it must be the container's root.
        for path in (dirs.upper, dirs.build_work, dirs.output):
            os.chown(path, owner, owner)
        _mount_overlay(dirs.merged, dirs.mount_options(config.base_dir))
    except BaseException:
        shutil.rmtree(dirs.top)
        raise
    return dirs


def release_build_dirs(dirs: BuildDirs) -> None:
    """Unmount the overlay and remove everything of the build except `output/`.

    Raises:
        OSError: The overlay could not be unmounted or a directory removed.
    """
    unmount(dirs.merged)
    for path in (dirs.merged, dirs.upper, dirs.ovl_work, dirs.build_work):
        _rmtree(path)


def discard_build_dirs(dirs: BuildDirs) -> None:
    """Remove the whole build directory, output included (after the caller collected it).

    Raises:
        OSError: The overlay could not be unmounted or a directory removed.
    """
    unmount(dirs.merged)
    _rmtree(dirs.top)


def _rmtree(path: Path) -> None:
    # rmtree works on file descriptors and never follows links out of the tree. A part
    # removed meanwhile by another clean-up (a crash recovery racing a teardown) is no
    # error: the goal is that nothing remains.
    for _ in range(3):
        if not (path.is_symlink() or path.exists()):
            return
        try:
            shutil.rmtree(path)
        except FileNotFoundError:
            continue
        return
    shutil.rmtree(path)


def stale_build_ids(config: SandboxConfig) -> list[str]:
    """The build ids that have a directory under `sandbox_root/builds/`."""
    builds = config.sandbox_root / "builds"
    if not builds.is_dir():
        return []
    return sorted(p.name for p in builds.iterdir() if p.is_dir() and not p.is_symlink())

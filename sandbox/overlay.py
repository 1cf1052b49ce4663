"""Per-build file systems: the overlay root over the read-only base, and the build's disk.

`BuildDirs` (the layout) and the argv builders `mkfs_argv` and `mount_disk_argv` are
pure; `create_build_dirs`, `prepare_disk`, `release_build_dirs`, `discard_build_dirs`
and `stale_build_ids` do file-system I/O and call mount(2) and umount2(2) directly. The
two commands a build's disk needs (`mkfs.ext4`, `mount -o loop`) are spawned by
`BuildSandbox`, the package's only spawner.

Layout under `sandbox_root/builds/<build-id>/`:

    upper/       overlay upper dir (what the container writes to its root; little, as
                 the root is read-only inside)
    ovl-work/    overlayfs's own work dir
    merged/      the overlay mount: the container's root
    disk.img     the build's disk: a file of exactly `max_disk_bytes`, allocated up
                 front, holding an ext4 file system without journal
    disk/        its loop mount, holding:
      work/      mkarchiso's work dir, bound at /build/work
      output/    bound at /build/output; the ISO ends up here

Everything a build writes (the container's root is read-only; /tmp is a size-limited
tmpfs) goes to its disk, whose size the kernel enforces: a build that fills it gets
ENOSPC, and the host's file system never gives it more than the image it already
holds (measured in docs/benchmarks.md, "A build's disk space").

Who deletes what: `release_build_dirs` (called by `BuildSandbox` when a build ends,
whatever the outcome) unmounts the overlay and removes everything but `disk/output/`;
the caller collects the ISO and then calls `BuildSandbox.discard(build_id)`, which
unmounts the disk and removes the rest. `BuildSandbox.cleanup_stale()` removes whatever
a crashed process left.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Final

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
    def disk_image(self) -> Path:
        """The file holding the build's disk."""
        return self.top / "disk.img"

    @property
    def disk(self) -> Path:
        """Where the build's disk is mounted."""
        return self.top / "disk"

    @property
    def build_work(self) -> Path:
        """The host directory bound at /build/work (mkarchiso's work dir), on the disk."""
        return self.disk / "work"

    @property
    def output(self) -> Path:
        """The output dir on the host, on the disk."""
        return self.disk / "output"

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


def container_root_uid(config: SandboxConfig) -> int:
    """The host UID (and GID) of the container's root."""
    return config.uid_base if config.isolation == "userns" else 0


def create_build_dirs(config: SandboxConfig, build_id: str) -> BuildDirs:
    """Create the build's directories and disk image, and mount the overlay.

    The disk image is allocated in full (`posix_fallocate`), so that what the build
    may write is taken from the host's file system now or not at all.

    Args:
        config: Where the base and the sandbox root are; the UID range; the disk size.
        build_id: The build (must not have directories already).

    Returns:
        The layout, with `merged` mounted; the disk is still to be made and mounted
        (`mkfs_argv`, `mount_disk_argv`, then `prepare_disk`).

    Raises:
        FileExistsError: The build's directory exists (a previous run was not discarded).
        OSError: A directory, the image (ENOSPC: not enough room for the build's disk)
            or the mount could not be made; what was made is removed.
    """
    dirs = BuildDirs.of(config, build_id)
    dirs.top.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    dirs.top.mkdir(mode=0o700)
    try:
        for path in (dirs.upper, dirs.ovl_work, dirs.merged, dirs.disk):
            path.mkdir(mode=0o755)
        owner = container_root_uid(config)
        # The overlay root takes the upper dir's owner: it must be the container's root.
        os.chown(dirs.upper, owner, owner)
        fd = os.open(dirs.disk_image, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.posix_fallocate(fd, 0, config.max_disk_bytes)
        finally:
            os.close(fd)
        _mount_overlay(dirs.merged, dirs.mount_options(config.base_dir))
    except BaseException:
        shutil.rmtree(dirs.top)
        raise
    return dirs


#: The directory hash seed of every build's disk. ext4 lists a directory in the order
#: of its names' hashes, seeded at random per file system by default; mkarchiso's
#: `mcopy` fills the EFI system partition in that order, so a random seed made two
#: builds of one commit differ. A fixed seed keeps the order, and the ISO, the same.
DISK_HASH_SEED: Final = "6973a6f5-7275-4e6e-9e65-722d72656164"


def mkfs_argv(config: SandboxConfig, dirs: BuildDirs) -> list[str]:
    """The command that makes the build's disk: ext4, no journal, no reserved blocks.

    `nodiscard` keeps the image's blocks allocated (mkfs would punch them out of a
    file); the root directory belongs to the container's root; `DISK_HASH_SEED` keeps
    directory listings in the same order in every build (reproducible ISOs).
    """
    owner = container_root_uid(config)
    return [
        "mkfs.ext4",
        "-F",
        "-q",
        "-m",
        "0",
        "-O",
        "^has_journal",
        "-E",
        f"nodiscard,lazy_itable_init=1,root_owner={owner}:{owner},hash_seed={DISK_HASH_SEED}",
        str(dirs.disk_image),
    ]


def mount_disk_argv(dirs: BuildDirs) -> list[str]:
    """The command that mounts the build's disk through a loop device.

    The loop device is freed with the mount (`mount` sets its autoclear flag).
    """
    return ["mount", "-o", "loop,nodev,nosuid", str(dirs.disk_image), str(dirs.disk)]


def prepare_disk(config: SandboxConfig, dirs: BuildDirs) -> None:
    """Make the work and output directories on the mounted disk, the container root's."""
    owner = container_root_uid(config)
    for path in (dirs.build_work, dirs.output):
        path.mkdir(mode=0o755)
        os.chown(path, owner, owner)


def disk_full(dirs: BuildDirs, *, margin: int) -> bool:
    """Whether the build's disk has no more than `margin` bytes left (False if unmounted)."""
    if not os.path.ismount(dirs.disk):
        return False
    st = os.statvfs(dirs.disk)
    return st.f_bavail * st.f_frsize <= margin


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
    unmount(dirs.disk)
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

"""Tests of `sandbox.overlay`'s pure parts: the layout and the disk's two commands."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandbox.config import SandboxConfig
from sandbox.overlay import BuildDirs, mkfs_argv, mount_disk_argv

CONFIG = SandboxConfig(base_dir=Path("/b"), sandbox_root=Path("/s"), uid_base=2147352576)


def test_work_and_output_live_on_the_builds_disk() -> None:
    """/build/work and /build/output are directories of the disk's mount, beside its image."""
    dirs = BuildDirs.of(CONFIG, "build-7")
    assert dirs.disk_image == Path("/s/builds/build-7/disk.img")
    assert dirs.build_work == dirs.disk / "work"
    assert dirs.output == dirs.disk / "output"


def test_mkfs_keeps_the_image_allocated_and_gives_its_root_to_the_container() -> None:
    """ext4 without journal or reserve, no discard (no holes), root the UID base's, fixed seed."""
    argv = mkfs_argv(CONFIG, BuildDirs.of(CONFIG, "build-7"))
    assert argv[:7] == ["mkfs.ext4", "-F", "-q", "-m", "0", "-O", "^has_journal"]
    assert argv[8] == (
        "nodiscard,lazy_itable_init=1,root_owner=2147352576:2147352576,"
        "hash_seed=6973a6f5-7275-4e6e-9e65-722d72656164"
    )
    assert argv[-1] == "/s/builds/build-7/disk.img"


def test_the_disk_is_mounted_through_a_loop_device_without_devices_or_setuid() -> None:
    """`mount -o loop,nodev,nosuid IMAGE DIR`."""
    dirs = BuildDirs.of(CONFIG, "build-7")
    assert mount_disk_argv(dirs) == [
        "mount",
        "-o",
        "loop,nodev,nosuid",
        "/s/builds/build-7/disk.img",
        "/s/builds/build-7/disk",
    ]


def test_a_disk_below_64m_is_refused() -> None:
    """A disk too small for any build is a configuration error."""
    with pytest.raises(ValueError, match="max_disk_bytes"):
        SandboxConfig(base_dir=Path("/b"), sandbox_root=Path("/s"), max_disk_bytes=1 << 20)

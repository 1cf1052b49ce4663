"""Disk-cap benchmark (run by hand as root): how to cap a build's work and output space.

    sudo uv run python bench/disk_cap_bench.py [--dir /var/tmp] [--cap-mib 512] [--repeat 5]

Compares, side by side, three places for a build's /build/work and /build/output:

- `plain`: a directory on the host's file system (what isorunner did: no cap at all);
- `tmpfs`: a size-limited tmpfs (capped, but its pages are RAM, charged to the build's
  memory cgroup: a real ISO build's work tree of several GB would need that much RAM);
- `ext4 image`: a sparse file of the cap's size, `mkfs.ext4` without journal, mounted
  through a loop device (capped by the kernel, on disk, costs only what is written);
- `ext4 alloc`: the same, the file allocated in full first (`posix_fallocate`) and
  made without discard: what isorunner does, so that the host's space is taken when
  the build starts or not at all.

For each: set-up and tear-down time (median of --repeat), sequential write throughput of
half the cap (with fsync), and a fill test that writes until the file system refuses:
how much was written, the error, and how much the host's file system grew from before
the set-up to the end of the fill.
"""

from __future__ import annotations

import argparse
import errno
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

MIB = 1024 * 1024
BLOCK = os.urandom(MIB)


def run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


class Plain:
    name = "plain"

    def __init__(self, top: Path, cap: int) -> None:
        self.mount = top / "plain"

    def setup(self) -> None:
        self.mount.mkdir()

    def teardown(self) -> None:
        shutil.rmtree(self.mount)


class Tmpfs:
    name = "tmpfs"

    def __init__(self, top: Path, cap: int) -> None:
        self.mount = top / "tmpfs"
        self.cap = cap

    def setup(self) -> None:
        self.mount.mkdir()
        run("mount", "-t", "tmpfs", "-o", f"size={self.cap},mode=0755", "tmpfs", str(self.mount))

    def teardown(self) -> None:
        run("umount", str(self.mount))
        self.mount.rmdir()


class Ext4Allocated:
    """What isorunner does: the image allocated in full first, mkfs without discard."""

    name = "ext4 alloc"

    def __init__(self, top: Path, cap: int) -> None:
        self.image = top / "disk.img"
        self.mount = top / "ext4"
        self.cap = cap

    def setup(self) -> None:
        self.mount.mkdir()
        fd = os.open(self.image, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.posix_fallocate(fd, 0, self.cap)
        finally:
            os.close(fd)
        run("mkfs.ext4", "-F", "-q", "-m", "0", "-O", "^has_journal",
            "-E", "nodiscard,lazy_itable_init=1", str(self.image))  # fmt: skip
        run("mount", "-o", "loop,nodev,nosuid", str(self.image), str(self.mount))

    def teardown(self) -> None:
        run("umount", str(self.mount))
        self.mount.rmdir()
        self.image.unlink()


class Ext4Image:
    name = "ext4 image"

    def __init__(self, top: Path, cap: int) -> None:
        self.image = top / "disk.img"
        self.mount = top / "ext4"
        self.cap = cap

    def setup(self) -> None:
        self.mount.mkdir()
        with self.image.open("wb") as handle:
            handle.truncate(self.cap)
        run("mkfs.ext4", "-F", "-q", "-m", "0", "-O", "^has_journal",
            "-E", "lazy_itable_init=1", str(self.image))  # fmt: skip
        run("mount", "-o", "loop,nodev,nosuid", str(self.image), str(self.mount))

    def teardown(self) -> None:
        run("umount", str(self.mount))  # the loop device is freed with it (autoclear)
        self.mount.rmdir()
        self.image.unlink()


def write(path: Path, limit: int) -> tuple[int, str]:
    """Write up to `limit` bytes to `path`; return bytes written and the error, if any."""
    written = 0
    error = ""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        while written < limit:
            written += os.write(fd, BLOCK)
        os.fsync(fd)
    except OSError as exc:
        error = errno.errorcode.get(exc.errno or 0, str(exc.errno))
    finally:
        os.close(fd)
    return written, error


def used(path: Path) -> int:
    stat = os.statvfs(path)
    return (stat.f_blocks - stat.f_bfree) * stat.f_frsize


def median_time(action: Callable[[], None]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", type=Path, default=Path("/var/tmp"))
    parser.add_argument("--cap-mib", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    cap = args.cap_mib * MIB
    top = Path(tempfile.mkdtemp(prefix="isorunner-diskcap-", dir=args.dir))
    rows = []
    try:
        for kind in (Plain, Tmpfs, Ext4Image, Ext4Allocated):
            setups, teardowns, rates = [], [], []
            for _ in range(args.repeat):
                place = kind(top, cap)
                setups.append(median_time(place.setup))
                start = time.perf_counter()
                written, _ = write(place.mount / "blob", cap // 2)
                rates.append(written / MIB / (time.perf_counter() - start))
                teardowns.append(median_time(place.teardown))
            place = kind(top, cap)
            before = used(args.dir)
            place.setup()
            written, error = write(place.mount / "fill", 4 * cap)
            grown = used(args.dir) - before
            place.teardown()
            rows.append(
                (
                    kind.name,
                    statistics.median(setups) * 1000,
                    statistics.median(teardowns) * 1000,
                    statistics.median(rates),
                    written / MIB,
                    error or "none",
                    grown / MIB,
                )
            )
    finally:
        shutil.rmtree(top, ignore_errors=True)
    base_rate = rows[0][3]
    print(f"cap {args.cap_mib} MiB, write of {args.cap_mib // 2} MiB, median of {args.repeat}")
    print(
        f"{'place':<11} {'setup ms':>9} {'teardown ms':>12} {'MiB/s':>7} {'vs plain':>9} "
        f"{'fill MiB':>9} {'stopped by':>10} {'host grew MiB':>14}"
    )
    for name, setup, teardown, rate, filled, error, grown in rows:
        print(
            f"{name:<11} {setup:>9.1f} {teardown:>12.1f} {rate:>7.0f} {rate / base_rate:>9.2f} "
            f"{filled:>9.0f} {error:>10} {grown:>14.0f}"
        )


if __name__ == "__main__":
    main()

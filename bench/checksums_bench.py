"""Checksums of a ~1 GiB file: `compute_checksums` against `sha256sum` then `b2sum`.

Run by hand: `uv run python bench/checksums_bench.py [--rounds N] [--size-mib N]`.
Writes a random file under /var/tmp, warms the page cache, then times, round after
round and alternating which goes first:

- coreutils: `sha256sum FILE` then `b2sum FILE`, one after the other;
- one thread: a single read updating both hashlib objects in turn (the simple way);
- ours: `runner.checksums.compute_checksums` (two hashing threads over one read).

Prints each round, the medians and the ratios, and checks that all three agree.
Deletes the file when it ends.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import time
from pathlib import Path

from runner.checksums import compute_checksums

ROOT = Path("/var/tmp/isorunner-bench-checksums")


def coreutils(path: Path) -> tuple[float, str, str]:
    """Run sha256sum then b2sum; return the time and both digests."""
    start = time.perf_counter()
    sha = subprocess.run(["sha256sum", str(path)], check=True, capture_output=True, text=True)
    b2 = subprocess.run(["b2sum", str(path)], check=True, capture_output=True, text=True)
    return time.perf_counter() - start, sha.stdout.split()[0], b2.stdout.split()[0]


def one_thread(path: Path) -> tuple[float, str, str]:
    """One read, both hashes updated in turn in this thread."""
    start = time.perf_counter()
    sha, b2 = hashlib.sha256(), hashlib.blake2b()
    with open(path, "rb", buffering=0) as source:
        while chunk := source.read(1 << 20):
            sha.update(chunk)
            b2.update(chunk)
    return time.perf_counter() - start, sha.hexdigest(), b2.hexdigest()


def ours(path: Path) -> tuple[float, str, str]:
    """runner.checksums.compute_checksums."""
    start = time.perf_counter()
    sums = compute_checksums(path)
    return time.perf_counter() - start, sums.sha256, sums.b2


def main() -> None:
    """Write the file, warm the cache, time the three ways, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--size-mib", type=int, default=1024)
    args = parser.parse_args()
    ROOT.mkdir(parents=True)
    try:
        path = ROOT / "image.iso"
        with open(path, "wb") as out:
            for _ in range(args.size_mib):
                out.write(os.urandom(1 << 20))
        subprocess.run(["cat", str(path)], check=True, stdout=subprocess.DEVNULL)
        ways = {"coreutils": coreutils, "one thread": one_thread, "ours": ours}
        times: dict[str, list[float]] = {name: [] for name in ways}
        digests: set[tuple[str, str]] = set()
        names = list(ways)
        for i in range(args.rounds):
            for name in names[i % 3 :] + names[: i % 3]:
                elapsed, sha, b2 = ways[name](path)
                digests.add((sha, b2))
                times[name].append(elapsed)
                print(f"round {i + 1} {name:10s} {elapsed:6.2f} s")
        assert len(digests) == 1, f"the three ways disagree: {digests}"
        med = {name: statistics.median(t) for name, t in times.items()}
        mib = args.size_mib
        for name, t in med.items():
            print(f"median {name:10s} {t:6.2f} s  {mib / t:7.1f} MiB/s")
        print(
            f"speed ratio ours / coreutils   = {med['coreutils'] / med['ours']:.2f} (target >= 1)"
        )
        print(f"speed ratio ours / one thread  = {med['one thread'] / med['ours']:.2f}")
    finally:
        shutil.rmtree(ROOT, ignore_errors=True)


if __name__ == "__main__":
    main()

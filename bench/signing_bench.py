"""Signing a 2 GiB ISO: isorunner's `Signer` against `minisign -Sm`, side by side.

Run by hand: `uv run python bench/signing_bench.py [--rounds N] [--size-mib N]`.
Writes a file of random bytes under /var/tmp and an unencrypted minisign key (made by
isorunner, used by both), warms the page cache, then times, round after round and
alternating who goes first, each in a child process of its own:

- minisign: `minisign -S -s KEY -m FILE -x SIG -t COMMENT` (prehashed "ED", BLAKE2b-512);
- ours: `Signer(load_secret_key(KEY)).sign(FILE)` (streamed BLAKE2b-512, then Ed25519);

and, as the pipeline really pays it, a release's sums plus signature:

- coreutils + minisign: `sha256sum`, `b2sum`, then `minisign -S`;
- ours: `compute_checksums` (one read, both digests), then `sign(digest=b2)`.

Reports medians, speed ratios (minisign's time / ours: >= 1 means ours is at least as
fast) and each child's peak RSS (`wait4`), and checks every signature with
`minisign -Vm`. Deletes its files when it ends.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from runner.publish.keys import write_secret_key
from runner.publish.minisign import generate_secret_key

ROOT = Path("/var/tmp/isorunner-bench-signing")

OURS = """
import sys
from pathlib import Path
from runner.publish.keys import load_secret_key
from runner.publish.signing import Signer
Signer(load_secret_key(Path(sys.argv[1]), None)).sign(Path(sys.argv[2]))
"""

OURS_RELEASE = """
import sys
from pathlib import Path
from runner.checksums import compute_checksums
from runner.publish.keys import load_secret_key
from runner.publish.signing import Signer
signer = Signer(load_secret_key(Path(sys.argv[1]), None))
sums = compute_checksums(Path(sys.argv[2]))
signer.sign(Path(sys.argv[2]), digest=bytes.fromhex(sums.b2))
"""


def peak_rss_kib(pid: int) -> int:
    """The process's VmHWM (peak resident set) in KiB, 0 once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def run_watched(argv: list[str]) -> int:
    """Run one command; return its peak RSS in KiB, sampled from /proc every 5 ms.

    wait4's ru_maxrss cannot be used: a child forked from this (large) Python process
    starts with the parent's pages counted, before its exec.
    """
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    while process.poll() is None:
        peak = max(peak, peak_rss_kib(process.pid))
        time.sleep(0.005)
    if process.returncode != 0:
        error = process.stderr.read().decode() if process.stderr else ""
        raise SystemExit(f"{argv[0]} failed: {error}")
    return peak


def timed(*argvs: list[str]) -> tuple[float, int]:
    """Run the commands one after the other; return the wall time and the largest peak RSS."""
    start = time.perf_counter()
    peak = max(run_watched(argv) for argv in argvs)
    return time.perf_counter() - start, peak


def main() -> None:
    """Write the file and key, warm the cache, time both ways, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--size-mib", type=int, default=2048)
    args = parser.parse_args()
    minisign = shutil.which("minisign")
    if minisign is None:
        raise SystemExit("minisign is missing (scripts/install installs it)")
    ROOT.mkdir(parents=True)
    try:
        path = ROOT / "archlive.iso"
        block = os.urandom(64 << 20)
        with open(path, "wb") as out:
            for _ in range(args.size_mib // 64):
                out.write(block)
        del block
        key = ROOT / "signing.key"
        secret = generate_secret_key()
        write_secret_key(key, secret, password=None)
        (ROOT / "signing.pub").write_text(secret.public_key().file_text())
        subprocess.run(["cat", str(path)], check=True, stdout=subprocess.DEVNULL)
        sig = f"{path}.minisig"
        theirs = [minisign, "-S", "-s", str(key), "-m", str(path), "-x", sig, "-t", "bench"]
        ours = [sys.executable, "-c", OURS, str(key), str(path)]
        ours_release = [sys.executable, "-c", OURS_RELEASE, str(key), str(path)]
        ways = {
            "minisign -S": lambda: timed(theirs),
            "ours sign": lambda: timed(ours),
            "sums+minisign": lambda: timed(["sha256sum", str(path)], ["b2sum", str(path)], theirs),
            "ours sums+sign": lambda: timed(ours_release),
        }
        times: dict[str, list[float]] = {name: [] for name in ways}
        peaks: dict[str, int] = dict.fromkeys(ways, 0)
        names = list(ways)
        timed([sys.executable, "-c", OURS, str(key), str(path)])  # warm-up (imports)
        for i in range(args.rounds):
            for name in names[i % len(names) :] + names[: i % len(names)]:
                elapsed, peak = ways[name]()
                check = subprocess.run(
                    [minisign, "-Vm", str(path), "-p", str(ROOT / "signing.pub")],
                    capture_output=True, check=False,
                )  # fmt: skip
                assert check.returncode == 0, check.stderr
                times[name].append(elapsed)
                peaks[name] = max(peaks[name], peak)
                print(f"round {i + 1} {name:15s} {elapsed:6.2f} s  peak RSS {peak / 1024:7.1f} MiB")
        med = {name: statistics.median(t) for name, t in times.items()}
        for name, t in med.items():
            print(
                f"median {name:15s} {t:6.2f} s  {args.size_mib / t:7.1f} MiB/s  "
                f"peak RSS {peaks[name] / 1024:7.1f} MiB"
            )
        ratio = med["minisign -S"] / med["ours sign"]
        print(f"speed ratio sign: minisign / ours = {ratio:.2f} (target >= 1)")
        print(
            "speed ratio sums + signature: coreutils+minisign / ours = "
            f"{med['sums+minisign'] / med['ours sums+sign']:.2f}"
        )
    finally:
        shutil.rmtree(ROOT, ignore_errors=True)


if __name__ == "__main__":
    main()

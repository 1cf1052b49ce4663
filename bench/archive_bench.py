"""Fetch + extract of a ~200 MB profile archive: isorunner's path against `curl | tar -xz`.

Run by hand: `uv run python bench/archive_bench.py [--rounds N] [--dir DIR]`. Builds
a realistic archive under DIR, default /var/tmp (many small config files, a few large
blobs, compressible and not), serves it with `python3 -m http.server` on 127.0.0.1,
then times, round after round and alternating which goes first:

- ours: httpx streaming download to disk, then `extract_profile_async`;
- curl: `curl -s URL | tar -xz -C DIR`.

Prints each round, the medians, the throughput (archive MB/s) and the ratio. Deletes
everything it made under DIR when it ends.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import anyio
import httpx

from runner.archive import ExtractLimits, extract_profile_async

ROOT_NAME = "isorunner-bench-archive"
TOP = "owner-profile-abc1234"


def build_profile(src: Path) -> None:
    """Lay out a profile-like tree: ~20k small text files and a few large blobs."""
    rng = random.Random(42)
    words = [f"{w}" for w in ("pacman", "linux", "systemd", "mkinitcpio", "grub", "efi", "iso")]
    top = src / TOP
    for i in range(20_000):
        d = top / "airootfs" / f"etc{i % 40}" / f"sub{i % 7}"
        d.mkdir(parents=True, exist_ok=True)
        n = rng.randint(3, 60)
        text = "\n".join(
            f"{rng.choice(words)}_{rng.randint(0, 999)}={rng.choice(words)}" for _ in range(n)
        )
        (d / f"conf{i}.conf").write_text(text + "\n")
    blobs = top / "airootfs" / "opt" / "blobs"
    blobs.mkdir(parents=True)
    # Incompressible (firmware, packages, images) and compressible (logs, text dumps) blobs.
    for name in ("firmware.bin", "packages.tar.zst"):
        with open(blobs / name, "wb") as out:
            for _ in range(80):
                out.write(os.urandom(1 << 20))
    with open(blobs / "dump.txt", "wb") as out:
        for _ in range(120):
            lines = (f"{rng.random():.12f} {rng.choice(words)}\n" for _ in range(40_000))
            out.write("".join(lines).encode()[: 1 << 20])
    os.symlink("/usr/share/zoneinfo/UTC", top / "airootfs" / "etc0" / "localtime")


def free_port() -> int:
    """Ask the kernel for a free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def ours(url: str, work: Path) -> float:
    """Download with httpx (streamed to disk) and extract with extract_profile_async."""
    start = time.perf_counter()
    archive = work / "profile.tar.gz"
    async with httpx.AsyncClient() as client, client.stream("GET", url) as response:
        response.raise_for_status()
        # A blocking write of a 1 MiB chunk into the page cache; anyio's async file would
        # hop to a thread for every chunk.
        with open(archive, "wb") as out:  # noqa: ASYNC230
            async for chunk in response.aiter_raw(1 << 20):
                out.write(chunk)
    await extract_profile_async(archive, work / "profile", limits=ExtractLimits())
    return time.perf_counter() - start


def curl_tar(url: str, work: Path) -> float:
    """Pipe curl into tar -xz."""
    out = work / "profile"
    out.mkdir()
    start = time.perf_counter()
    subprocess.run(f"curl -s {url} | tar -xz -C {out}", shell=True, check=True)
    return time.perf_counter() - start


def main() -> None:
    """Build the archive, serve it, time both paths, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument(
        "--dir",
        type=Path,
        default=Path("/var/tmp"),
        help="where the archive and the extracted trees go (e.g. /dev/shm to leave the disk out)",
    )
    args = parser.parse_args()
    root = args.dir / ROOT_NAME
    root.mkdir(parents=True)
    try:
        build_profile(root / "src")
        serve = root / "serve"
        serve.mkdir()
        subprocess.run(
            ["tar", "-czf", str(serve / "profile.tar.gz"), "-C", str(root / "src"), TOP],
            check=True,
        )
        shutil.rmtree(root / "src")
        size = (serve / "profile.tar.gz").stat().st_size
        print(f"archive: {size / 1e6:.1f} MB compressed")
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)],
            cwd=serve,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            url = f"http://127.0.0.1:{port}/profile.tar.gz"
            for _ in range(50):
                try:
                    httpx.head(url)
                    break
                except httpx.TransportError:
                    time.sleep(0.1)
            times: dict[str, list[float]] = {"ours": [], "curl|tar": []}
            for i in range(args.rounds):
                order = ["ours", "curl|tar"] if i % 2 == 0 else ["curl|tar", "ours"]
                for which in order:
                    work = root / "work"
                    work.mkdir()
                    # Flush the previous round's writes so they do not land in this one.
                    os.sync()
                    elapsed = anyio.run(ours, url, work) if which == "ours" else curl_tar(url, work)
                    shutil.rmtree(work)
                    times[which].append(elapsed)
                    print(f"round {i + 1} {which:9s} {elapsed:6.2f} s")
        finally:
            server.terminate()
            server.wait()
        med = {k: statistics.median(v) for k, v in times.items()}
        for k, v in med.items():
            print(f"median {k:9s} {v:6.2f} s  {size / 1e6 / v:7.1f} MB/s")
        ratio = med["curl|tar"] / med["ours"]
        print(f"throughput ratio ours / curl|tar = {ratio:.2f} (target >= 0.8)")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

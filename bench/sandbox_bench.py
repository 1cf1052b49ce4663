"""Sandbox benchmark (run by hand as root): overlay creation vs cp -a, and whole overhead.

    sudo uv run python bench/sandbox_bench.py [--standin DIR] [--repeat N]

Prints, side by side, the time to create a build's file systems with the overlay and
with `cp -a` of the same base, for the stand-in base and a synthetic 2 GB base (made
under /var/tmp and deleted afterwards), and the whole sandbox overhead: create, start
the container, run `true`, stop, clean up.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import time
from pathlib import Path

from sandbox import BuildSandbox, SandboxConfig, overlay


def make_synthetic(path: Path, total: int = 2 << 30, file_size: int = 4 << 20) -> None:
    for sub in ("build/profile", "build/work", "build/output"):
        (path / sub).mkdir(parents=True, exist_ok=True)
    block = os.urandom(file_size)
    for i in range(total // file_size):
        d = path / "data" / f"{i // 64:03d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:05d}").write_bytes(block)
    subprocess.run(["sync"], check=True)


def time_overlay(base: Path, root: Path, repeat: int) -> float:
    config = SandboxConfig(base_dir=base, sandbox_root=root)
    samples = []
    for i in range(repeat):
        start = time.perf_counter()
        dirs = overlay.create_build_dirs(config, f"bench-{i}")
        samples.append(time.perf_counter() - start)
        overlay.discard_build_dirs(dirs)
    return statistics.median(samples)


def time_cp(base: Path, root: Path, repeat: int) -> float:
    samples = []
    for i in range(repeat):
        dest = root / f"cp-{i}"
        subprocess.run(["sync"], check=True)
        start = time.perf_counter()
        rc = subprocess.run(["cp", "-a", str(base), str(dest)], check=False).returncode
        if rc == 0:
            samples.append(time.perf_counter() - start)
        else:
            print(f"cp -a exited {rc} (base changing underneath?); sample dropped")
        shutil.rmtree(dest)
    return statistics.median(samples)


async def time_overhead(base: Path, root: Path, profile: Path, repeat: int) -> list[float]:
    sandbox = BuildSandbox(SandboxConfig(base_dir=base, sandbox_root=root, min_free_bytes=1 << 30))

    async def sink(_line: str) -> None:
        return None

    samples = []
    for i in range(repeat):
        start = time.perf_counter()
        result = await sandbox.run_command(
            f"bench-true-{i}", profile, ["true"], source_date_epoch=0, log_sink=sink
        )
        samples.append(time.perf_counter() - start)
        assert result.exit_code == 0
    return samples


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--standin", type=Path, default=Path("/var/cache/isorunner-test/standin"))
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    root = Path("/var/tmp/isorunner-bench")
    synthetic = Path("/var/tmp/isorunner-bench-2g")
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    try:
        make_synthetic(synthetic)
        size = {
            "stand-in": subprocess.run(
                ["du", "-sh", str(args.standin / "base")],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()[0],
            "synthetic 2 GB": subprocess.run(
                ["du", "-sh", str(synthetic)], capture_output=True, text=True, check=True
            ).stdout.split()[0],
        }
        print(f"{'base':<16}{'size':>8}{'overlay (ms)':>14}{'cp -a (ms)':>12}{'ratio':>9}")
        for name, base in (("stand-in", args.standin / "base"), ("synthetic 2 GB", synthetic)):
            ovl = time_overlay(base, root, args.repeat * 4)
            cp = time_cp(base, root, args.repeat)
            print(
                f"{name:<16}{size[name]:>8}{ovl * 1000:>14.1f}{cp * 1000:>12.0f}{cp / ovl:>8.0f}x"
            )
        profile = args.standin / "profiles" / "minimal"
        samples = asyncio.run(time_overhead(args.standin / "base", root, profile, args.repeat * 2))
        print(
            f"whole overhead (create, start, run `true`, stop, clean up), {len(samples)} runs: "
            f"median {statistics.median(samples) * 1000:.0f} ms, max {max(samples) * 1000:.0f} ms"
        )
    finally:
        shutil.rmtree(synthetic, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

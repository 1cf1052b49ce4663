"""Boot test benchmark (run by hand as root): the boot step against a hand-written QEMU.

    sudo uv run python bench/boot_bench.py [--standin DIR] [--rounds N] [--firmware bios,uefi]

Builds the stand-in's boot profile once with the real sandbox, then, for each round and
firmware, boots the same ISO to the same serial line twice, side by side:

- baseline: a hand-written `qemu-system-x86_64` command line, the same binary and
  firmware (chrooted into an overlay of the stand-in base, as root, no container, no
  cgroups, serial on stdio), timed from spawn to the line `archiso login:`;
- isorunner: `BootTester.boot`, timed from the call to its return (container set-up,
  guest, screenshot over QMP, quit, teardown), with the time to the line it measures.

The KVM probe runs once, before the rounds, and is reported apart. isorunner's own
resident memory is sampled every 50 ms while its guests run. Target: boot step <=
1.10 x baseline + 1 s; isorunner's memory flat.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import time
from pathlib import Path

from sandbox import overlay
from sandbox.boot import BootSpec, BootTester
from sandbox.config import SandboxConfig
from sandbox.sandbox import BuildSandbox
from sandbox.vm import SECCOMP

LINE = b"archiso login:"


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def build_iso(config: SandboxConfig, standin: Path, out: Path) -> Path:
    sandbox = BuildSandbox(config)

    async def sink(_line: str) -> None:
        return None

    result = await sandbox.run(
        "bench-boot-build",
        standin / "profiles" / "boot",
        source_date_epoch=0,
        log_sink=sink,
        package_repo=standin / "repo",
    )
    (iso,) = result.isos
    shutil.copyfile(iso, out)
    await sandbox.discard("bench-boot-build")
    return out


def baseline_argv(firmware: str, code: str) -> list[str]:
    """What one would write by hand to boot the ISO and watch its serial console."""
    argv = [
        "qemu-system-x86_64",
        "-nodefaults",
        "-machine",
        "q35" if firmware == "uefi" else "pc",
        "-accel",
        "tcg",
        "-cpu",
        "max",
        "-m",
        "2048M",
        "-display",
        "none",
        "-device",
        "VGA",
        "-serial",
        "stdio",
        "-sandbox",
        SECCOMP,
        "-drive",
        "file=/tmp/image.iso,format=raw,if=ide,media=cdrom,readonly=on",
        "-nic",
        "none",
    ]
    if firmware == "uefi":
        argv += [
            "-drive",
            f"if=pflash,format=raw,unit=0,readonly=on,file={code}",
            "-drive",
            "if=pflash,format=raw,unit=1,file=/tmp/vars.fd",
        ]
    return argv


async def time_baseline(
    config: SandboxConfig, iso: Path, firmware: str, code: str, vars_template: str, n: int
) -> float:
    dirs = overlay.create_build_dirs(config, f"bench-base-{n}")
    tmp = dirs.merged / "tmp"
    try:
        shutil.copyfile(iso, tmp / "image.iso")
        if firmware == "uefi":
            shutil.copyfile(config.base_dir / vars_template.lstrip("/"), tmp / "vars.fd")
        start = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            "chroot",
            str(dirs.merged),
            *baseline_argv(firmware, code),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        assert proc.stdout is not None
        seen = b""
        while LINE not in seen:
            chunk = await asyncio.wait_for(proc.stdout.read(65536), 600)
            if not chunk:
                raise RuntimeError("the baseline QEMU ended before the line")
            seen = seen[-4096:] + chunk
        took = time.perf_counter() - start
        proc.kill()
        await proc.wait()
        return took
    finally:
        overlay.discard_build_dirs(dirs)


async def time_isorunner(
    tester: BootTester, iso: Path, firmware: str, n: int, rss: list[int]
) -> tuple[float, float]:
    async def sink(_line: str) -> None:
        return None

    stop = asyncio.Event()

    async def sample() -> None:
        while not stop.is_set():
            rss.append(rss_kib())
            await asyncio.sleep(0.05)

    sampler = asyncio.ensure_future(sample())
    start = time.perf_counter()
    result = await tester.boot(
        f"bench-boot-{firmware}-{n}",
        iso,
        BootSpec(firmware=firmware, timeout_seconds=600),  # type: ignore[arg-type]
        log_sink=sink,
    )
    took = time.perf_counter() - start
    stop.set()
    await sampler
    if not result.passed:
        raise RuntimeError(f"boot test did not pass: {result.reason}")
    return took, result.seconds


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--standin", type=Path, default=Path("/var/cache/isorunner-test/standin"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--firmware", default="bios,uefi")
    args = parser.parse_args()
    root = Path("/var/tmp") / f"isorunner-boot-bench-{os.getpid()}"
    config = SandboxConfig(
        base_dir=args.standin / "base",
        sandbox_root=root,
        memory_limit=4 << 30,
        cpus=2.0,
        timeout_seconds=900,
        warning_seconds=900,
        min_free_bytes=1 << 30,
    )
    try:
        root.mkdir(parents=True)
        iso = await build_iso(config, args.standin, root / "boot.iso")
        tester = BootTester(config)
        start = time.perf_counter()
        accelerator, why = await tester.accelerator()
        probe = time.perf_counter() - start
        print(
            f"ISO {iso.stat().st_size / 1e6:.1f} MB; KVM probe {probe:.2f} s: {accelerator}, {why}"
        )
        uefi = tester.uefi_firmware()
        rss: list[int] = []
        rss_before = rss_kib()
        rows: dict[str, list[tuple[float, float, float]]] = {}
        for n in range(args.rounds):
            for firmware in args.firmware.split(","):
                base = await time_baseline(config, iso, firmware, uefi.code, uefi.vars_template, n)
                total, to_line = await time_isorunner(tester, iso, firmware, n, rss)
                rows.setdefault(firmware, []).append((base, total, to_line))
                print(
                    f"round {n + 1} {firmware}: hand-written {base:.2f} s, boot step "
                    f"{total:.2f} s (guest to the line {to_line:.2f} s)"
                )
        print()
        print("firmware  hand-written  boot step  guest->line  overhead   ratio  target (1.1x+1s)")
        for firmware, samples in rows.items():
            base = statistics.median(s[0] for s in samples)
            total = statistics.median(s[1] for s in samples)
            line = statistics.median(s[2] for s in samples)
            target = 1.1 * base + 1.0
            verdict = "met" if total <= target else "MISSED"
            print(
                f"{firmware:8}  {base:10.2f} s  {total:7.2f} s  {line:9.2f} s  "
                f"{total - base:+6.2f} s  {total / base:5.2f}  {verdict}"
            )
        print(
            f"isorunner RSS: before {rss_before / 1024:.1f} MiB; while guests ran "
            f"min {min(rss) / 1024:.1f} / max {max(rss) / 1024:.1f} MiB "
            f"({len(rss)} samples); after {rss_kib() / 1024:.1f} MiB"
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())

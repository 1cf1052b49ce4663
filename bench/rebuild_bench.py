"""The rebuild check's cost, as a fraction of the build it checks (stand-in base, as root).

Run by hand: `ISORUNNER_STANDIN_DIR=… uv run python bench/rebuild_bench.py [--rounds N]`.
Each round builds the stand-in's boot profile (kernel, initramfs, SYSLINUX, an EFI system
partition) through `BuildSandbox` and collects its ISO and sums as the pipeline does (the
build), then runs `Sealer.rebuild` on it (the check: a second build in a fresh
container, its sums, and the in-sandbox comparison of the two ISOs when they differ).
Twice per round: the boot profile (identical, no comparison needed) and the same profile
with a pacman hook writing the time into the image (different: the comparison lists
both ISOs). Prints the medians and the check's time over the build's. The check runs
after the build, in sequence; running the two builds in parallel on two slots is not
implemented.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

from runner.artifacts import collect_build
from runner.publish.sealer import Sealer
from sandbox import BuildSandbox, SandboxConfig
from tests.runner.store.samples import make_request
from webhooks.build import BuildRecord, BuildState, RefKind

STANDIN = Path(os.environ.get("ISORUNNER_STANDIN_DIR", "/var/cache/isorunner-test/standin"))
ROOT = Path("/var/tmp/isorunner-bench-rebuild")
EPOCH = 1700000000
CLOCK_HOOK = """[Trigger]
Operation = Install
Type = Package
Target = isorunner-base

[Action]
Description = Writing the build time into the image
When = PostTransaction
Exec = /usr/bin/busybox sh -c "/usr/bin/busybox date +%s > /etc/build-date"
"""


TAIL: list[str] = []


async def log(line: str) -> None:
    """Keep the last 40 log lines, to show when a build fails."""
    TAIL.append(line)
    del TAIL[:-40]


async def one_round(
    sandbox: BuildSandbox, sealer: Sealer, profile: Path, n: int
) -> tuple[float, float, str]:
    """Build once, then rebuild-check; return (build s, check s, verdict)."""
    record = BuildRecord(
        n, make_request(ref="refs/tags/v1", kind=RefKind.TAG), BuildState.RUNNING,
        created_at=datetime.now(UTC), started_at=datetime.now(UTC),
    )  # fmt: skip
    start = time.perf_counter()
    result = await sandbox.run(f"build-{n}", profile, source_date_epoch=EPOCH, log_sink=log)
    artifacts = await collect_build(result.isos, ROOT / f"artifacts-{n}")
    await sandbox.discard(f"build-{n}")
    built = time.perf_counter() - start
    start = time.perf_counter()
    verdict = await sealer.rebuild(
        record, profile=profile, epoch=EPOCH, artifacts=artifacts, log=log
    )
    checked = time.perf_counter() - start
    return built, checked, verdict.status


async def main() -> None:
    """Run the rounds and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    shutil.rmtree(ROOT, ignore_errors=True)
    ROOT.mkdir(parents=True)  # noqa: ASYNC240 - set-up before anything runs
    try:
        profiles = {"identical": ROOT / "boot", "different": ROOT / "clock"}
        for profile in profiles.values():
            shutil.copytree(STANDIN / "profiles" / "boot", profile, symlinks=True)
        hooks = profiles["different"] / "airootfs" / "etc" / "pacman.d" / "hooks"
        hooks.mkdir(parents=True)
        (hooks / "zz-build-date.hook").write_text(CLOCK_HOOK)
        sandbox = BuildSandbox(
            SandboxConfig(
                base_dir=STANDIN / "base", sandbox_root=ROOT / "sandbox",
                memory_limit=2 << 30, cpus=2.0, machine_prefix="rebench", min_free_bytes=1 << 29,
            )
        )  # fmt: skip
        sealer = Sealer(
            sandbox, signer=None, base_dir=STANDIN / "base", builder_id="http://bench",
            builder_version="bench", isolation="userns", rebuild_check=lambda _: True,
        )  # fmt: skip
        figures: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in profiles}
        n = 0
        for i in range(args.rounds):
            for name, profile in profiles.items():
                n += 1
                try:
                    built, checked, verdict = await one_round(sandbox, sealer, profile, n)
                except Exception:
                    print("\n".join(TAIL))
                    raise
                assert verdict == name, (name, verdict)
                figures[name][0].append(built)
                figures[name][1].append(checked)
                ratio = checked / built
                print(
                    f"round {i + 1} {name:9s} {built:6.2f} s, check {checked:6.2f} s, {ratio:.2f}x"
                )
        for name, (builds, checks) in figures.items():
            b, c = statistics.median(builds), statistics.median(checks)
            print(f"median {name:9s} build {b:6.2f} s  rebuild check {c:6.2f} s  = {c / b:.2f}x")
    finally:
        shutil.rmtree(ROOT, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())

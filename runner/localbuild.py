"""`isorunner build PROFILE_DIR --out DIR`: the sandboxed build without a forge.

I/O shell. The same package sync, sandbox, limits and checks as a forge-triggered build
(the `[packages]` defaults apply, as for a trusted build); the log is printed line by
line as it is written (the build's lines after `| `, with control characters shown,
never acted on), and the ISO with its checksum files lands in `--out`, owned by the
user running the command. Then the ISO is booted in QEMU as `[boot_test]` says
(screenshots in `--out/boot/`), with the policy `--boot-test` gives. Exit code 0 only
when an ISO was built and no required boot test failed.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import anyio

from runner.artifacts import collect_artifacts
from runner.boottest import BootStep, plan_for, verdict
from runner.buildlogs import build_output
from runner.packages import PackageError
from runner.settings import BootPolicy, RepoBootTest, Settings
from runner.wiring import boot_tester, build_packages, package_client, sandbox_config
from sandbox import BuildSandbox, SandboxError
from webhooks.build import BOOT_DIR, RefKind


def newest_mtime(profile: Path) -> int:
    """The newest modification time in the profile, links not followed.

    A stable default for SOURCE_DATE_EPOCH: rebuilding an unchanged profile gives the
    same ISO dates.
    """
    newest = int(profile.lstat().st_mtime)
    for root, dirs, files in os.walk(profile):
        for name in (*dirs, *files):
            newest = max(newest, int(os.lstat(os.path.join(root, name)).st_mtime))
    return newest


async def build_locally(
    settings: Settings,
    profile: Path,
    out: Path,
    source_date_epoch: int | None,
    boot_test: BootPolicy = "required",
) -> int:
    """Build `profile` in the sandbox, put the ISO and sums in `out`, boot it.

    Args:
        settings: The configuration (`[sandbox]`, `[boot_test]`).
        profile: The profile directory.
        out: Where the ISO, its sums and the boot screenshots (`boot/`) go.
        source_date_epoch: SOURCE_DATE_EPOCH, or None for the profile's newest file.
        boot_test: "required" (a boot that fails fails the command), "advisory"
            (reported only) or "off".

    Returns:
        0 on success, 1 when the build or a required boot test failed (the reason
        is printed).
    """
    resolved = Path(await anyio.Path(profile).resolve())
    if not await anyio.Path(resolved).is_dir():
        print(f"isorunner: {profile} is not a directory", file=sys.stderr)
        return 1
    sandbox = BuildSandbox(sandbox_config(settings))
    build_id = f"local-{os.getpid()}"
    epoch = source_date_epoch
    if epoch is None:
        epoch = await anyio.to_thread.run_sync(newest_mtime, resolved)

    async def print_line(line: str) -> None:
        # The build's output, its controls already visible, set apart from our lines.
        print(build_output(line), flush=True)

    async def print_own(line: str) -> None:
        print(line, flush=True)

    async def warn() -> None:
        print("[isorunner] the build is running long; it stops at the time limit", flush=True)

    # The build's repository is hard-linked from the package cache: keep it beside it.
    cache_parent = settings.packages.cache_dir.parent
    await anyio.Path(cache_parent).mkdir(parents=True, exist_ok=True)
    workspace = Path(tempfile.mkdtemp(prefix="isorunner-local-", dir=cache_parent))
    try:
        async with package_client() as http:
            packages = await build_packages(settings, http).prepare(
                forge="local",
                repo=str(resolved),
                trusted=True,
                profile=resolved,
                workspace=workspace,
                log=lambda line: print(line, flush=True),
            )
        result = await sandbox.run(
            build_id,
            resolved,
            source_date_epoch=epoch,
            log_sink=print_line,
            on_warning=warn,
            package_repo=packages.repository,
        )
        if not result.isos:
            print("isorunner: mkarchiso succeeded but wrote no ISO", file=sys.stderr)
            return 1
        files = await collect_artifacts(result.isos, out)
    except (SandboxError, PackageError) as exc:
        print(f"isorunner: build failed: {exc}", file=sys.stderr)
        return 1
    finally:
        with anyio.CancelScope(shield=True):
            await sandbox.discard(build_id)
            await anyio.to_thread.run_sync(shutil.rmtree, workspace, True)
    for path in files:
        print(f"[isorunner] wrote {path}")
    plan = plan_for(settings.boot_test, RepoBootTest(policy=boot_test), RefKind.BRANCH)
    isos = [path for path in files if path.suffix == ".iso"]
    if plan is None or not isos:
        return 0
    step = BootStep(boot_tester(settings))
    records = await step.run(
        run_id=build_id,
        iso=isos[0],
        plan=plan,
        boot_dir=out / BOOT_DIR,
        log=print_line,
        note=print_own,
    )
    judged = verdict(records)
    for record in records:
        if record.screenshot:
            print(f"[isorunner] screenshot ({record.name}): {out / BOOT_DIR / record.screenshot}")
    print(f"[isorunner] {judged.detail}", flush=True)
    return 0 if judged.event is None else 1

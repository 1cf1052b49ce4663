"""`isorunner build PROFILE_DIR --out DIR`: the sandboxed build without a forge.

I/O shell. The same sandbox, limits and checks as a forge-triggered build; the log is
printed line by line as it is written, and the ISO with its checksum files lands in
`--out`. Exit code 0 only when an ISO was built.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import anyio

from runner.artifacts import collect_artifacts
from runner.settings import Settings
from runner.wiring import sandbox_config
from sandbox import BuildSandbox, SandboxError


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
    settings: Settings, profile: Path, out: Path, source_date_epoch: int | None
) -> int:
    """Build `profile` in the sandbox and put the ISO and sums in `out`.

    Returns:
        0 on success, 1 when the build failed (the reason is printed).
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
        print(line, flush=True)

    async def warn() -> None:
        print("[isorunner] the build is running long; it stops at the time limit", flush=True)

    try:
        result = await sandbox.run(
            build_id,
            resolved,
            source_date_epoch=epoch,
            log_sink=print_line,
            on_warning=warn,
        )
        if not result.isos:
            print("isorunner: mkarchiso succeeded but wrote no ISO", file=sys.stderr)
            return 1
        files = await collect_artifacts(result.isos, out)
    except SandboxError as exc:
        print(f"isorunner: build failed: {exc}", file=sys.stderr)
        return 1
    finally:
        with anyio.CancelScope(shield=True):
            await sandbox.discard(build_id)
    for path in files:
        print(f"[isorunner] wrote {path}")
    return 0

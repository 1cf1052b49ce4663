"""`isorunner check`: is this installation ready to build? Says what to fix.

I/O shell: looks at the sandbox base and its manifest, opens the database, and
reports each finding on its own line. Exit code 0 only when nothing is wrong.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass

from runner.exceptions import RunnerError
from runner.settings import Settings
from runner.store import open_store

MANIFEST = "etc/isorunner/manifest.json"


@dataclass(frozen=True, slots=True)
class Finding:
    """One check's result: what was checked, whether it is fine, and what to do."""

    name: str
    ok: bool
    message: str


def check_base(settings: Settings) -> Finding:
    """The sandbox base exists and carries a readable manifest."""
    base = settings.sandbox.base
    manifest = base / MANIFEST
    if not base.is_dir():
        return Finding("sandbox base", False, f"{base} is missing: run scripts/setup-sandbox.sh")
    try:
        data = json.loads(manifest.read_text())
    except (OSError, ValueError) as exc:
        return Finding(
            "sandbox base",
            False,
            f"{manifest} is unreadable ({exc}): run scripts/setup-sandbox.sh again",
        )
    if data.get("uid_base") != settings.sandbox.uid_base:
        return Finding(
            "sandbox base",
            False,
            f"the base is owned by uid range {data.get('uid_base')} but sandbox.uid_base is "
            f"{settings.sandbox.uid_base}: make them agree",
        )
    return Finding("sandbox base", True, f"{base} (made {data.get('created', '?')})")


def check_tools() -> Finding:
    """systemd-nspawn is installed."""
    if shutil.which("systemd-nspawn") is None:
        return Finding("tools", False, "systemd-nspawn is missing: install systemd-container")
    return Finding("tools", True, "systemd-nspawn found")


async def check_database(settings: Settings) -> Finding:
    """The job database opens (and is created if new)."""
    try:
        async with open_store(settings.storage.database) as store:
            counts = await store.count_by_state()
    except RunnerError as exc:
        return Finding("database", False, str(exc))
    return Finding("database", True, f"{sum(counts.values())} builds stored")


async def run_checks(settings: Settings) -> int:
    """Run every check, print one line each; return 0 when all passed."""
    findings = [check_tools(), check_base(settings), await check_database(settings)]
    for finding in findings:
        mark = "ok  " if finding.ok else "FAIL"
        print(f"{mark} {finding.name}: {finding.message}", file=sys.stdout)
    return 0 if all(f.ok for f in findings) else 1

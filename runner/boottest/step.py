"""`BootStep`: runs a build's boot tests and keeps their results.

I/O shell: the boots run through `sandbox.BootTester` (QEMU in sandbox containers),
each screenshot is written to the build's `boot/` directory beside its artifacts, and
the results go to the job store. A test that cannot run (the base lacks QEMU or OVMF)
is recorded as an error, not raised; a cancellation propagates.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Protocol

import anyio

from runner.boottest.policy import BootPlan, error_record, record_of, screenshot_name
from sandbox import BootResult, BootSpec, Cancelled, SandboxError
from webhooks.build import BootTestRecord

LogSink = Callable[[str], Awaitable[None]]


class BootRunner(Protocol):
    """What the step needs of `sandbox.BootTester`."""

    async def boot(
        self, run_id: str, iso: Path, spec: BootSpec, *, log_sink: LogSink
    ) -> BootResult:
        """Boot `iso` as `spec` says (see `sandbox.BootTester.boot`)."""
        ...


class BootTestStore(Protocol):
    """What the step needs of the job store."""

    async def save_boot_tests(self, build_id: int, tests: Sequence[BootTestRecord]) -> None:
        """Store the build's boot test results."""
        ...


class BootStep:
    """Runs boot plans.

    Args:
        tester: Boots ISOs (`sandbox.BootTester`).
        store: Where results are kept with their build; None keeps them nowhere
            (`isorunner build`).
    """

    def __init__(self, tester: BootRunner, store: BootTestStore | None = None) -> None:
        self._tester = tester
        self._store = store

    async def run(
        self,
        *,
        run_id: str,
        iso: Path,
        plan: BootPlan,
        boot_dir: Path,
        log: LogSink,
        note: LogSink | None = None,
        build_id: int | None = None,
    ) -> list[BootTestRecord]:
        """Boot `iso` once per spec of `plan`, in order.

        Args:
            run_id: The sandbox id prefix of the boots (`<run_id>-boot-<n>`).
            iso: The built ISO.
            plan: The boots and whether they are required.
            boot_dir: Where screenshots are written (created if needed).
            log: The build log for what the boots print (QEMU, the serial console).
            note: The build log for isorunner's own lines (what runs, each verdict),
                kept apart from what the guest prints; `log` when None.
            build_id: The stored build the results belong to, if any.

        Returns:
            One record per boot.

        Raises:
            Cancelled: The build was cancelled meanwhile.
        """
        own = note if note is not None else log
        records: list[BootTestRecord] = []
        for n, spec in enumerate(plan.specs):
            policy = "required" if plan.required else "advisory"
            await own(f"[isorunner] boot test {n + 1}/{len(plan.specs)} ({spec.name}, {policy})")
            try:
                result = await self._tester.boot(f"{run_id}-boot-{n}", iso, spec, log_sink=log)
            except Cancelled:
                raise
            except SandboxError as exc:
                record = error_record(spec, required=plan.required, reason=str(exc))
            else:
                name = ""
                if result.screenshot is not None:
                    name = screenshot_name(spec)
                    await anyio.to_thread.run_sync(_write, boot_dir, name, result.screenshot)
                record = record_of(result, required=plan.required, screenshot=name)
            await own(
                f"[isorunner] boot test ({record.name}): {record.outcome.replace('_', ' ')}, "
                f"{record.reason}"
            )
            records.append(record)
        if self._store is not None and build_id is not None:
            await self._store.save_boot_tests(build_id, records)
        return records


def _write(directory: Path, name: str, data: bytes) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_bytes(data)

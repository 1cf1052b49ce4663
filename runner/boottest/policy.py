"""Which boot tests a build gets, and what their results mean for it.

Pure: functions of the settings, the request and the results. `plan_for` turns the
`[boot_test]` defaults and a repository's `boot_test` into a `BootPlan` (or None when
the policy is "off"); `record_of` turns a sandbox `BootResult` into the stored
`BootTestRecord`; `verdict` says what the results do to the build (fail it, or only
a note) and the words for the commit status and the release.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from runner.jobs import Event
from runner.settings import BootTestSettings, RepoBootTest
from sandbox import BootResult, BootSpec, parse_size
from webhooks.build import BootTestRecord, RefKind

#: The words for each firmware, as users know them.
FIRMWARE_NAMES = {"bios": "BIOS", "uefi": "UEFI"}


@dataclass(frozen=True, slots=True)
class BootPlan:
    """The boot tests of one build.

    Attributes:
        required: A test that does not pass fails the build (no release).
        specs: One boot per firmware (and medium and mode), in order.
    """

    required: bool
    specs: tuple[BootSpec, ...]


def plan_for(
    defaults: BootTestSettings, repo: RepoBootTest | None, kind: RefKind
) -> BootPlan | None:
    """The boot tests for a build of `kind`, or None when they are off.

    Args:
        defaults: The `[boot_test]` section.
        repo: The repository's `boot_test`, or None (`isorunner build`, or a
            repository that sets nothing).
        kind: What was pushed; without a policy, tags require the test and branches
            and pull requests only report it.
    """
    repo = repo if repo is not None else RepoBootTest()
    policy = repo.policy or ("required" if kind is RefKind.TAG else "advisory")
    if policy == "off":
        return None
    specs = tuple(
        BootSpec(
            firmware=firmware,
            medium=repo.medium or defaults.medium,
            mode=repo.mode or defaults.mode,
            expect=repo.expect or defaults.expect,
            timeout_seconds=float(repo.timeout_seconds or defaults.timeout_seconds),
            memory_mib=parse_size(defaults.memory) >> 20,
            cpus=defaults.cpus,
            network=repo.network,
        )
        for firmware in (repo.firmware or defaults.firmware)
    )
    return BootPlan(required=policy == "required", specs=specs)


def screenshot_name(spec: BootSpec) -> str:
    """The screenshot's file name: "uefi.png", "bios-usb-kernel.png"."""
    return spec.name.replace(", ", "-") + ".png"


def record_of(result: BootResult, *, required: bool, screenshot: str) -> BootTestRecord:
    """The stored form of one boot test's result."""
    spec = result.spec
    return BootTestRecord(
        name=spec.name,
        firmware=spec.firmware,
        medium=spec.medium,
        mode=spec.mode,
        outcome=result.outcome,
        required=required,
        accelerator=result.accelerator,
        seconds=result.seconds,
        reason=result.reason,
        serial_tail=result.serial_tail,
        screenshot=screenshot,
        command_line=result.command_line or "",
    )


def error_record(spec: BootSpec, *, required: bool, reason: str) -> BootTestRecord:
    """The stored form of a boot test that could not run (no QEMU, no firmware...)."""
    return BootTestRecord(
        name=spec.name,
        firmware=spec.firmware,
        medium=spec.medium,
        mode=spec.mode,
        outcome="error",
        required=required,
        accelerator="",
        seconds=0.0,
        reason=reason,
    )


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the boot tests do to a build that built its ISO.

    Attributes:
        event: `Event.FAIL` or `Event.ERROR` when a required test did not pass (the
            build ends so and nothing is published), else None (it succeeds).
        detail: The words for the commit status, after "ISO built in ...".
        release_line: The line for the release body ("" when not every test passed).
    """

    event: Event | None
    detail: str
    release_line: str


def _names(records: Sequence[BootTestRecord]) -> str:
    names = [FIRMWARE_NAMES.get(r.firmware, r.firmware) for r in records]
    unique = list(dict.fromkeys(names))
    return " and ".join(unique) if len(unique) <= 2 else ", ".join(unique)


def verdict(records: Sequence[BootTestRecord]) -> Verdict:
    """Judge a build's boot tests.

    Args:
        records: The results, each marked required or not.

    Returns:
        The verdict: a failed required test fails the build (an error errors it),
        a failed advisory one is only reported.
    """
    if not records:
        return Verdict(None, "", "")
    bad = [r for r in records if not r.passed]
    if not bad:
        seconds = max(r.seconds for r in records)
        words = f"boots on {_names(records)} (QEMU), {seconds:.0f} s"
        return Verdict(None, words, f"{words[0].upper()}{words[1:]}.")
    first = bad[0]
    what = {"failed": "failed", "timed_out": "timed out", "error": "could not run"}
    text = f"boot test {what.get(first.outcome, first.outcome)} ({first.name}): {first.reason}"
    if any(r.required for r in bad):
        required = [r for r in bad if r.required]
        event = Event.ERROR if all(r.outcome == "error" for r in required) else Event.FAIL
        return Verdict(event, text, "")
    return Verdict(None, f"{text} (advisory)", "")

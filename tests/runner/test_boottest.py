"""Tests for runner.boottest: which boot tests a build gets, what their results do to it.

The policy is pure; the pipeline is driven with the fake forge and sandbox of
tests.runner.fakes and a scripted boot tester (the real one is exercised in
tests/sandbox/test_boot_integration.py and end to end in tests/e2e).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.boottest import BootPlan, BootStep, plan_for, verdict
from runner.boottest.policy import error_record, record_of
from runner.buildlogs import BuildLogs
from runner.jobs import Event
from runner.pipeline import Pipeline, PipelineConfig
from runner.settings import BootTestSettings, RepoBootTest, RepoSettings
from sandbox import BootResult, BootSpec, SetupError
from tests.runner.fakes import FakeForge, FakeSandbox, profile_tarball
from tests.runner.store.samples import make_request
from tests.runner.test_pipeline import STARTED
from webhooks.build import BootTestRecord, BuildRecord, BuildRequest, BuildState, Forge, RefKind

DEFAULTS = BootTestSettings()


def test_plan_for_requires_tags_and_advises_branches_and_pull_requests() -> None:
    """Without a policy: tags require the test, branches and pull requests only report."""
    for kind, required in (
        (RefKind.TAG, True),
        (RefKind.BRANCH, False),
        (RefKind.PULL_REQUEST, False),
    ):
        plan = plan_for(DEFAULTS, None, kind)
        assert plan is not None
        assert plan.required is required
        assert [s.firmware for s in plan.specs] == ["bios", "uefi"]


def test_plan_for_follows_the_repositorys_policy_and_overrides() -> None:
    """A repository's boot_test sets the policy and replaces what it names."""
    repo = RepoBootTest(
        policy="required", mode="kernel", firmware=("uefi",), expect=("READY",), network=True
    )
    plan = plan_for(DEFAULTS, repo, RefKind.BRANCH)
    assert plan == BootPlan(
        required=True,
        specs=(
            BootSpec(
                firmware="uefi",
                mode="kernel",
                expect=("READY",),
                timeout_seconds=600.0,
                memory_mib=2048,
                network=True,
            ),
        ),
    )
    assert plan_for(DEFAULTS, RepoBootTest(policy="off"), RefKind.TAG) is None


def test_repo_boot_test_accepts_the_policy_alone_as_a_string() -> None:
    """`boot_test = "advisory"` in a [[repos]] table is the policy shorthand."""
    repo = RepoSettings.model_validate({"forge": "github", "name": "o/r", "boot_test": "advisory"})
    assert repo.boot_test == RepoBootTest(policy="advisory")
    with pytest.raises(ValueError, match="policy"):
        RepoSettings.model_validate({"forge": "github", "name": "o/r", "boot_test": "maybe"})


def _record(
    outcome: str, *, firmware: str = "bios", required: bool = True, seconds: float = 20.0
) -> BootTestRecord:
    return BootTestRecord(
        name=firmware,
        firmware=firmware,
        medium="cdrom",
        mode="firmware",
        outcome=outcome,
        required=required,
        accelerator="tcg",
        seconds=seconds,
        reason="'archiso login:' after 20.0 s" if outcome == "passed" else "'Kernel panic'",
    )


def test_verdict_of_passing_tests_names_the_firmwares_and_the_slowest_time() -> None:
    """All passed: the build succeeds; status and release say where it boots and how fast."""
    judged = verdict(
        [_record("passed", seconds=21.4), _record("passed", firmware="uefi", seconds=36.6)]
    )
    assert judged.event is None
    assert judged.detail == "boots on BIOS and UEFI (QEMU), 37 s"
    assert judged.release_line == "Boots on BIOS and UEFI (QEMU), 37 s."


def test_verdict_of_a_required_failure_fails_the_build() -> None:
    """A required test that fails fails the build, naming the boot and why."""
    judged = verdict([_record("passed"), _record("failed", firmware="uefi")])
    assert judged.event is Event.FAIL
    assert judged.detail == "boot test failed (uefi): 'Kernel panic'"
    assert judged.release_line == ""


def test_verdict_of_an_advisory_failure_only_reports_it() -> None:
    """An advisory test that times out leaves the build successful, with a note."""
    judged = verdict([_record("timed_out", required=False)])
    assert judged.event is None
    assert judged.detail.endswith("(advisory)")
    assert judged.detail.startswith("boot test timed out (bios)")


def test_verdict_of_a_test_that_could_not_run_errors_a_required_build() -> None:
    """A required test that could not run (no QEMU) errors the build: retrying may help."""
    spec = BootSpec(firmware="uefi")
    judged = verdict([error_record(spec, required=True, reason="no OVMF")])
    assert judged.event is Event.ERROR
    assert "could not run (uefi): no OVMF" in judged.detail


class ScriptedTester:
    """A boot tester that returns the outcomes it is given, in order, or raises."""

    def __init__(self, *outcomes: str | Exception) -> None:
        self.outcomes = list(outcomes)
        self.booted: list[tuple[str, Path, BootSpec]] = []

    async def boot(self, run_id: str, iso: Path, spec: BootSpec, *, log_sink: object) -> BootResult:
        self.booted.append((run_id, iso, spec))
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return BootResult(
            spec=spec,
            outcome=outcome,  # type: ignore[arg-type]
            accelerator="tcg",
            seconds=12.0,
            reason=f"{outcome} in the script",
            serial_tail=("archiso login:",),
            screenshot=b"\x89PNG\r\n\x1a\nfake",
        )


class Saved:
    """Records what the step stores."""

    def __init__(self) -> None:
        self.saved: dict[int, list[BootTestRecord]] = {}

    async def save_boot_tests(self, build_id: int, tests: object) -> None:
        self.saved[build_id] = list(tests)  # type: ignore[call-overload]


def _pipeline(
    tmp_path: Path, tester: ScriptedTester, saved: Saved, policy: str | None
) -> tuple[Pipeline, FakeForge]:
    forge = FakeForge(profile_tarball())
    repo = RepoBootTest.model_validate({"policy": policy})
    pipeline = Pipeline(
        PipelineConfig(work_root=tmp_path / "work", artifacts_root=tmp_path / "artifacts"),
        clients={Forge.GITHUB: forge},
        sandbox=FakeSandbox(tmp_path / "sandbox"),
        logs=BuildLogs(tmp_path / "logs"),
        boot=BootStep(tester, saved),
        boot_plans=lambda request: plan_for(DEFAULTS, repo, request.kind),
    )
    return pipeline, forge


async def _run(pipeline: Pipeline, request: BuildRequest) -> tuple[Event, str]:
    record = BuildRecord(1, request, BuildState.RUNNING, created_at=STARTED, started_at=STARTED)
    outcome = await pipeline.run(record)
    return outcome.event, outcome.detail


@pytest.mark.anyio
async def test_pipeline_boots_a_tag_on_both_firmwares_before_it_succeeds(tmp_path: Path) -> None:
    """A tag's ISO boots on BIOS and UEFI before the build succeeds; results are stored.

    The release (published from the outbox, tests/runner/publish) says so in its notes.
    """
    tester, saved = ScriptedTester("passed", "passed"), Saved()
    pipeline, forge = _pipeline(tmp_path, tester, saved, None)
    event, detail = await _run(pipeline, make_request(ref="refs/tags/v1", kind=RefKind.TAG))
    assert event is Event.SUCCEED
    assert detail == "ISO built in 2s; boots on BIOS and UEFI (QEMU), 12 s"
    assert [spec.firmware for _, _, spec in tester.booted] == ["bios", "uefi"]
    assert [run_id for run_id, _, _ in tester.booted] == ["build-1-boot-0", "build-1-boot-1"]
    assert tester.booted[0][1] == pipeline.artifacts_dir(1) / "t-1-x86_64.iso"
    assert forge.releases == []
    assert [r.screenshot for r in saved.saved[1]] == ["bios.png", "uefi.png"]
    assert (pipeline.artifacts_dir(1) / "boot" / "uefi.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.anyio
async def test_pipeline_required_boot_failure_fails_and_publishes_nothing(tmp_path: Path) -> None:
    """A tag whose ISO panics on UEFI fails; no release is published."""
    tester, saved = ScriptedTester("passed", "failed"), Saved()
    pipeline, forge = _pipeline(tmp_path, tester, saved, None)
    event, detail = await _run(pipeline, make_request(ref="refs/tags/v1", kind=RefKind.TAG))
    assert event is Event.FAIL
    assert detail == "ISO built in 2s; boot test failed (uefi): failed in the script"
    assert forge.releases == []


@pytest.mark.anyio
async def test_pipeline_advisory_boot_failure_keeps_the_branch_build_green(tmp_path: Path) -> None:
    """A branch build whose ISO does not boot still succeeds, with the failure noted."""
    tester, saved = ScriptedTester("timed_out", "passed"), Saved()
    pipeline, _ = _pipeline(tmp_path, tester, saved, None)
    event, detail = await _run(pipeline, make_request())
    assert event is Event.SUCCEED
    assert (
        detail == "ISO built in 2s; boot test timed out (bios): timed_out in the script (advisory)"
    )


@pytest.mark.anyio
async def test_pipeline_boot_test_that_cannot_run_is_recorded_as_an_error(tmp_path: Path) -> None:
    """A tester error (no QEMU in the base) is stored as an error and errors a required build."""
    tester, saved = ScriptedTester(SetupError("QEMU did not start"), "passed"), Saved()
    pipeline, _ = _pipeline(tmp_path, tester, saved, "required")
    event, detail = await _run(pipeline, make_request())
    assert event is Event.ERROR
    assert "could not run (bios): QEMU did not start" in detail
    assert [r.outcome for r in saved.saved[1]] == ["error", "passed"]


@pytest.mark.anyio
async def test_pipeline_boot_test_off_boots_nothing(tmp_path: Path) -> None:
    """Policy "off": no boot, no stored results, the usual detail."""
    tester, saved = ScriptedTester(), Saved()
    pipeline, _ = _pipeline(tmp_path, tester, saved, "off")
    assert await _run(pipeline, make_request()) == (Event.SUCCEED, "ISO built in 2s")
    assert tester.booted == []
    assert saved.saved == {}


def test_record_of_keeps_what_the_page_shows() -> None:
    """A sandbox result becomes a stored record with its policy and screenshot name."""
    spec = BootSpec(firmware="bios", medium="usb", mode="kernel")
    result = BootResult(
        spec=spec,
        outcome="passed",
        accelerator="kvm",
        seconds=3.0,
        reason="ok",
        serial_tail=("a",),
        screenshot=None,
        command_line="x console=ttyS0,115200",
    )
    record = record_of(result, required=False, screenshot="")
    assert (record.name, record.medium, record.mode, record.required) == (
        "bios, usb, kernel",
        "usb",
        "kernel",
        False,
    )
    assert record.command_line == "x console=ttyS0,115200"


class ChattyTester(ScriptedTester):
    """A scripted tester whose guest prints a line to the serial console."""

    async def boot(self, run_id: str, iso: Path, spec: BootSpec, *, log_sink: object) -> BootResult:
        assert callable(log_sink)
        await log_sink("console: [isorunner] boot test (bios): passed, forged by the guest")
        return await super().boot(run_id, iso, spec, log_sink=log_sink)


@pytest.mark.anyio
async def test_pipeline_boot_log_keeps_isorunners_lines_apart_from_the_guests(
    tmp_path: Path,
) -> None:
    """The step's own lines are unmarked; what the guest prints comes after `| `."""
    tester, saved = ChattyTester("passed", "passed"), Saved()
    pipeline, _ = _pipeline(tmp_path, tester, saved, None)
    await _run(pipeline, make_request(ref="refs/tags/v1", kind=RefKind.TAG))
    lines = (tmp_path / "logs" / "1.log").read_text().splitlines()
    assert "[isorunner] boot test 1/2 (bios, required)" in lines
    assert "| console: [isorunner] boot test (bios): passed, forged by the guest" in lines


@pytest.mark.anyio
async def test_pipeline_boots_a_forks_iso_before_dropping_it(tmp_path: Path) -> None:
    """A fork's ISO is boot-tested, then deleted: its checksums stay, the ISO does not."""
    tester, saved = ScriptedTester("passed", "passed"), Saved()
    pipeline, _ = _pipeline(tmp_path, tester, saved, "advisory")
    request = make_request(kind=RefKind.PULL_REQUEST, pr_number=5, trusted=False)
    event, detail = await _run(pipeline, request)
    assert event is Event.SUCCEED
    assert detail.endswith("; ISO not kept (untrusted)")
    assert len(tester.booted) == 2
    assert not (pipeline.artifacts_dir(1) / "t-1-x86_64.iso").exists()
    assert (pipeline.artifacts_dir(1) / "sha256sums").is_file()

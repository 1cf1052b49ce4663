"""Tests for runner.pipeline: one build from fetch to publish, and its pure rules.

`Pipeline.run` is driven directly with a fake forge and sandbox (`tests.runner.fakes`)
and real build logs and artifact directories in a temporary directory; the worker
around it is tested in test_worker.py, the real sandbox end to end in tests/e2e.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from runner.buildlogs import BuildLogs
from runner.exceptions import ArchiveRejected
from runner.forges.exceptions import ForgeUnavailable
from runner.jobs import Event
from runner.packages import ResolvedPackage, ResolvedPackages
from runner.packages.exceptions import (
    DownloadFailed,
    PackageNotFound,
    RepositoryNotAllowed,
    SignatureInvalid,
)
from runner.pipeline import Outcome, Pipeline, PipelineConfig, classify, is_error_line
from sandbox import BuildFailed, Cancelled, OutOfMemory, ProfileInvalid, TimedOut
from tests.runner.fakes import FakeForge, FakeSandbox, profile_tarball
from tests.runner.store.samples import make_request
from webhooks.build import BuildRecord, BuildRequest, BuildState, Forge, PackageEntry, RefKind

STARTED = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


@dataclass
class Parts:
    """A pipeline over a fake forge and sandbox, with what it writes on disk."""

    pipeline: Pipeline
    forge: FakeForge
    sandbox: FakeSandbox
    logs: BuildLogs
    ids: list[int]

    async def run(self, request: BuildRequest) -> tuple[int, Outcome]:
        """Run `request` as a new running build; return its id and outcome."""
        build_id = len(self.ids) + 1
        self.ids.append(build_id)
        record = BuildRecord(
            build_id, request, BuildState.RUNNING, created_at=STARTED, started_at=STARTED
        )
        return build_id, await self.pipeline.run(record)


@pytest.fixture
def parts(tmp_path: Path) -> Parts:
    """A pipeline whose forge serves a tiny profile and whose sandbox writes an ISO."""
    forge = FakeForge(profile_tarball())
    sandbox = FakeSandbox(tmp_path / "sandbox")
    logs = BuildLogs(tmp_path / "logs")
    pipeline = Pipeline(
        PipelineConfig(work_root=tmp_path / "work", artifacts_root=tmp_path / "artifacts"),
        clients={Forge.GITHUB: forge},
        sandbox=sandbox,
        logs=logs,
    )
    return Parts(pipeline, forge, sandbox, logs, [])


@pytest.mark.anyio
async def test_pipeline_branch_build_keeps_iso_and_sums_and_cleans_up(parts: Parts) -> None:
    """A branch build succeeds, keeps its ISO and sums, logs the build, publishes nothing."""
    build_id, outcome = await parts.run(make_request())
    assert outcome == Outcome(Event.SUCCEED, "ISO built in 2s")
    artifacts = parts.pipeline.artifacts_dir(build_id)
    assert sorted(p.name for p in artifacts.iterdir()) == ["b2sums", "sha256sums", "t-1-x86_64.iso"]
    assert "[mkarchiso] INFO: building" in parts.logs.path(build_id).read_text()
    assert parts.forge.releases == []
    assert parts.sandbox.discarded == [f"build-{build_id}"]


@pytest.mark.anyio
async def test_pipeline_trusted_tag_ends_with_its_files_on_disk_and_publishes_nothing(
    parts: Parts,
) -> None:
    """A trusted tag build succeeds once ISO and sums are kept; the outbox publishes them."""
    build_id, outcome = await parts.run(make_request(ref="refs/tags/v1.0", kind=RefKind.TAG))
    assert outcome == Outcome(Event.SUCCEED, "ISO built in 2s")
    artifacts = parts.pipeline.artifacts_dir(build_id)
    assert sorted(p.name for p in artifacts.iterdir()) == ["b2sums", "sha256sums", "t-1-x86_64.iso"]
    assert parts.forge.releases == []
    assert "[isorunner] release v1.0 queued" in parts.logs.path(build_id).read_text()


@pytest.mark.anyio
async def test_pipeline_untrusted_tag_never_publishes(parts: Parts) -> None:
    """Fork code is built but never published, even on a tag ref."""
    request = make_request(ref="refs/tags/v1.0", kind=RefKind.TAG, trusted=False)
    _, outcome = await parts.run(request)
    assert outcome.event is Event.SUCCEED
    assert parts.forge.releases == []


@pytest.mark.anyio
async def test_pipeline_keeps_only_the_sums_and_log_of_a_forks_build(parts: Parts) -> None:
    """By default a fork's ISO is deleted once built; its checksums and log stay."""
    request = make_request(kind=RefKind.PULL_REQUEST, pr_number=3, trusted=False)
    build_id, outcome = await parts.run(request)
    assert outcome.event is Event.SUCCEED
    assert outcome.detail.endswith("; ISO not kept (untrusted)")
    artifacts = parts.pipeline.artifacts_dir(build_id)
    assert sorted(p.name for p in artifacts.iterdir()) == ["b2sums", "sha256sums"]
    assert "t-1-x86_64.iso" in (artifacts / "sha256sums").read_text()
    assert "its ISO is not kept" in parts.logs.path(build_id).read_text()


@pytest.mark.anyio
async def test_pipeline_keeps_a_forks_iso_when_configured(tmp_path: Path) -> None:
    """With keep_untrusted_artifacts, a fork's ISO stays (served under /untrusted/)."""
    forge = FakeForge(profile_tarball())
    pipeline = Pipeline(
        PipelineConfig(
            work_root=tmp_path / "work",
            artifacts_root=tmp_path / "artifacts",
            keep_untrusted_artifacts=True,
        ),
        clients={Forge.GITHUB: forge},
        sandbox=FakeSandbox(tmp_path / "sandbox"),
        logs=BuildLogs(tmp_path / "logs"),
    )
    request = make_request(kind=RefKind.PULL_REQUEST, pr_number=3, trusted=False)
    record = BuildRecord(1, request, BuildState.RUNNING, created_at=STARTED, started_at=STARTED)
    outcome = await pipeline.run(record)
    assert outcome.detail == "ISO built in 2s"
    assert (pipeline.artifacts_dir(1) / "t-1-x86_64.iso").is_file()


@pytest.mark.anyio
async def test_pipeline_source_date_epoch_is_the_archives_commit_time(parts: Parts) -> None:
    """The archive's entry time (git archive's commit time) is SOURCE_DATE_EPOCH."""
    parts.forge.archive = profile_tarball(mtime=1_735_787_045)
    build_id, _ = await parts.run(make_request())
    assert parts.sandbox.seen_epochs == [1_735_787_045]
    assert "SOURCE_DATE_EPOCH=1735787045" in parts.logs.path(build_id).read_text()


@pytest.mark.anyio
async def test_pipeline_source_date_epoch_falls_back_to_webhook_time(parts: Parts) -> None:
    """Without entry times in the archive, the webhook's commit time is used."""
    request = make_request()
    await parts.run(request)
    assert parts.sandbox.seen_epochs == [int(request.commit_time.timestamp())]


@pytest.mark.anyio
async def test_pipeline_failure_detail_leads_with_the_logs_first_error(parts: Parts) -> None:
    """A failed build's detail starts with the log's first error line, e.g. pacman's."""
    parts.sandbox.log_lines = [
        "error: target not found: no-such-package",
        "==> ERROR: Failed to install packages to new root",
    ]
    parts.sandbox.error = BuildFailed("the build command exited with status 1", exit_code=1)
    _, outcome = await parts.run(make_request())
    assert outcome == Outcome(
        Event.FAIL,
        "error: target not found: no-such-package; the build command exited with status 1",
    )


@pytest.mark.anyio
async def test_pipeline_log_sets_the_builds_own_lines_apart(parts: Parts) -> None:
    """A build printing isorunner's own success line shows it in its log after `| `."""
    parts.sandbox.log_lines = ["[isorunner] succeed: ISO built in 1s"]
    build_id, _ = await parts.run(make_request())
    lines = parts.logs.path(build_id).read_text().splitlines()
    assert "| [mkarchiso] INFO: building" in lines
    assert "| [isorunner] succeed: ISO built in 1s" in lines
    ours = [line for line in lines if line.startswith("[isorunner]")]
    assert ours[-1] == "[isorunner] succeed: ISO built in 2s"
    assert [line for line in lines if not line.startswith(("[isorunner] ", "| "))] == []


@pytest.mark.anyio
async def test_pipeline_survives_sandbox_clean_up_errors(parts: Parts) -> None:
    """A clean-up that fails is retried, then logged; the outcome stands, later builds run."""
    parts.sandbox.discard_errors = [
        FileNotFoundError("ovl-work"),  # retried: the second pass succeeds
        OSError("busy"),
        OSError("still busy"),  # failed twice: logged, the build keeps its outcome
    ]
    outcomes = [(await parts.run(make_request()))[1].event for _ in range(3)]
    assert outcomes == [Event.SUCCEED] * 3
    assert parts.sandbox.discard_errors == []
    assert len(parts.sandbox.discarded) == 5


@pytest.mark.anyio
async def test_pipeline_hostile_archive_fails_naming_entry(parts: Parts) -> None:
    """An archive with an escaping entry fails the build and names the entry."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("top/../../etc/evil")
        tar.addfile(info, io.BytesIO(b""))
    parts.forge.archive = buffer.getvalue()
    _, outcome = await parts.run(make_request())
    assert outcome.event is Event.FAIL
    assert "profile archive rejected" in outcome.detail
    assert "etc/evil" in outcome.detail


@pytest.mark.parametrize(
    ("exc", "event"),
    [
        (ArchiveRejected("entry 'x' escapes"), Event.FAIL),
        (ProfileInvalid("no profiledef.sh", path="profiledef.sh"), Event.FAIL),
        (BuildFailed("exit 1", exit_code=1), Event.FAIL),
        (TimedOut("timed out after 1200 s"), Event.ERROR),
        (Cancelled("cancelled"), Event.CANCEL),
        (ForgeUnavailable("502 from forge", status_code=502), Event.ERROR),
        (RuntimeError("bug"), Event.ERROR),
    ],
)
def test_classify_maps_errors_to_events(exc: Exception, event: Event) -> None:
    """Profile problems fail a build; infrastructure problems error it."""
    assert classify(exc).event is event


def test_classify_bounds_the_detail_whatever_the_profile_wrote() -> None:
    """A megabyte error line or archive entry name still makes a detail of 1,000 characters."""
    huge = "x" * 1_000_000
    failed = classify(BuildFailed("exit 1", exit_code=1), reason=f"error: {huge}")
    assert len(failed.detail) <= 1000
    assert failed.detail.endswith("…; exit 1")
    rejected = classify(ArchiveRejected("escapes the profile directory", entry=huge))
    assert len(rejected.detail) <= 1000
    assert rejected.detail.endswith("…' escapes the profile directory")


def test_classify_puts_the_logs_error_before_a_failed_command_only() -> None:
    """The log's error line leads a failed command's detail, not a limit's or a timeout's."""
    reason = "error: target not found: x"
    failed = classify(BuildFailed("exit 1", exit_code=1), reason=reason)
    assert failed.detail == f"{reason}; exit 1"
    assert classify(OutOfMemory("out of memory", exit_code=137), reason=reason).detail == (
        "out of memory"
    )
    assert classify(TimedOut("timed out"), reason=reason).detail == "timed out"
    assert classify(BuildFailed("exit 1", exit_code=1)).detail == "exit 1"


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("error: target not found: x", True),
        ("[mkarchiso] ERROR: Profile 'x' does not exist", True),
        ("==> ERROR: Failed to install packages to new root", True),
        ("[mkarchiso] INFO: Installing packages", False),
        ("warning: no /build/work/pacman-cache/ cache exists, creating...", False),
        ("  error: indented is not pacman's", False),
    ],
)
def test_is_error_line_knows_pacman_mkarchiso_and_pacstrap(line: str, error: bool) -> None:
    """Only pacman's, mkarchiso's and pacstrap's error lines count as a build's reason."""
    assert is_error_line(line) is error


class FakePackageStep:
    """A packages step that resolves two packages, or raises the error it is given."""

    def __init__(self) -> None:
        self.error: Exception | None = None
        self.calls: list[tuple[str, str, bool]] = []

    async def prepare(
        self,
        *,
        forge: str,
        repo: str,
        trusted: bool,
        profile: Path,
        workspace: Path,
        log: Callable[[str], None],
    ) -> ResolvedPackages:
        assert (profile / "profiledef.sh").is_file()
        self.calls.append((forge, repo, trusted))
        log("[isorunner] packages: 2 ready")
        if self.error is not None:
            raise self.error
        repo_dir = workspace / "repo"
        repo_dir.mkdir()
        packages = (
            ResolvedPackage("base", "3-2", "core", "a" * 64, 10, "base-3-2-any.pkg.tar.zst"),
            ResolvedPackage("zsh", "5.9-1", "extra", "b" * 64, 20, "zsh-5.9-1-any.pkg.tar.zst"),
        )
        return ResolvedPackages(packages, repo_dir, ("core", "extra"), 1, 1, 20, 0.1)


@pytest.fixture
def with_packages(
    tmp_path: Path,
) -> tuple[Parts, FakePackageStep, list[tuple[int, list[PackageEntry]]]]:
    """A pipeline with a packages step that records what it resolved."""
    step = FakePackageStep()
    recorded: list[tuple[int, list[PackageEntry]]] = []

    async def record(build_id: int, packages: Sequence[PackageEntry]) -> None:
        recorded.append((build_id, list(packages)))

    forge = FakeForge(profile_tarball())
    sandbox = FakeSandbox(tmp_path / "sandbox")
    logs = BuildLogs(tmp_path / "logs")
    pipeline = Pipeline(
        PipelineConfig(work_root=tmp_path / "work", artifacts_root=tmp_path / "artifacts"),
        clients={Forge.GITHUB: forge},
        sandbox=sandbox,
        logs=logs,
        packages=step,
        record_packages=record,
    )
    return Parts(pipeline, forge, sandbox, logs, []), step, recorded


@pytest.mark.anyio
async def test_pipeline_syncs_packages_and_binds_their_repository(
    with_packages: tuple[Parts, FakePackageStep, list[tuple[int, list[PackageEntry]]]],
    tmp_path: Path,
) -> None:
    """The packages step runs before the sandbox; its repository is bound; the list stored."""
    parts, step, recorded = with_packages
    build_id, outcome = await parts.run(make_request(trusted=False))
    assert outcome.event is Event.SUCCEED
    assert step.calls == [("github", "owner/profile", False)]
    assert parts.sandbox.seen_repos == [tmp_path / "work" / str(build_id) / "repo"]
    assert recorded == [
        (
            build_id,
            [
                PackageEntry("base", "3-2", "core", "a" * 64),
                PackageEntry("zsh", "5.9-1", "extra", "b" * 64),
            ],
        )
    ]
    log = parts.logs.path(build_id).read_text()
    assert log.index("[isorunner] packages: 2 ready") < log.index("[mkarchiso] INFO: building")


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("error", "event", "detail"),
    [
        (
            PackageNotFound(["nope"], ["core"]),
            Event.FAIL,
            "package not found: nope (searched core)",
        ),
        (
            RepositoryNotAllowed("adds [evil]", repository="evil", config_key="k"),
            Event.FAIL,
            "adds [evil]",
        ),
        (DownloadFailed("core.db", [("http://m", "answered 500")]), Event.ERROR, "package sync: "),
        (SignatureInvalid("bad sig", package="core/x-1-1"), Event.ERROR, "package sync: bad sig"),
    ],
)
async def test_pipeline_package_errors_end_the_build_before_the_sandbox(
    with_packages: tuple[Parts, FakePackageStep, list[tuple[int, list[PackageEntry]]]],
    error: Exception,
    event: Event,
    detail: str,
) -> None:
    """The profile's package faults fail the build, the others error it; no container starts."""
    parts, step, recorded = with_packages
    step.error = error
    _, outcome = await parts.run(make_request())
    assert outcome.event is event
    assert outcome.detail.startswith(detail), outcome.detail
    assert parts.sandbox.seen_epochs == []
    assert recorded == []

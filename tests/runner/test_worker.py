"""Tests for runner.worker, runner.pipeline and runner.notifications with a real store.

The sandbox and the forge are fakes implementing the protocols the runner declares;
the job store is the real SQLite store on a temporary file. The real sandbox and a
fake forge HTTP server are exercised end to end in tests/e2e.
"""

from __future__ import annotations

import dataclasses
import io
import tarfile
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest

from runner.buildlogs import BuildLogs
from runner.exceptions import ArchiveRejected, StoreError
from runner.forges.exceptions import ForgeUnavailable
from runner.forges.protocol import CommitState
from runner.jobs import Event
from runner.notifications import Notifier, status_notifier
from runner.pipeline import Pipeline, PipelineConfig, classify, is_error_line
from runner.store import SQLiteStore
from runner.worker import Worker, WorkerSink
from sandbox.exceptions import BuildFailed, Cancelled, OutOfMemory, ProfileInvalid, TimedOut
from sandbox.sandbox import BuildResult, LogSink, WarningHook
from tests.runner.store.samples import make_request
from webhooks.build import BuildRecord, BuildState, Forge, RefKind

BASE_URL = "https://ci.example.org"


def profile_tarball(top: str = "owner-profile-abc1234", mtime: int = 0) -> bytes:
    """A GitHub-style tarball of a tiny profile, entries stamped with `mtime`."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in (("profiledef.sh", b"iso_name=t\n"), ("packages.x86_64", b"base\n")):
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size = len(data)
            info.mtime = mtime
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


class FakeForge:
    """A forge client that records what it was asked and can be told to fail."""

    def __init__(self, archive: bytes) -> None:
        self.archive = archive
        self.statuses: list[tuple[str, CommitState, str]] = []
        self.releases: list[tuple[str, list[str]]] = []
        self.status_failures = 0

    async def set_status(
        self,
        repo: str,
        sha: str,
        state: CommitState,
        *,
        description: str,
        target_url: str | None,
        ref: str | None = None,
    ) -> None:
        if self.status_failures:
            self.status_failures -= 1
            raise ForgeUnavailable("forge down", status_code=502)
        self.statuses.append((sha, state, description))

    async def download_archive(self, repo: str, sha: str, dest: Path, *, max_bytes: int) -> int:
        await anyio.Path(dest).write_bytes(self.archive)
        return len(self.archive)

    async def publish_release(
        self, repo: str, tag: str, files: Sequence[Path], *, name: str, body: str
    ) -> str:
        self.releases.append((tag, [f.name for f in files]))
        return f"https://forge/{repo}/releases/{tag}"


class FakeSandbox:
    """A sandbox that writes an ISO, fails, or blocks, as the test says."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.error: Exception | None = None
        self.block = anyio.Event()
        self.blocking = False
        self.started = anyio.Event()
        self.discarded: list[str] = []
        self.warn = False
        self.seen_epochs: list[int] = []
        self.log_lines: list[str] = []
        self.discard_errors: list[Exception] = []

    async def run(
        self,
        build_id: str,
        profile_dir: Path,
        *,
        source_date_epoch: int,
        log_sink: LogSink,
        on_warning: WarningHook | None = None,
    ) -> BuildResult:
        assert (profile_dir / "profiledef.sh").is_file()
        self.seen_epochs.append(source_date_epoch)
        self.started.set()
        await log_sink("[mkarchiso] INFO: building")
        for line in self.log_lines:
            await log_sink(line)
        if self.warn and on_warning is not None:
            await on_warning()
        if self.blocking:
            await self.block.wait()
        if self.error is not None:
            raise self.error
        out = self.root / build_id
        out.mkdir(parents=True)
        iso = out / "t-1-x86_64.iso"
        iso.write_bytes(b"ISO" * 1000)
        return BuildResult(build_id, 0, 1.5, out, (iso,), ())

    async def discard(self, build_id: str) -> None:
        self.discarded.append(build_id)
        if self.discard_errors:
            raise self.discard_errors.pop(0)


@dataclasses.dataclass
class Rig:
    store: SQLiteStore
    forge: FakeForge
    sandbox: FakeSandbox
    worker: Worker
    sink: WorkerSink
    logs: BuildLogs
    pipeline: Pipeline


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    """A worker over a real store with a fake forge and sandbox."""
    async with SQLiteStore(tmp_path / "db.sqlite", notify=status_notifier(BASE_URL)) as store:
        forge = FakeForge(profile_tarball())
        sandbox = FakeSandbox(tmp_path / "sandbox")
        logs = BuildLogs(tmp_path / "logs")
        pipeline = Pipeline(
            PipelineConfig(work_root=tmp_path / "work", artifacts_root=tmp_path / "artifacts"),
            clients={Forge.GITHUB: forge},
            sandbox=sandbox,
            logs=logs,
        )
        notifier = Notifier(store, {Forge.GITHUB: forge}, poll_seconds=0.05)
        worker = Worker(store, pipeline, notifier, base_url=BASE_URL, poll_seconds=0.05)
        yield Rig(store, forge, sandbox, worker, WorkerSink(store, worker), logs, pipeline)


async def wait_for_state(rig: Rig, build_id: int, state: BuildState) -> None:
    """Wait (bounded) until the build reaches `state`."""
    with anyio.fail_after(10):
        while True:
            record = await rig.store.get(build_id)
            assert record is not None
            if record.state is state:
                return
            await anyio.sleep(0.02)


async def wait_for_statuses(rig: Rig, count: int) -> None:
    """Wait (bounded) until the forge has received `count` statuses."""
    with anyio.fail_after(10):
        while len(rig.forge.statuses) < count:
            await anyio.sleep(0.02)


@pytest.mark.anyio
async def test_worker_branch_push_reports_queued_running_success(rig: Rig) -> None:
    """A branch build posts queued, running, then success, and publishes nothing."""
    async with anyio.create_task_group() as group:
        await group.start(rig.worker.run)
        submission = await rig.sink.submit(make_request())
        await wait_for_state(rig, submission.build_id, BuildState.SUCCEEDED)
        await wait_for_statuses(rig, 3)
        group.cancel_scope.cancel()
    assert [s[1] for s in rig.forge.statuses] == [
        CommitState.QUEUED,
        CommitState.RUNNING,
        CommitState.SUCCESS,
    ]
    assert rig.forge.releases == []
    artifacts = rig.pipeline.artifacts_dir(submission.build_id)
    assert sorted(p.name for p in artifacts.iterdir()) == ["b2sums", "sha256sums", "t-1-x86_64.iso"]
    log = rig.logs.path(submission.build_id).read_text()
    assert "[mkarchiso] INFO: building" in log
    assert rig.sandbox.discarded == [f"build-{submission.build_id}"]


@pytest.mark.anyio
async def test_worker_trusted_tag_publishes_release_with_sums(rig: Rig) -> None:
    """A trusted tag build publishes the ISO with both checksum files."""
    request = make_request(ref="refs/tags/v1.0", kind=RefKind.TAG)
    async with anyio.create_task_group() as group:
        await group.start(rig.worker.run)
        submission = await rig.sink.submit(request)
        await wait_for_state(rig, submission.build_id, BuildState.SUCCEEDED)
        group.cancel_scope.cancel()
    assert rig.forge.releases == [("v1.0", ["t-1-x86_64.iso", "sha256sums", "b2sums"])]
    record = await rig.store.get(submission.build_id)
    assert record is not None
    assert record.detail.endswith("release published")


@pytest.mark.anyio
async def test_worker_untrusted_tag_or_pr_never_publishes(rig: Rig) -> None:
    """Fork code is built but never published, even on a tag ref."""
    request = make_request(ref="refs/tags/v1.0", kind=RefKind.TAG, trusted=False)
    async with anyio.create_task_group() as group:
        await group.start(rig.worker.run)
        submission = await rig.sink.submit(request)
        await wait_for_state(rig, submission.build_id, BuildState.SUCCEEDED)
        group.cancel_scope.cancel()
    assert rig.forge.releases == []


@pytest.mark.anyio
async def test_worker_source_date_epoch_is_the_archives_commit_time(rig: Rig) -> None:
    """The archive's entry time (git archive's commit time) is SOURCE_DATE_EPOCH."""
    rig.forge.archive = profile_tarball(mtime=1_735_787_045)
    request = make_request()
    async with anyio.create_task_group() as group:
        await group.start(rig.worker.run)
        submission = await rig.sink.submit(request)
        await wait_for_state(rig, submission.build_id, BuildState.SUCCEEDED)
        group.cancel_scope.cancel()
    assert rig.sandbox.seen_epochs == [1_735_787_045]
    assert "SOURCE_DATE_EPOCH=1735787045" in rig.logs.path(submission.build_id).read_text()


@pytest.mark.anyio
async def test_worker_source_date_epoch_falls_back_to_webhook_time(rig: Rig) -> None:
    """Without entry times in the archive, the webhook's commit time is used."""
    request = make_request()
    async with anyio.create_task_group() as group:
        await group.start(rig.worker.run)
        submission = await rig.sink.submit(request)
        await wait_for_state(rig, submission.build_id, BuildState.SUCCEEDED)
        group.cancel_scope.cancel()
    assert rig.sandbox.seen_epochs == [int(request.commit_time.timestamp())]


@pytest.mark.anyio
async def test_worker_build_failure_reports_failure_with_reason(rig: Rig) -> None:
    """A failed mkarchiso ends the build failed, and the status carries the reason."""
    rig.sandbox.error = BuildFailed("mkarchiso exited with status 1", exit_code=1)
    async with anyio.create_task_group() as group:
        await group.start(rig.worker.run)
        submission = await rig.sink.submit(make_request())
        await wait_for_state(rig, submission.build_id, BuildState.FAILED)
        await wait_for_statuses(rig, 3)
        group.cancel_scope.cancel()
    assert rig.forge.statuses[-1][1] is CommitState.FAILURE
    assert "mkarchiso exited with status 1" in rig.forge.statuses[-1][2]


@pytest.mark.anyio
async def test_worker_build_failure_status_leads_with_the_logs_first_error(rig: Rig) -> None:
    """A failed build's status starts with the log's first error line, e.g. pacman's."""
    rig.sandbox.log_lines = [
        "error: target not found: no-such-package",
        "==> ERROR: Failed to install packages to new root",
    ]
    rig.sandbox.error = BuildFailed("the build command exited with status 1", exit_code=1)
    async with anyio.create_task_group() as group:
        await group.start(rig.worker.run)
        submission = await rig.sink.submit(make_request())
        await wait_for_state(rig, submission.build_id, BuildState.FAILED)
        await wait_for_statuses(rig, 3)
        group.cancel_scope.cancel()
    assert rig.forge.statuses[-1][2] == (
        "error: target not found: no-such-package; the build command exited with status 1"
    )


@pytest.mark.anyio
async def test_worker_survives_sandbox_clean_up_errors(rig: Rig) -> None:
    """A clean-up that fails is retried, then logged; the outcome stands, later builds run."""
    rig.sandbox.discard_errors = [
        FileNotFoundError("ovl-work"),  # retried: the second pass succeeds
        OSError("busy"),
        OSError("still busy"),  # failed twice: logged, the build keeps its outcome
    ]
    async with anyio.create_task_group() as group:
        await group.start(rig.worker.run)
        first = await rig.sink.submit(make_request())
        await wait_for_state(rig, first.build_id, BuildState.SUCCEEDED)
        second = await rig.sink.submit(make_request())
        await wait_for_state(rig, second.build_id, BuildState.SUCCEEDED)
        third = await rig.sink.submit(make_request())
        await wait_for_state(rig, third.build_id, BuildState.SUCCEEDED)
        group.cancel_scope.cancel()
    assert rig.sandbox.discard_errors == []
    assert len(rig.sandbox.discarded) == 5


@pytest.mark.anyio
async def test_worker_hostile_archive_fails_naming_entry(rig: Rig) -> None:
    """An archive with an escaping entry fails the build and names the entry."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("top/../../etc/evil")
        tar.addfile(info, io.BytesIO(b""))
    rig.forge.archive = buffer.getvalue()
    async with anyio.create_task_group() as group:
        await group.start(rig.worker.run)
        submission = await rig.sink.submit(make_request())
        await wait_for_state(rig, submission.build_id, BuildState.FAILED)
        group.cancel_scope.cancel()
    record = await rig.store.get(submission.build_id)
    assert record is not None
    assert "profile archive rejected" in record.detail
    assert "etc/evil" in record.detail


@pytest.mark.anyio
async def test_worker_newer_push_supersedes_running_build(rig: Rig) -> None:
    """A new push to the same branch cancels the running build and builds the new one."""
    rig.sandbox.blocking = True
    async with anyio.create_task_group() as group:
        await group.start(rig.worker.run)
        first = await rig.sink.submit(make_request())
        with anyio.fail_after(10):
            await rig.sandbox.started.wait()
        newer = make_request()
        second = await rig.sink.submit(newer)
        await wait_for_state(rig, first.build_id, BuildState.CANCELLED)
        rig.sandbox.blocking = False
        rig.sandbox.block.set()
        await wait_for_state(rig, second.build_id, BuildState.SUCCEEDED)
        group.cancel_scope.cancel()
    record = await rig.store.get(first.build_id)
    assert record is not None
    assert record.detail == f"superseded by {newer.commit_sha[:7]}"
    assert f"build-{first.build_id}" in rig.sandbox.discarded


@pytest.mark.anyio
async def test_worker_late_delivery_of_an_older_push_is_cancelled_not_built(rig: Rig) -> None:
    """The older push, delivered after the newer one, is cancelled; the newer one builds."""
    old_sha = f"{0xC3:040x}"
    rig.sandbox.blocking = True
    async with anyio.create_task_group() as group:
        await group.start(rig.worker.run)
        newer = await rig.sink.submit(make_request(previous_sha=old_sha))
        with anyio.fail_after(10):
            await rig.sandbox.started.wait()
        late = await rig.sink.submit(make_request(commit_sha=old_sha))
        await wait_for_state(rig, late.build_id, BuildState.CANCELLED)
        rig.sandbox.blocking = False
        rig.sandbox.block.set()
        await wait_for_state(rig, newer.build_id, BuildState.SUCCEEDED)
        with anyio.fail_after(10):  # the forge hears why the late push did not build
            while not any(
                s[0] == old_sha and s[1] is CommitState.CANCELLED for s in rig.forge.statuses
            ):
                await anyio.sleep(0.05)
        group.cancel_scope.cancel()
    assert len(rig.sandbox.seen_epochs) == 1  # only the newer push was built
    (cancelled,) = [s for s in rig.forge.statuses if s[1] is CommitState.CANCELLED]
    assert cancelled[2].endswith("pushed after it (delivered late)")


@pytest.mark.anyio
async def test_worker_statuses_survive_a_forge_outage(rig: Rig) -> None:
    """Statuses the forge refuses with 5xx are retried later, in order, none lost."""
    rig.forge.status_failures = 2
    async with anyio.create_task_group() as group:
        await group.start(rig.worker.run)
        submission = await rig.sink.submit(make_request())
        await wait_for_state(rig, submission.build_id, BuildState.SUCCEEDED)
        # Retries wait (2 s, then 4 s) before they are due again.
        with anyio.fail_after(15):
            while len(rig.forge.statuses) < 3:
                await anyio.sleep(0.1)
        group.cancel_scope.cancel()
    assert [s[1] for s in rig.forge.statuses] == [
        CommitState.QUEUED,
        CommitState.RUNNING,
        CommitState.SUCCESS,
    ]


@pytest.mark.anyio
async def test_worker_warning_updates_the_status_description(rig: Rig) -> None:
    """The sandbox's long-build warning posts a running status with a note."""
    rig.sandbox.warn = True
    async with anyio.create_task_group() as group:
        await group.start(rig.worker.run)
        submission = await rig.sink.submit(make_request())
        await wait_for_state(rig, submission.build_id, BuildState.SUCCEEDED)
        await wait_for_statuses(rig, 4)
        group.cancel_scope.cancel()
    assert rig.forge.statuses[2][1] is CommitState.RUNNING
    assert rig.forge.statuses[2][2].startswith("Still building after 15 min")


@pytest.mark.anyio
async def test_worker_recovers_builds_left_running(tmp_path: Path, rig: Rig) -> None:
    """A build left running by a dead process is re-run at start-up and reported."""
    submission = await rig.store.submit(make_request())
    claimed = await rig.store.claim_next()
    assert claimed is not None
    assert claimed.id == submission.build_id
    async with anyio.create_task_group() as group:
        await group.start(rig.worker.run)
        await wait_for_state(rig, submission.build_id, BuildState.SUCCEEDED)
        await wait_for_statuses(rig, 5)
        group.cancel_scope.cancel()
    # Queued and running from the process that died, then the recovery and the re-run.
    _, _, queued, running, success = rig.forge.statuses
    assert (queued[1], queued[2]) == (
        CommitState.QUEUED,
        "re-queued: the service stopped while this build was running",
    )
    # The re-queue note stays on the build, but the running status says what happens now.
    assert (running[1], running[2]) == (CommitState.RUNNING, "Building the ISO")
    assert success[1] is CommitState.SUCCESS


@pytest.mark.anyio
async def test_worker_cancel_stops_a_running_build(rig: Rig) -> None:
    """Cancelling a running build ends it cancelled and cleans its sandbox up."""
    rig.sandbox.blocking = True
    async with anyio.create_task_group() as group:
        await group.start(rig.worker.run)
        submission = await rig.sink.submit(make_request())
        with anyio.fail_after(10):
            await rig.sandbox.started.wait()
        await rig.worker.cancel(submission.build_id, "cancelled by admin")
        await wait_for_state(rig, submission.build_id, BuildState.CANCELLED)
        with anyio.fail_after(10):
            while rig.worker.running:
                await anyio.sleep(0.02)
        group.cancel_scope.cancel()
    assert rig.sandbox.discarded == [f"build-{submission.build_id}"]


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


class FlakyFinishStore(SQLiteStore):
    """A real store whose next `finish` calls fail, as a full disk would make them."""

    failures = 0

    async def finish(self, *args: Any, **kwargs: Any) -> BuildRecord:
        if self.failures:
            self.failures -= 1
            raise StoreError("the job database refused a write (disk full)")
        return await super().finish(*args, **kwargs)


@pytest.mark.anyio
async def test_worker_slot_survives_a_store_failure_and_ends_the_build(tmp_path: Path) -> None:
    """A store error while finishing one build ends it errored and later builds still run."""
    async with FlakyFinishStore(tmp_path / "db.sqlite", notify=status_notifier(BASE_URL)) as store:
        store.failures = 1
        forge = FakeForge(profile_tarball())
        pipeline = Pipeline(
            PipelineConfig(work_root=tmp_path / "work", artifacts_root=tmp_path / "artifacts"),
            clients={Forge.GITHUB: forge},
            sandbox=FakeSandbox(tmp_path / "sandbox"),
            logs=BuildLogs(tmp_path / "logs"),
        )
        notifier = Notifier(store, {Forge.GITHUB: forge}, poll_seconds=0.05)
        worker = Worker(store, pipeline, notifier, base_url=BASE_URL, poll_seconds=0.05)
        sink = WorkerSink(store, worker)
        async with anyio.create_task_group() as group:
            await group.start(worker.run)
            first = await sink.submit(make_request())
            second = await sink.submit(make_request(ref="refs/heads/other"))
            with anyio.fail_after(10):
                while True:
                    states = [await store.get(b) for b in (first.build_id, second.build_id)]
                    if all(r is not None and r.state.is_final for r in states):
                        break
                    await anyio.sleep(0.02)
            group.cancel_scope.cancel()
        crashed = await store.get(first.build_id)
        later = await store.get(second.build_id)
    assert crashed is not None
    assert crashed.state is BuildState.ERRORED
    assert crashed.detail == "internal error in isorunner; see the service log"
    assert later is not None
    assert later.state is BuildState.SUCCEEDED

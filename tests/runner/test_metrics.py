"""Tests for runner.metrics and what the worker, notifier, pipeline and transport record.

Values are read back from a fresh `CollectorRegistry` with `get_sample_value`; the
worker runs over a real SQLite store with the fake forge and sandbox of test_worker.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx
import pytest
from prometheus_client import CollectorRegistry

from runner.buildlogs import BuildLogs
from runner.exceptions import StoreError
from runner.forges.client import ForgeTransport
from runner.forges.request import ForgeRequest
from runner.metrics import Metrics, limit_kind
from runner.notifications import Notifier, status_notifier
from runner.pipeline import Pipeline, PipelineConfig
from runner.store import SQLiteStore
from runner.worker import Worker, WorkerSink
from sandbox.exceptions import (
    BuildFailed,
    Cancelled,
    DiskLimit,
    OutOfMemory,
    ProcessLimit,
    TimedOut,
)
from tests.runner.fakes import BASE_URL, FakeForge, FakeSandbox, profile_tarball
from tests.runner.store.samples import make_request
from webhooks.build import BuildState, Forge, ReleaseState

HOSTS = {"api.github.com": "github", "gitlab.example.com": "gitlab"}


@pytest.fixture
def registry() -> CollectorRegistry:
    """A fresh registry per test (never the global default one)."""
    return CollectorRegistry()


@pytest.fixture
def metrics(registry: CollectorRegistry) -> Metrics:
    """The runner's metrics on the test's registry."""
    return Metrics(registry, forge_hosts=HOSTS)


def test_metrics_build_counts_set_every_state_and_queue_depth(
    metrics: Metrics, registry: CollectorRegistry
) -> None:
    """A store snapshot sets one gauge per state (absent states at 0) and the queue depth."""
    metrics.set_build_counts({BuildState.QUEUED: 3, BuildState.SUCCEEDED: 7})
    assert registry.get_sample_value("isorunner_builds", {"state": "queued"}) == 3
    assert registry.get_sample_value("isorunner_builds", {"state": "succeeded"}) == 7
    assert registry.get_sample_value("isorunner_builds", {"state": "cancelled"}) == 0
    assert registry.get_sample_value("isorunner_queue_depth") == 3


def test_metrics_kill_kinds_are_exported_at_zero(registry: CollectorRegistry) -> None:
    """Every limit kind is exported before the first kill, so rate() sees the first one."""
    Metrics(registry)
    for kind in ("memory", "pids", "timeout", "disk"):
        assert registry.get_sample_value("isorunner_sandbox_limit_kills_total", {"kind": kind}) == 0


def test_metrics_count_package_cache_hits_misses_and_bytes(registry: CollectorRegistry) -> None:
    """Each sync adds its cached files as hits, its downloads as misses, and its bytes."""
    metrics = Metrics(registry)
    assert registry.get_sample_value("isorunner_package_files_total", {"result": "hit"}) == 0
    metrics.packages_synced(cached=5, downloaded=2, downloaded_bytes=3000)
    metrics.packages_synced(cached=7, downloaded=0, downloaded_bytes=0)
    assert registry.get_sample_value("isorunner_package_files_total", {"result": "hit"}) == 12
    assert registry.get_sample_value("isorunner_package_files_total", {"result": "miss"}) == 2
    assert registry.get_sample_value("isorunner_package_download_bytes_total") == 3000


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (OutOfMemory("out of memory (limit 8G)"), "memory"),
        (ProcessLimit("pids limit"), "pids"),
        (TimedOut("timed out"), "timeout"),
        (DiskLimit("output too large"), "disk"),
        (BuildFailed("exit 1"), None),
        (Cancelled("cancelled"), None),
        (ValueError("x"), None),
    ],
)
def test_limit_kind_names_the_limit_that_ended_a_build(
    exc: BaseException, kind: str | None
) -> None:
    """Only the four limit errors count as limit kills, each under its own kind."""
    assert limit_kind(exc) == kind


def test_metrics_forge_response_labels_forge_method_and_status(
    metrics: Metrics, registry: CollectorRegistry
) -> None:
    """Known hosts count under their forge, others under `other`, no answer as `none`."""
    metrics.forge_response("post", "API.github.com", 201)
    metrics.forge_response("GET", "gitlab.example.com", None)
    metrics.forge_response("GET", "evil.example.net", 200)
    sample = "isorunner_forge_requests_total"
    labels = {"forge": "github", "method": "POST", "status": "201"}
    assert registry.get_sample_value(sample, labels) == 1
    labels = {"forge": "gitlab", "method": "GET", "status": "none"}
    assert registry.get_sample_value(sample, labels) == 1
    labels = {"forge": "other", "method": "GET", "status": "200"}
    assert registry.get_sample_value(sample, labels) == 1


# ---------------------------------------------------------------- forge transport hook


@pytest.mark.anyio
async def test_transport_reports_each_exchange_including_redirects() -> None:
    """The observer hears every hop of a redirected GET and the final status."""
    seen: list[tuple[str, str, int | None]] = []

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.host == "api.github.com":
            return httpx.Response(302, headers={"Location": "https://codeload.github.com/x"})
        return httpx.Response(200, content=b"ok")

    async with httpx.AsyncClient(transport=httpx.MockTransport(handle)) as http:
        transport = ForgeTransport(http, on_response=lambda m, h, s: seen.append((m, h, s)))
        response = await transport.send(ForgeRequest("GET", "https://api.github.com/repos/o/r"))
    assert response.status == 200
    assert seen == [("GET", "api.github.com", 302), ("GET", "codeload.github.com", 200)]


@pytest.mark.anyio
async def test_transport_reports_unreachable_forge_as_no_status() -> None:
    """A connection failure is reported with status None before the error propagates."""
    seen: list[tuple[str, str, int | None]] = []

    def handle(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    async def no_sleep(seconds: float) -> None:
        return None

    async with httpx.AsyncClient(transport=httpx.MockTransport(handle)) as http:
        transport = ForgeTransport(
            http,
            on_response=lambda m, h, s: seen.append((m, h, s)),
            sleep=no_sleep,
            max_retry_seconds=0,
        )
        with pytest.raises(Exception, match="could not"):
            await transport.send(ForgeRequest("GET", "https://gitlab.example.com/api/v4/x"))
    assert seen == [("GET", "gitlab.example.com", None)]


@pytest.mark.anyio
async def test_transport_survives_a_failing_observer() -> None:
    """An observer that raises changes nothing about the call's result."""

    def observer(method: str, host: str, status: int | None) -> None:
        raise RuntimeError("metrics broke")

    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(204)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handle)) as http:
        transport = ForgeTransport(http, on_response=observer)
        response = await transport.send(ForgeRequest("DELETE", "https://api.github.com/x"))
    assert response.status == 204


# ---------------------------------------------------------------- the store watcher


class BrokenStore:
    """A store whose counts fail once, then succeed."""

    def __init__(self) -> None:
        self.calls = 0

    async def count_by_state(self) -> dict[BuildState, int]:
        self.calls += 1
        if self.calls == 1:
            raise StoreError("database is locked")
        return {state: 1 for state in BuildState}

    async def count_releases_by_state(self) -> dict[ReleaseState, int]:
        return {state: 2 for state in ReleaseState}


@pytest.mark.anyio
async def test_watch_store_keeps_going_after_a_store_error(
    metrics: Metrics, registry: CollectorRegistry
) -> None:
    """A failed snapshot is logged and the next refresh (here: a change) fills the gauges."""
    store = BrokenStore()
    async with anyio.create_task_group() as group:
        group.start_soon(lambda: metrics.watch_store(store, interval=60))
        with anyio.fail_after(5):
            while store.calls < 1:
                await anyio.sleep(0.01)
            metrics.builds_changed()
            while registry.get_sample_value("isorunner_queue_depth") != 1:
                await anyio.sleep(0.01)
        group.cancel_scope.cancel()
    assert registry.get_sample_value("isorunner_builds", {"state": "running"}) == 1
    assert registry.get_sample_value("isorunner_releases", {"state": "retrying"}) == 2


# ---------------------------------------------------------------- worker, pipeline, notifier


@pytest.fixture
async def parts(
    tmp_path: Path, metrics: Metrics
) -> AsyncIterator[tuple[SQLiteStore, FakeSandbox, FakeForge, Worker, WorkerSink]]:
    """A worker over a real store, fake forge and sandbox, recording on `metrics`."""
    async with SQLiteStore(tmp_path / "db.sqlite", notify=status_notifier(BASE_URL)) as store:
        forge = FakeForge(profile_tarball())
        sandbox = FakeSandbox(tmp_path / "sandbox")
        pipeline = Pipeline(
            PipelineConfig(work_root=tmp_path / "work", artifacts_root=tmp_path / "artifacts"),
            clients={Forge.GITHUB: forge},
            sandbox=sandbox,
            logs=BuildLogs(tmp_path / "logs"),
            metrics=metrics,
        )
        notifier = Notifier(store, {Forge.GITHUB: forge}, poll_seconds=0.05, metrics=metrics)
        worker = Worker(
            store,
            pipeline,
            notifier,
            base_url=BASE_URL,
            poll_seconds=0.05,
            metrics=metrics,
        )
        yield store, sandbox, forge, worker, WorkerSink(store, worker)


async def run_until(
    registry: CollectorRegistry,
    worker: Worker,
    sink: WorkerSink,
    sample: tuple[str, dict[str, str], float],
) -> None:
    """Run the worker, submit one build, and wait until `(name, labels, value)` holds."""
    async with anyio.create_task_group() as group:
        await group.start(worker.run)
        await sink.submit(make_request())
        with anyio.fail_after(10):
            while registry.get_sample_value(sample[0], sample[1]) != sample[2]:
                await anyio.sleep(0.02)
        group.cancel_scope.cancel()


@pytest.mark.anyio
async def test_worker_records_duration_counts_and_deliveries(
    parts: tuple[SQLiteStore, FakeSandbox, FakeForge, Worker, WorkerSink],
    registry: CollectorRegistry,
) -> None:
    """A successful build is timed under `succeeded`, counted, and its 3 statuses delivered."""
    _, _, forge, worker, sink = parts
    delivered = {"forge": "github", "result": "delivered"}
    await run_until(registry, worker, sink, ("isorunner_status_notifications_total", delivered, 3))
    assert len(forge.statuses) == 3
    count = registry.get_sample_value(
        "isorunner_build_duration_seconds_count", {"outcome": "succeeded"}
    )
    assert count == 1
    with anyio.fail_after(5):
        while registry.get_sample_value("isorunner_builds", {"state": "succeeded"}) != 1:
            await anyio.sleep(0.02)
    assert registry.get_sample_value("isorunner_queue_depth") == 0


@pytest.mark.anyio
async def test_worker_counts_limit_kills_and_failed_deliveries(
    parts: tuple[SQLiteStore, FakeSandbox, FakeForge, Worker, WorkerSink],
    registry: CollectorRegistry,
) -> None:
    """An out-of-memory build counts one memory kill; a refused status counts as failed."""
    _, sandbox, forge, worker, sink = parts
    sandbox.error = OutOfMemory("out of memory (limit 8G)")
    forge.status_failures = 1
    failed = {"outcome": "failed"}
    await run_until(registry, worker, sink, ("isorunner_build_duration_seconds_count", failed, 1))
    kills = registry.get_sample_value("isorunner_sandbox_limit_kills_total", {"kind": "memory"})
    assert kills == 1
    failures = {"forge": "github", "result": "failed"}
    assert registry.get_sample_value("isorunner_status_notifications_total", failures) == 1


@pytest.mark.anyio
async def test_queue_depth_follows_a_submission_at_once(
    parts: tuple[SQLiteStore, FakeSandbox, FakeForge, Worker, WorkerSink],
    registry: CollectorRegistry,
) -> None:
    """A build queued through the sink shows in the queue depth without waiting a period."""
    _, sandbox, _, worker, sink = parts
    sandbox.blocking = True
    async with anyio.create_task_group() as group:
        await group.start(worker.run)
        await sink.submit(make_request())
        await sink.submit(make_request(ref="refs/heads/other"))
        with anyio.fail_after(3):  # well below the 10 s refresh period
            while (
                registry.get_sample_value("isorunner_queue_depth"),
                registry.get_sample_value("isorunner_builds", {"state": "running"}),
            ) != (1, 1):
                await anyio.sleep(0.01)
        group.cancel_scope.cancel()

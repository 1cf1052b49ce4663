"""The runner's Prometheus metrics, on a `CollectorRegistry` the composition root owns.

Mostly pure: `Metrics` only updates in-memory instruments; `refresh_builds` and
`watch_store` read the job store (async) to keep the by-state gauges current, because
Prometheus collectors are synchronous and must not touch the database while the
`/metrics` page renders. The web app renders the same registry (and counts webhook
deliveries itself); nothing here uses prometheus-client's global default registry.

Metric names (all prefixed `isorunner_`):

| name | type | labels |
|---|---|---|
| `isorunner_builds` | gauge | `state` (queued, running, succeeded, …) |
| `isorunner_queue_depth` | gauge | — |
| `isorunner_build_duration_seconds` | histogram | `outcome` (final state) |
| `isorunner_forge_requests_total` | counter | `forge`, `method`, `status` |
| `isorunner_sandbox_limit_kills_total` | counter | `kind` (memory, pids, timeout, disk) |
| `isorunner_status_notifications_total` | counter | `forge`, `result` (delivered, …) |
| `isorunner_package_files_total` | counter | `result` (hit: in the cache, miss: downloaded) |
| `isorunner_package_download_bytes_total` | counter | — |
| `isorunner_releases` | gauge | `state` (queued, publishing, retrying, published, refused) |
| `isorunner_release_attempts_total` | counter | `forge`, `result` (published, retrying, refused) |
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, Protocol

import anyio
import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from sandbox import DiskLimit, OutOfMemory, ProcessLimit, TimedOut
from webhooks.build import BuildState, ReleaseState

_log = structlog.get_logger()

#: Build durations range from a minute (a failed fetch) to the 20-minute default limit
#: and beyond for big images.
DURATION_BUCKETS: Final = (10, 30, 60, 120, 300, 600, 900, 1200, 1800, 3600, 7200)

#: Which sandbox error is which limit (the `kind` label of the kill counter).
_LIMIT_KINDS: Final[tuple[tuple[type[BaseException], str], ...]] = (
    (OutOfMemory, "memory"),
    (ProcessLimit, "pids"),
    (TimedOut, "timeout"),
    (DiskLimit, "disk"),
)

#: The `forge` label for a host no forge was configured for (keeps cardinality bounded).
OTHER_HOST: Final = "other"


class BuildCounter(Protocol):
    """What the metrics need of the job store."""

    async def count_by_state(self) -> dict[BuildState, int]:
        """Return how many builds are in each state, every state present."""
        ...

    async def count_releases_by_state(self) -> dict[ReleaseState, int]:
        """Return how many release records are in each state, every state present."""
        ...


def limit_kind(exc: BaseException) -> str | None:
    """The resource limit that ended a build (`memory`, `pids`, `timeout`, `disk`), or None."""
    for error, kind in _LIMIT_KINDS:
        if isinstance(exc, error):
            return kind
    return None


class Metrics:
    """The runner-side instruments, registered on `registry`.

    Args:
        registry: Where the instruments are registered; the web app renders it.
        forge_hosts: Maps an API host (`api.github.com`, `gitlab.example.com`) to
            its forge's name for the `forge` label; other hosts count as `other`.
    """

    def __init__(
        self, registry: CollectorRegistry, *, forge_hosts: Mapping[str, str] | None = None
    ) -> None:
        self.registry = registry
        self._changed: anyio.Event | None = None
        self._forge_hosts = {host.lower(): forge for host, forge in (forge_hosts or {}).items()}
        self.builds = Gauge(
            "isorunner_builds",
            "Builds in the job store, by state.",
            ["state"],
            registry=registry,
        )
        self.queue_depth = Gauge(
            "isorunner_queue_depth", "Builds waiting for a worker slot.", registry=registry
        )
        self.build_duration = Histogram(
            "isorunner_build_duration_seconds",
            "Time from claim to final state of builds run by this process, by outcome.",
            ["outcome"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.forge_requests = Counter(
            "isorunner_forge_requests",
            "Forge API responses by forge, method and HTTP status (status none: no answer).",
            ["forge", "method", "status"],
            registry=registry,
        )
        self.sandbox_kills = Counter(
            "isorunner_sandbox_limit_kills",
            "Builds stopped by a sandbox limit, by kind (memory, pids, timeout, disk).",
            ["kind"],
            registry=registry,
        )
        self.notifications = Counter(
            "isorunner_status_notifications",
            "Commit status deliveries by forge and result (delivered, failed, dropped).",
            ["forge", "result"],
            registry=registry,
        )
        self.package_files = Counter(
            "isorunner_package_files",
            "Package files builds needed, by result: hit (in the cache) or miss (downloaded).",
            ["result"],
            registry=registry,
        )
        self.package_download_bytes = Counter(
            "isorunner_package_download_bytes",
            "Bytes downloaded by package sync (packages and repository databases).",
            registry=registry,
        )
        for result in ("hit", "miss"):
            self.package_files.labels(result=result)
        self.releases = Gauge(
            "isorunner_releases",
            "Releases of tag builds in the job store, by publishing state.",
            ["state"],
            registry=registry,
        )
        self.release_attempts = Counter(
            "isorunner_release_attempts",
            "Release publishing attempts by forge and result (published, retrying, refused).",
            ["forge", "result"],
            registry=registry,
        )
        for state in BuildState:
            self.builds.labels(state=state.value)
        for release_state in ReleaseState:
            self.releases.labels(state=release_state.value)
        for _, kind in _LIMIT_KINDS:
            self.sandbox_kills.labels(kind=kind)

    def set_build_counts(self, counts: Mapping[BuildState, int]) -> None:
        """Set the by-state gauges and the queue depth from a store snapshot."""
        for state in BuildState:
            self.builds.labels(state=state.value).set(counts.get(state, 0))
        self.queue_depth.set(counts.get(BuildState.QUEUED, 0))

    def set_release_counts(self, counts: Mapping[ReleaseState, int]) -> None:
        """Set the release by-state gauges from a store snapshot."""
        for state in ReleaseState:
            self.releases.labels(state=state.value).set(counts.get(state, 0))

    async def refresh_builds(self, store: BuildCounter) -> None:
        """Take a fresh snapshot of the store's build and release counts."""
        self.set_build_counts(await store.count_by_state())
        self.set_release_counts(await store.count_releases_by_state())

    def builds_changed(self) -> None:
        """Ask `watch_store` to take a snapshot now (a build changed state)."""
        if self._changed is not None:
            self._changed.set()

    async def watch_store(self, store: BuildCounter, *, interval: float = 10.0) -> None:
        """Refresh the build counts on `builds_changed` and every `interval` seconds.

        Runs until cancelled. A store error is logged and the last snapshot kept:
        metrics must never stop the worker.
        """
        while True:
            changed = self._changed = anyio.Event()
            try:
                await self.refresh_builds(store)
            except Exception as exc:  # noqa: BLE001 - keep serving the last snapshot
                _log.warning("build_metrics_not_refreshed", error=str(exc))
            with anyio.move_on_after(interval):
                await changed.wait()

    def build_finished(self, outcome: str, seconds: float) -> None:
        """Record how long a build took and how it ended (its final state)."""
        self.build_duration.labels(outcome=outcome).observe(max(0.0, seconds))

    def forge_response(self, method: str, host: str, status: int | None) -> None:
        """Count one forge HTTP exchange; the `ForgeTransport.on_response` hook."""
        forge = self._forge_hosts.get(host.lower(), OTHER_HOST)
        label = "none" if status is None else str(status)
        self.forge_requests.labels(forge=forge, method=method.upper(), status=label).inc()

    def sandbox_error(self, exc: BaseException) -> None:
        """Count a build ended by a sandbox limit; other errors are ignored."""
        kind = limit_kind(exc)
        if kind is not None:
            self.sandbox_kills.labels(kind=kind).inc()

    def packages_synced(self, *, cached: int, downloaded: int, downloaded_bytes: int) -> None:
        """Count one build's package sync: cache hits, misses and bytes downloaded."""
        self.package_files.labels(result="hit").inc(cached)
        self.package_files.labels(result="miss").inc(downloaded)
        self.package_download_bytes.inc(downloaded_bytes)

    def notification(self, forge: str, result: str) -> None:
        """Count a status delivery attempt: `delivered`, `failed` or `dropped`."""
        self.notifications.labels(forge=forge, result=result).inc()

    def release_attempt(self, forge: str, result: str) -> None:
        """Count a release attempt: `published`, `retrying` or `refused`; refresh the gauges."""
        self.release_attempts.labels(forge=forge, result=result).inc()
        self.builds_changed()


__all__ = ["DURATION_BUCKETS", "BuildCounter", "Metrics", "limit_kind"]

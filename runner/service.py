"""`isorunner serve`: runs the service until SIGINT/SIGTERM.

I/O shell. Takes the components `runner.wiring` builds, adds retention and the web app
(with the `runner.web` adapters), and serves them with uvicorn. Imported only by
`runner.__main__`.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import AsyncIterator

import anyio
import structlog
import uvicorn
from prometheus_client import CollectorRegistry

from runner.logs import configure_logging
from runner.metrics import Metrics
from runner.retention import Retention
from runner.settings import Settings
from runner.web import ArtifactDirs, RunnerReadiness, WorkerControl
from runner.wiring import forge_hosts, running_service, secrets_of, webhook_config
from runner.worker import WorkerSink
from webhooks.app import create_app

_log = structlog.get_logger()


def freeze_startup_objects() -> None:
    """Take everything allocated so far out of the garbage collector's rounds.

    Modules, models, templates and the app live as long as the process; left in the
    collector's oldest generation, every full collection walks them all, and under
    load that pause (12-28 ms measured) lands on every delivery in flight. Called
    once, just before serving (see `gc.freeze`).
    """
    gc.collect()
    gc.freeze()


async def serve(settings: Settings) -> None:
    """Serve webhooks and pages and run the worker until SIGINT/SIGTERM."""
    configure_logging(log_format=settings.server.log_format, secrets=secrets_of(settings))
    # One registry for the process, rendered by the web app's GET /metrics; the
    # runner's instruments and the web app's delivery counter both live on it.
    registry = CollectorRegistry()
    metrics = Metrics(registry, forge_hosts=forge_hosts(settings))
    async with running_service(settings, metrics=metrics) as service:
        store, worker = service.store, service.worker
        for forge in {repo.forge for repo in settings.repos} - set(service.clients):
            _log.warning(
                "forge_token_missing",
                forge=forge.value,
                effect="builds run, but their statuses wait until a token is configured",
            )

        retention = Retention(
            store,
            service.logs,
            settings.sandbox.iso_output_root,
            retention_days=settings.storage.retention_days,
        )

        @contextlib.asynccontextmanager
        async def run_worker() -> AsyncIterator[None]:
            async with anyio.create_task_group() as group:
                await group.start(worker.run)
                group.start_soon(retention.run)
                yield
                group.cancel_scope.cancel()

        app = create_app(
            webhook_config(settings),
            sink=WorkerSink(store, worker),
            catalog=store,
            logs=service.logs,
            lifespan_hooks=[run_worker],
            browser=store,
            control=WorkerControl(store, worker),
            artifacts=ArtifactDirs(settings.sandbox.iso_output_root),
            boot_tests=store,
            readiness=RunnerReadiness(settings, store),
            admin_token=settings.server.admin_token,
            registry=registry,
            signing_key=service.signing_key,
        )
        config = uvicorn.Config(
            app,
            host=settings.server.host,
            port=settings.server.port,
            log_config=None,
            proxy_headers=False,
            server_header=False,
            # Live log streams stay open; do not let them hold a restart for long.
            timeout_graceful_shutdown=5,
        )
        freeze_startup_objects()
        await uvicorn.Server(config).serve()

"""`isorunner serve`: runs the service until SIGINT/SIGTERM.

I/O shell. Takes the components `runner.wiring` builds, adds retention and the web app
(with the `runner.web` adapters), and serves them with uvicorn. Imported only by
`runner.__main__`.
"""

from __future__ import annotations

import contextlib
import gc
import signal
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Final

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
_STOP_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM)


def freeze_startup_objects() -> None:
    """Take everything allocated so far out of the garbage collector's rounds.

    Modules, models, templates and the app live as long as the process; left in the
    collector's oldest generation, every full collection walks them all, and under
    load that pause (12-28 ms measured) lands on every delivery in flight. Called
    once, just before serving (see `gc.freeze`).
    """
    gc.collect()
    gc.freeze()


@contextlib.contextmanager
def stop_signals_return(server: uvicorn.Server) -> Iterator[None]:
    """Make SIGINT and SIGTERM stop `server` and then let `serve` return normally.

    Once it has shut down, uvicorn raises the stop signal again with the handler that
    was there before it (`Server.capture_signals`). With the default handler that
    killed the process on the spot, before `running_service` closed the job store (its
    `-wal` and `-shm` files were left after every stop) and the HTTP client. With
    `server.handle_exit` installed first, the repeated signal only asks the stopped
    server to stop, and the clean-up runs. Off the main thread, signals cannot be
    handled at all and nothing changes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, server.handle_exit) for sig in _STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


async def serve(settings: Settings) -> None:
    """Serve webhooks and pages and run the worker until SIGINT/SIGTERM, then close all."""
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
        server = uvicorn.Server(config)
        freeze_startup_objects()
        with stop_signals_return(server):
            await server.serve()

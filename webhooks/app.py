"""The app factory: one Starlette app per configuration, its lifespan, its state.

No I/O of its own: `create_app` wires the routes, the exception handlers and a
lifespan that enters the caller's long-lived resources (the runner passes its worker)
and yields the typed `AppState` that handlers read. The runner builds the sink and
catalog (its job store) and passes them in; this package never imports `runner`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry
from pydantic import SecretStr
from starlette.applications import Starlette

from webhooks.body import BodyBudget
from webhooks.build import (
    ArtifactSource,
    BootTestSource,
    BuildBrowser,
    BuildCatalog,
    BuildControl,
    BuildLogSource,
    BuildSink,
    ReadinessProbe,
    SigningKey,
)
from webhooks.config import WebhookConfig
from webhooks.live import LogFollowers
from webhooks.metrics import DeliveryMetrics
from webhooks.pages import Pages
from webhooks.routes import EXCEPTION_HANDLERS, ROUTES
from webhooks.state import AppState

LifespanHook = Callable[[], contextlib.AbstractAsyncContextManager[object]]
"""A resource the app's lifespan enters at start-up and exits at shut-down."""


def utc_now() -> datetime:
    """Return the current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


def create_app(
    config: WebhookConfig,
    *,
    sink: BuildSink,
    catalog: BuildCatalog,
    logs: BuildLogSource | None = None,
    lifespan_hooks: Sequence[LifespanHook] = (),
    clock: Callable[[], datetime] = utc_now,
    browser: BuildBrowser | None = None,
    control: BuildControl | None = None,
    artifacts: ArtifactSource | None = None,
    boot_tests: BootTestSource | None = None,
    readiness: ReadinessProbe | None = None,
    admin_token: SecretStr | None = None,
    registry: CollectorRegistry | None = None,
    followers: Callable[[BuildCatalog, BuildLogSource | None], LogFollowers] = LogFollowers,
    signing_key: SigningKey | None = None,
) -> Starlette:
    """Build the intake app.

    Args:
        config: Secrets, repository rules and limits.
        sink: Stores accepted build requests durably (the job store).
        catalog: Reads stored builds (the job store).
        logs: Finds build log files (the runner's log store); None serves empty logs.
        lifespan_hooks: Entered in order when the app starts, exited in reverse
            order when it stops (after uvicorn has drained in-flight requests).
        clock: The current time, timezone-aware: the replay window's clock and the
            fallback commit time. Tests pass a fixed one.
        browser: Lists builds for `GET /` and `GET /api/builds` (the job store); None
            lists none.
        control: Cancels and retries builds for the admin API (the worker); None
            makes those calls answer 403.
        artifacts: Finds finished builds' files; None shows none.
        boot_tests: Reads builds' boot test results (the job store); None shows none.
        readiness: The checks of `GET /readyz`; None means ready.
        admin_token: The bearer token of the admin API; None turns it off (403).
        registry: Where the app registers its metrics and what `GET /metrics`
            renders; shared with the runner. None gives the app a private one.
        followers: Builds the live-log hub from the catalog and logs (tests pass
            one with shorter intervals).
        signing_key: The public key release files are signed with: served at
            `/signing-key.pub` and shown on the pages; None when nothing is signed.

    Returns:
        The ASGI app. Run it with its lifespan (uvicorn does; `TestClient` does when
        used as a context manager), since handlers read the lifespan's state.
    """
    metrics_registry = registry if registry is not None else CollectorRegistry()
    # Registered once per app, not per start-up: a registry refuses a second copy.
    deliveries = DeliveryMetrics(metrics_registry)
    bodies = BodyBudget(config.max_bodies_in_flight_bytes)
    pages = Pages()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[AppState]:
        hub = followers(catalog, logs)
        async with contextlib.AsyncExitStack() as stack:
            for hook in lifespan_hooks:
                await stack.enter_async_context(hook())
            await stack.enter_async_context(hub.running())
            yield AppState(
                config=config,
                sink=sink,
                catalog=catalog,
                logs=logs,
                clock=clock,
                browser=browser,
                control=control,
                artifacts=artifacts,
                boot_tests=boot_tests,
                readiness=readiness,
                admin_token=admin_token,
                registry=metrics_registry,
                deliveries=deliveries,
                pages=pages,
                followers=hub,
                signing_key=signing_key,
                bodies=bodies,
            )

    return Starlette(
        routes=list(ROUTES),
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )

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

from starlette.applications import Starlette

from webhooks.build import BuildCatalog, BuildLogSource, BuildSink
from webhooks.config import WebhookConfig
from webhooks.routes import EXCEPTION_HANDLERS, ROUTES, AppState

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

    Returns:
        The ASGI app. Run it with its lifespan (uvicorn does; `TestClient` does when
        used as a context manager), since handlers read the lifespan's state.
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[AppState]:
        async with contextlib.AsyncExitStack() as stack:
            for hook in lifespan_hooks:
                await stack.enter_async_context(hook())
            yield AppState(config=config, sink=sink, catalog=catalog, logs=logs, clock=clock)

    return Starlette(
        routes=list(ROUTES),
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )

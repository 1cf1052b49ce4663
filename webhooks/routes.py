"""HTTP endpoints of the intake app, and the one place errors become responses.

I/O shell: the only module that touches Starlette's `Request`. It reads the body
under the size cap, hands headers and raw bytes to the pure `github`/`gitlab`
modules, stores what they return through the `BuildSink`, and answers. Everything
long-lived (configuration, sink, catalog, clock) comes from the typed lifespan state.

Routes:

- `POST /webhooks/github`, `POST /webhooks/gitlab`: 202 `{"build_id", "url"}` once
  the sink has stored the request; 200 with `"duplicate": true` for a request the
  sink already had; 200 `{"ignored": reason}` for deliveries deliberately not built;
  `WebhookError` statuses for refusals (401, 400, 404, 413, 415) and 503 when the
  store fails.
- `GET /api/builds/{id}`: the stored build as JSON with its signature and rebuild check
  (`trust`), 404 when unknown.
- `GET /builds/{id}/log`: the build log as text/plain, streamed from its file (empty
  while the build has not written any), 404 when the build is unknown.
- `GET /`, `GET /builds/{id}`: the build list and a build's page (HTML, `webhooks.pages`).
- `GET /builds/{id}/log/stream`: the log as server-sent events (`webhooks.live`).
- `GET /builds/{id}/artifacts/{name}`, `/untrusted/{name}`: one artifact of a build of
  the repository, or of a fork, streamed (`webhooks.artifacts`).
- `GET /builds/{id}/boot/{name}`: a boot test's screenshot (PNG, `webhooks.bootview`).
- `GET /api/builds`, `POST /api/builds/{id}/cancel|retry|publish`: the JSON API
  (`webhooks.api`).
- `GET /healthz`, `GET /readyz`, `GET /metrics`, `GET /api/openapi.json`.
- `GET /signing-key.pub`: the minisign public key release files are signed with.

Add routes to `ROUTES`; every error must go through `EXCEPTION_HANDLERS`, and every
call into the store through `_ask_store` (a failing store is a 503, logged once).
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Final, NamedTuple, TypeVar

import anyio
import structlog
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import BaseRoute, Route
from starlette.types import ExceptionHandler

from webhooks import (
    api,
    artifacts,
    bootview,
    github,
    gitlab,
    health,
    live,
    logfile,
    logview,
    openapi,
    pages,
)
from webhooks.body import read_capped
from webhooks.build import BOOT_DIR, BootTestRecord, BuildControl, BuildRecord, Forge
from webhooks.config import Ignored, Receiver, WebhookConfig
from webhooks.exceptions import (
    AdminTokenRequired,
    ArtifactNotFound,
    BodiesInFlight,
    BuildNotFound,
    StoreUnavailable,
    WebhookError,
)
from webhooks.logresponse import LogSnapshotResponse
from webhooks.metrics import DeliveryOutcome
from webhooks.state import AppState

log = structlog.get_logger()

_MAX_BUILD_ID: Final = 2**63 - 1  # SQLite's INTEGER range; larger ids cannot exist
T = TypeVar("T")


class _StoreFailure(NamedTuple):
    event: str
    answer: str


_RECORDING: Final = _StoreFailure(
    "build_store_failed",
    "the build store failed to record this delivery; redeliver it once "
    "isorunner's storage is healthy (see the service log)",
)
_READING: Final = _StoreFailure(
    "build_catalog_failed", "the build store could not be read; try again (see the service log)"
)


async def _ask_store(call: Awaitable[T], failure: _StoreFailure, **context: object) -> T:
    """Await a call into the store (sink, catalog or browser); the one place its errors go.

    Whatever the store raises is logged once, with `context`, and answered with 503
    `StoreUnavailable`: a delivery that was not acknowledged is not lost (the forge
    redelivers it), and a page or API read can be tried again.
    """
    try:
        return await call
    except Exception as exc:
        log.exception(failure.event, **context)
        raise StoreUnavailable(failure.answer) from exc


async def _intake(
    request: Request[AppState],
    forge: Forge,
    check_headers: Callable[[Mapping[str, str], WebhookConfig], None],
    receive: Receiver,
) -> Response:
    state = request.state
    config = state["config"]
    deliveries = state["deliveries"]
    try:
        # The body's bytes count against the in-flight budget until the answer.
        with state["bodies"].hold() as hold:
            check_headers(request.headers, config)
            body = await read_capped(
                request.headers.get("content-length"),
                request.stream(),
                config.max_body_bytes,
                hold=hold,
                seconds=config.body_seconds,
            )
            outcome = receive(request.headers, body, config, received_at=state["clock"]())
            if isinstance(outcome, Ignored):
                deliveries.count(forge, DeliveryOutcome.IGNORED)
                log.info("delivery_ignored", forge=str(forge), reason=outcome.reason)
                return JSONResponse({"ignored": outcome.reason}, status_code=200)
            submission = await _ask_store(
                state["sink"].submit(outcome),
                _RECORDING,
                forge=str(forge),
                repo=outcome.repo,
                commit_sha=outcome.commit_sha,
                delivery_id=outcome.delivery_id,
            )
    except WebhookError as exc:
        failed = exc.status_code >= 500
        deliveries.count(forge, DeliveryOutcome.ERROR if failed else DeliveryOutcome.REFUSED)
        raise
    except BaseException:
        deliveries.count(forge, DeliveryOutcome.ERROR)
        raise
    build_id, created = submission.build_id, submission.created
    deliveries.count(forge, DeliveryOutcome.ACCEPTED if created else DeliveryOutcome.DUPLICATE)
    log.info(
        "delivery_accepted",
        forge=str(forge),
        repo=outcome.repo,
        ref=outcome.ref,
        commit_sha=outcome.commit_sha,
        delivery_id=outcome.delivery_id,
        build_id=build_id,
        duplicate=not created,
    )
    answer: dict[str, object] = {"build_id": build_id, "url": config.build_url(build_id)}
    if not created:
        return JSONResponse({**answer, "duplicate": True}, status_code=200)
    return JSONResponse(answer, status_code=202)


async def github_webhook(request: Request[AppState]) -> Response:
    """Receive a GitHub delivery (`POST /webhooks/github`)."""
    return await _intake(request, Forge.GITHUB, github.check_headers, github.receive)


async def gitlab_webhook(request: Request[AppState]) -> Response:
    """Receive a GitLab delivery (`POST /webhooks/gitlab`)."""
    return await _intake(request, Forge.GITLAB, gitlab.check_headers, gitlab.receive)


async def _record(request: Request[AppState]) -> BuildRecord:
    """The build named by the `build_id` path parameter, or a 404."""
    build_id: int = request.path_params["build_id"]
    record = None
    if build_id <= _MAX_BUILD_ID:
        record = await _ask_store(
            request.state["catalog"].get(build_id), _READING, build_id=build_id
        )
    if record is None:
        raise BuildNotFound(f"no build with id {build_id}")
    return record


async def build_detail(request: Request[AppState]) -> Response:
    """Answer `GET /api/builds/{id}`: the build, its boot tests, signature and rebuild check."""
    record = await _record(request)
    tests = await _boot_tests(request, record.id)
    boot = [bootview.boot_json(record.id, test) for test in tests]
    trust = await anyio.to_thread.run_sync(
        artifacts.record_trust, request.state["artifacts"], record
    )
    return JSONResponse(
        {**api.record_json(record), "boot_tests": boot, "trust": api.trust_json(trust)}
    )


async def _boot_tests(request: Request[AppState], build_id: int) -> list[BootTestRecord]:
    source = request.state["boot_tests"]
    if source is None:
        return []
    return await _ask_store(source.boot_tests(build_id), _READING, build_id=build_id)


async def boot_screenshot(request: Request[AppState]) -> Response:
    """Answer `GET /builds/{id}/boot/{name}`: a boot test's screenshot (PNG)."""
    record = await _record(request)
    name: str = request.path_params["name"]
    source = request.state["artifacts"]
    directory = source.directory(record.id) if source is not None else None
    if directory is None or not record.state.is_final or not bootview.is_screenshot_name(name):
        raise ArtifactNotFound(f"this build has no screenshot named {name!r}")
    fd, length = await anyio.to_thread.run_sync(artifacts.open_artifact, directory / BOOT_DIR, name)
    return StreamingResponse(
        artifacts.stream_file(fd, length),
        media_type="image/png",
        headers={
            "Content-Length": str(length),
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
        },
    )


async def signing_key(request: Request[AppState]) -> Response:
    """Answer `GET /signing-key.pub`: the minisign public key release files are signed with."""
    text = artifacts.public_key_text(request.state["signing_key"])
    return PlainTextResponse(text, headers={"Cache-Control": "no-cache"})


async def build_log(request: Request[AppState]) -> Response:
    """Answer `GET /builds/{id}/log` with the log file, streamed, as plain text."""
    record = await _record(request)
    path = _log_path(request, record.id)
    if path is None:
        return PlainTextResponse("", headers={"Cache-Control": "no-store"})
    size = await anyio.to_thread.run_sync(logfile.file_size, path)
    return LogSnapshotResponse(
        path,
        size=size,
        range_header=request.headers.get("range"),
        headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"},
    )


async def _read_catalog(request: Request[AppState], query: api.ListingQuery) -> list[BuildRecord]:
    browser = request.state["browser"]
    if browser is None:
        return []
    listing = browser.list_builds(
        repo=query.repo, state=query.state, limit=query.limit, before_id=query.before
    )
    return await _ask_store(listing, _READING)


async def index_page(request: Request[AppState]) -> Response:
    """Answer `GET /` with the recent builds, newest first, filtered and paginated."""
    query = api.parse_listing(request.query_params)
    records = await _read_catalog(request, query)
    context = pages.index_context(
        records,
        repo=query.repo,
        state=query.state,
        limit=query.limit,
        now=request.state["clock"](),
        signing_key=request.state["signing_key"],
    )
    nonce = secrets.token_urlsafe(16)
    html = request.state["pages"].index(context, nonce=nonce)
    return HTMLResponse(html, headers=pages.page_headers(nonce))


def _log_path(request: Request[AppState], build_id: int) -> Path | None:
    logs = request.state["logs"]
    return logs.existing(build_id) if logs is not None else None


async def build_page(request: Request[AppState]) -> Response:
    """Answer `GET /builds/{id}`: what was built and why, its state, log and artifacts."""
    record = await _record(request)
    state = request.state
    live = not record.state.is_final
    path = _log_path(request, record.id)
    view = await anyio.to_thread.run_sync(lambda: logview.log_view(path, live=live))
    found: list[Any] = []
    source = state["artifacts"]
    if record.state.is_final and source is not None:
        directory = source.directory(record.id)
        found = await anyio.to_thread.run_sync(artifacts.list_artifacts, directory)
    trust = await anyio.to_thread.run_sync(artifacts.record_trust, source, record)
    context = pages.build_context(record, found, view, now=state["clock"](), trust=trust)
    context["boot_tests"] = bootview.boot_context(
        record.id, await _boot_tests(request, record.id) if record.state.is_final else []
    )
    nonce = secrets.token_urlsafe(16)
    head, tail = state["pages"].build_page(context, nonce=nonce)

    return StreamingResponse(
        logview.around(head, logview.escaped_log(path, view.start, view.end), tail),
        media_type="text/html; charset=utf-8",
        headers=pages.page_headers(nonce),
    )


async def log_stream(request: Request[AppState]) -> Response:
    """Answer `GET /builds/{id}/log/stream`: the log as server-sent events.

    Starts at `Last-Event-ID` (a reconnecting browser), else at `?after=` (the offset
    the page already shows), else at the start of the log.
    """
    record = await _record(request)
    start = live.start_offset(
        request.headers.get("last-event-id"), request.query_params.get("after")
    )
    stream = request.state["followers"].follow(record.id, start)
    return StreamingResponse(
        stream,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def artifact_download(request: Request[AppState]) -> Response:
    """Answer `GET /builds/{id}/artifacts/{name}`: one file of a trusted finished build."""
    return await _download(request, trusted=True)


async def untrusted_download(request: Request[AppState]) -> Response:
    """Answer `GET /builds/{id}/untrusted/{name}`: one file of a build from a fork."""
    return await _download(request, trusted=False)


async def _download(request: Request[AppState], *, trusted: bool) -> Response:
    """Stream one file of a finished build whose trust matches the path, else 404."""
    record = await _record(request)
    name: str = request.path_params["name"]
    source = request.state["artifacts"]
    directory = source.directory(record.id) if source is not None else None
    if not record.state.is_final or record.request.trusted is not trusted:
        directory = None  # a fork's files never answer under /artifacts/, nor the reverse
    fd, length = await anyio.to_thread.run_sync(artifacts.open_artifact, directory, name)
    return StreamingResponse(
        artifacts.stream_file(fd, length),
        media_type="application/octet-stream",
        headers=artifacts.download_headers(name, length, trusted=trusted),
    )


async def api_builds(request: Request[AppState]) -> Response:
    """Answer `GET /api/builds`: builds newest first, filtered and paginated."""
    query = api.parse_listing(request.query_params)
    records = await _read_catalog(request, query)
    following = query.next_query(records)
    return JSONResponse(
        {
            "builds": [api.record_json(record) for record in records],
            "next": f"/api/builds?{following}" if following is not None else None,
        }
    )


def _admin(request: Request[AppState]) -> BuildControl:
    state = request.state
    return api.admin_control(
        request.headers.get("authorization"), state["admin_token"], state["control"]
    )


async def api_cancel(request: Request[AppState]) -> Response:
    """Answer `POST /api/builds/{id}/cancel` (admin): cancel a queued or running build."""
    control = _admin(request)
    build_id: int = request.path_params["build_id"]
    record = await control.cancel(build_id, "cancelled by an administrator")
    log.info("build_cancelled_by_admin", build_id=build_id)
    return JSONResponse(api.record_json(record))


async def api_retry(request: Request[AppState]) -> Response:
    """Answer `POST /api/builds/{id}/retry` (admin): 202 with the new build's id."""
    control = _admin(request)
    build_id: int = request.path_params["build_id"]
    new_id = await control.retry(build_id)
    log.info("build_retried_by_admin", build_id=build_id, new_build_id=new_id)
    url = request.state["config"].build_url(new_id)
    return JSONResponse({"build_id": new_id, "url": url}, status_code=202)


async def api_publish(request: Request[AppState]) -> Response:
    """Answer `POST /api/builds/{id}/publish` (admin): 202, the tag's release queued again."""
    record = await _admin(request).publish(request.path_params["build_id"])
    log.info("release_requeued_by_admin", build_id=record.id)
    return JSONResponse(api.record_json(record), status_code=202)


async def healthz(request: Request[AppState]) -> Response:
    """Answer `GET /healthz`: the process is alive and serving."""
    return JSONResponse({"status": "ok"}, headers={"Cache-Control": "no-store"})


async def readyz(request: Request[AppState]) -> Response:
    """Answer `GET /readyz`: 200 when every readiness check passes, else 503."""
    probe = request.state["readiness"]
    checks = await probe.check() if probe is not None else []
    status, body = health.readiness(checks)
    return JSONResponse(body, status_code=status, headers={"Cache-Control": "no-store"})


async def metrics(request: Request[AppState]) -> Response:
    """Answer `GET /metrics`: the shared registry in the Prometheus text format."""
    text = generate_latest(request.state["registry"])
    return Response(text, media_type=CONTENT_TYPE_LATEST, headers={"Cache-Control": "no-store"})


async def openapi_json(request: Request[AppState]) -> Response:
    """Answer `GET /api/openapi.json`: the OpenAPI 3.1 description of this app."""
    return JSONResponse(openapi.describe(request.state["config"].public_url))


async def _webhook_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, WebhookError)
    log.warning(
        "request_refused",
        method=request.method,
        path=request.url.path,
        status=exc.status_code,
        error=exc.message,
    )
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, AdminTokenRequired) else None
    if isinstance(exc, BodiesInFlight):
        headers = {"Retry-After": str(exc.retry_after)}
    templates = request.scope.get("state", {}).get("pages")
    if templates is not None and "text/html" in request.headers.get("accept", ""):
        nonce = secrets.token_urlsafe(16)
        html = templates.error(exc.status_code, exc.message, nonce=nonce)
        return HTMLResponse(html, status_code=exc.status_code, headers=pages.page_headers(nonce))
    return JSONResponse({"error": exc.message}, status_code=exc.status_code, headers=headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)


ROUTES: Final[tuple[BaseRoute, ...]] = (
    Route("/webhooks/github", github_webhook, methods=["POST"]),
    Route("/webhooks/gitlab", gitlab_webhook, methods=["POST"]),
    Route("/api/builds/{build_id:int}", build_detail, methods=["GET"]),
    Route("/builds/{build_id:int}/log", build_log, methods=["GET"]),
    Route("/", index_page, methods=["GET"]),
    Route("/builds/{build_id:int}", build_page, methods=["GET"]),
    Route("/builds/{build_id:int}/log/stream", log_stream, methods=["GET"]),
    Route("/builds/{build_id:int}/artifacts/{name:str}", artifact_download, methods=["GET"]),
    Route("/builds/{build_id:int}/boot/{name:str}", boot_screenshot, methods=["GET"]),
    Route("/builds/{build_id:int}/untrusted/{name:str}", untrusted_download, methods=["GET"]),
    Route("/api/builds", api_builds, methods=["GET"]),
    Route("/api/builds/{build_id:int}/cancel", api_cancel, methods=["POST"]),
    Route("/api/builds/{build_id:int}/retry", api_retry, methods=["POST"]),
    Route("/api/builds/{build_id:int}/publish", api_publish, methods=["POST"]),
    Route("/api/openapi.json", openapi_json, methods=["GET"]),
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
    Route("/signing-key.pub", signing_key, methods=["GET"]),
)
"""The app's routes; later pages and API routes are appended here."""

EXCEPTION_HANDLERS: Final[Mapping[Any, ExceptionHandler]] = {
    WebhookError: _webhook_error,
    HTTPException: _http_error,
}
"""The one mapping from errors to responses: JSON `{"error": message}`."""

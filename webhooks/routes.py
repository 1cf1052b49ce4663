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
- `GET /api/builds/{id}`: the stored build as JSON, 404 when unknown.
- `GET /builds/{id}/log`: the build log as text/plain, streamed from its file (empty
  while the build has not written any), 404 when the build is unknown.
- `GET /`, `GET /builds/{id}`: the build list and a build's page (HTML, `webhooks.pages`).
- `GET /builds/{id}/log/stream`: the log as server-sent events (`webhooks.live`).
- `GET /builds/{id}/artifacts/{name}`: one artifact, streamed (`webhooks.artifacts`).
- `GET /api/builds`, `POST /api/builds/{id}/cancel|retry`: the JSON API (`webhooks.api`).
- `GET /healthz`, `GET /readyz`, `GET /metrics`, `GET /api/openapi.json`.

Add routes to `ROUTES`; every error must go through `EXCEPTION_HANDLERS`.
"""

from __future__ import annotations

import codecs
import functools
import os
import secrets
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import aclosing
from datetime import datetime
from pathlib import Path
from typing import Any, Final, NotRequired, Protocol, TypedDict
from urllib.parse import quote

import anyio
import structlog
from markupsafe import escape
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import SecretStr
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import BaseRoute, Route
from starlette.types import ExceptionHandler

from webhooks import api, artifacts, github, gitlab, health, logfile, openapi, pages
from webhooks.build import (
    ArtifactSource,
    BuildBrowser,
    BuildCatalog,
    BuildControl,
    BuildLogSource,
    BuildRecord,
    BuildRequest,
    BuildSink,
    Forge,
    ReadinessProbe,
)
from webhooks.config import Ignored, Outcome, WebhookConfig
from webhooks.exceptions import (
    AdminDisabled,
    AdminTokenRequired,
    BuildNotFound,
    InvalidParameter,
    MalformedPayload,
    PayloadTooLarge,
    StoreUnavailable,
    WebhookError,
)
from webhooks.live import LogFollowers
from webhooks.logresponse import LogSnapshotResponse
from webhooks.metrics import DeliveryMetrics, DeliveryOutcome

log = structlog.get_logger()

_MAX_BUILD_ID: Final = 2**63 - 1  # SQLite's INTEGER range; larger ids cannot exist


class AppState(TypedDict):
    """What the lifespan yields and every handler reads from `request.state`."""

    config: WebhookConfig
    sink: BuildSink
    catalog: BuildCatalog
    logs: BuildLogSource | None
    clock: Callable[[], datetime]
    # The keys below are always set by `create_app`; NotRequired lets a test drive
    # the intake at the ASGI level with only the keys above.
    browser: NotRequired[BuildBrowser | None]
    control: NotRequired[BuildControl | None]
    artifacts: NotRequired[ArtifactSource | None]
    readiness: NotRequired[ReadinessProbe | None]
    admin_token: NotRequired[SecretStr | None]
    registry: NotRequired[CollectorRegistry]
    deliveries: NotRequired[DeliveryMetrics]
    pages: NotRequired[pages.Pages]
    followers: NotRequired[LogFollowers]


class _Uncounted:
    def count(self, forge: Forge, outcome: DeliveryOutcome) -> None:
        pass


_UNCOUNTED: Final = _Uncounted()


class _Receiver(Protocol):
    def __call__(
        self,
        headers: Mapping[str, str],
        body: bytes,
        config: WebhookConfig,
        *,
        received_at: datetime,
    ) -> Outcome: ...


async def _read_body(request: Request[AppState], limit: int) -> bytes:
    """Read the body, refusing it as soon as it is known to exceed `limit` bytes.

    A declared `Content-Length` over the limit is refused before reading anything; a
    chunked body is refused at the first chunk that passes the limit. (Starlette's own
    `max_body_size` answers in plain text and outside our exception handlers, so the
    equivalent is done here.)
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        if not (declared.isascii() and declared.isdigit()):
            raise MalformedPayload("Content-Length is not a number")
        if int(declared) > limit:
            raise PayloadTooLarge(f"the body is over the {limit}-byte limit")
    chunks: list[bytes] = []
    size = 0
    try:
        async with aclosing(request.stream()) as stream:
            async for chunk in stream:
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"the body is over the {limit}-byte limit")
                chunks.append(chunk)
    except ClientDisconnect as exc:
        raise MalformedPayload("the client disconnected before the body was complete") from exc
    return b"".join(chunks)


async def _store(sink: BuildSink, build: BuildRequest) -> tuple[int, bool]:
    try:
        submission = await sink.submit(build)
    except Exception as exc:
        # Not acknowledged, so nothing is lost: the forge sees 503 and redelivers.
        log.exception(
            "build_store_failed",
            forge=str(build.forge),
            repo=build.repo,
            commit_sha=build.commit_sha,
            delivery_id=build.delivery_id,
        )
        raise StoreUnavailable(
            "the build store failed to record this delivery; redeliver it once "
            "isorunner's storage is healthy (see the service log)"
        ) from exc
    return submission.build_id, submission.created


async def _intake(
    request: Request[AppState],
    forge: Forge,
    check_headers: Callable[[Mapping[str, str], WebhookConfig], None],
    receive: _Receiver,
) -> Response:
    state = request.state
    config = state["config"]
    # Starlette's State has no .get().
    deliveries = state["deliveries"] if "deliveries" in state else _UNCOUNTED  # noqa: SIM401
    try:
        check_headers(request.headers, config)
        body = await _read_body(request, config.max_body_bytes)
        outcome = receive(request.headers, body, config, received_at=state["clock"]())
        if isinstance(outcome, Ignored):
            deliveries.count(forge, DeliveryOutcome.IGNORED)
            log.info("delivery_ignored", forge=str(forge), reason=outcome.reason)
            return JSONResponse({"ignored": outcome.reason}, status_code=200)
        build_id, created = await _store(state["sink"], outcome)
    except WebhookError as exc:
        failed = exc.status_code >= 500
        deliveries.count(forge, DeliveryOutcome.ERROR if failed else DeliveryOutcome.REFUSED)
        raise
    except BaseException:
        deliveries.count(forge, DeliveryOutcome.ERROR)
        raise
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


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def record_json(record: BuildRecord) -> dict[str, Any]:
    """Return the JSON form of a stored build, as `GET /api/builds/{id}` sends it."""
    build = record.request
    return {
        "id": record.id,
        "state": str(record.state),
        "detail": record.detail,
        "created_at": _iso(record.created_at),
        "started_at": _iso(record.started_at),
        "finished_at": _iso(record.finished_at),
        "request": {
            "forge": str(build.forge),
            "repo": build.repo,
            "commit_sha": build.commit_sha,
            "ref": build.ref,
            "ref_name": build.ref_name,
            "kind": str(build.kind),
            "pr_number": build.pr_number,
            "trusted": build.trusted,
            "commit_time": _iso(build.commit_time),
            "delivery_id": build.delivery_id,
            "source_repo": build.source_repo,
            "project_id": build.project_id,
            "web_url": build.web_url,
            "title": build.title,
            "sender": build.sender,
            "previous_sha": build.previous_sha,
        },
    }


async def _record(request: Request[AppState]) -> BuildRecord:
    """The build named by the `build_id` path parameter, or a 404."""
    build_id: int = request.path_params["build_id"]
    record = None
    if build_id <= _MAX_BUILD_ID:
        try:
            record = await request.state["catalog"].get(build_id)
        except Exception as exc:
            log.exception("build_catalog_failed", build_id=build_id)
            raise StoreUnavailable(
                "the build store could not be read; try again (see the service log)"
            ) from exc
    if record is None:
        raise BuildNotFound(f"no build with id {build_id}")
    return record


async def build_detail(request: Request[AppState]) -> Response:
    """Answer `GET /api/builds/{id}` with the stored build."""
    return JSONResponse(record_json(await _record(request)))


async def build_log(request: Request[AppState]) -> Response:
    """Answer `GET /builds/{id}/log` with the log file, streamed, as plain text."""
    record = await _record(request)
    logs = request.state["logs"]
    path = logs.existing(record.id) if logs is not None else None
    if path is None:
        return PlainTextResponse("", headers={"Cache-Control": "no-store"})
    size = await anyio.to_thread.run_sync(logfile.file_size, path)
    return LogSnapshotResponse(
        path,
        size=size,
        range_header=request.headers.get("range"),
        headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"},
    )


PAGE_LOG_BYTES: Final = 512 * 1024
"""The most of a log a build page embeds (its end); the full log is a link away."""
_STREAM_BLOCK: Final = 1024 * 1024
_PAGE_HEADERS: Final = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def _page_headers(nonce: str) -> dict[str, str]:
    return {**_PAGE_HEADERS, "Content-Security-Policy": pages.content_security_policy(nonce)}


async def _read_catalog(request: Request[AppState], query: api.ListingQuery) -> list[BuildRecord]:
    browser = request.state["browser"]
    if browser is None:
        return []
    try:
        return await browser.list_builds(
            repo=query.repo, state=query.state, limit=query.limit, before_id=query.before
        )
    except Exception as exc:
        log.exception("build_catalog_failed")
        raise StoreUnavailable(
            "the build store could not be read; try again (see the service log)"
        ) from exc


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
    )
    nonce = secrets.token_urlsafe(16)
    html = request.state["pages"].index(context, nonce=nonce)
    return HTMLResponse(html, headers=_page_headers(nonce))


def _log_path(request: Request[AppState], build_id: int) -> Path | None:
    logs = request.state["logs"]
    return logs.existing(build_id) if logs is not None else None


def _log_view(path: Path | None, *, live: bool) -> pages.LogView:
    if path is None:
        return pages.LogView(0, 0, live)
    end = logfile.aligned_end(path) if live else logfile.file_size(path)
    return pages.LogView(logfile.tail_start(path, end, PAGE_LOG_BYTES), end, live)


async def _escaped_log(path: Path | None, start: int, end: int) -> AsyncIterator[str]:
    """Yield the log's bytes `[start, end)` as escaped HTML, one bounded block at a time."""
    if path is None:
        return
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    offset = start
    while offset < end:
        data = await anyio.to_thread.run_sync(
            functools.partial(logfile.read_lines, path, offset, end, final=True)
        )
        if not data:
            break
        offset += len(data)
        yield str(escape(decoder.decode(data)))
    yield str(escape(decoder.decode(b"", final=True)))


async def build_page(request: Request[AppState]) -> Response:
    """Answer `GET /builds/{id}`: what was built and why, its state, log and artifacts."""
    record = await _record(request)
    state = request.state
    live = not record.state.is_final
    path = _log_path(request, record.id)
    view = await anyio.to_thread.run_sync(lambda: _log_view(path, live=live))
    found: list[Any] = []
    source = state["artifacts"]
    if record.state.is_final and source is not None:
        directory = source.directory(record.id)
        found = await anyio.to_thread.run_sync(artifacts.list_artifacts, directory)
    context = pages.build_context(record, found, view, now=state["clock"]())
    nonce = secrets.token_urlsafe(16)
    head, tail = state["pages"].build_page(context, nonce=nonce)

    async def body() -> AsyncIterator[str]:
        yield head
        async for chunk in _escaped_log(path, view.start, view.end):
            yield chunk
        yield tail

    return StreamingResponse(
        body(), media_type="text/html; charset=utf-8", headers=_page_headers(nonce)
    )


def _offset(raw: str | None, name: str) -> int | None:
    if raw is None or raw == "":
        return None
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        raise InvalidParameter(f"{name} must be a byte offset (a whole number)")
    return int(raw)


async def log_stream(request: Request[AppState]) -> Response:
    """Answer `GET /builds/{id}/log/stream`: the log as server-sent events.

    Starts at `Last-Event-ID` (a reconnecting browser), else at `?after=` (the offset
    the page already shows), else at the start of the log.
    """
    record = await _record(request)
    resume = _offset(request.headers.get("last-event-id"), "Last-Event-ID")
    after = _offset(request.query_params.get("after"), "after")
    start = resume if resume is not None else (after or 0)
    stream = request.state["followers"].follow(record.id, start)
    return StreamingResponse(
        stream,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def artifact_download(request: Request[AppState]) -> Response:
    """Answer `GET /builds/{id}/artifacts/{name}`: one file of a finished build, streamed."""
    record = await _record(request)
    name: str = request.path_params["name"]
    source = request.state["artifacts"]
    directory = source.directory(record.id) if source is not None else None
    if not record.state.is_final:
        directory = None
    fd, length = await anyio.to_thread.run_sync(artifacts.open_artifact, directory, name)

    async def body() -> AsyncIterator[bytes]:
        try:
            offset = 0
            while offset < length:
                block = await anyio.to_thread.run_sync(
                    artifacts.read_block, fd, offset, min(_STREAM_BLOCK, length - offset)
                )
                if not block:
                    break
                offset += len(block)
                yield block
        finally:
            os.close(fd)

    disposition = f"attachment; filename*=UTF-8''{quote(name)}"
    return StreamingResponse(
        body(),
        media_type="application/octet-stream",
        headers={
            "Content-Length": str(length),
            "Content-Disposition": disposition,
            "X-Content-Type-Options": "nosniff",
        },
    )


async def api_builds(request: Request[AppState]) -> Response:
    """Answer `GET /api/builds`: builds newest first, filtered and paginated."""
    query = api.parse_listing(request.query_params)
    records = await _read_catalog(request, query)
    following = query.next_query(records)
    return JSONResponse(
        {
            "builds": [record_json(record) for record in records],
            "next": f"/api/builds?{following}" if following is not None else None,
        }
    )


def _admin(request: Request[AppState]) -> BuildControl:
    api.check_admin(request.headers.get("authorization"), request.state["admin_token"])
    control = request.state["control"]
    if control is None:
        raise AdminDisabled("this server cannot cancel or retry builds (no worker attached)")
    return control


async def api_cancel(request: Request[AppState]) -> Response:
    """Answer `POST /api/builds/{id}/cancel` (admin): cancel a queued or running build."""
    control = _admin(request)
    build_id: int = request.path_params["build_id"]
    record = await control.cancel(build_id, "cancelled by an administrator")
    log.info("build_cancelled_by_admin", build_id=build_id)
    return JSONResponse(record_json(record))


async def api_retry(request: Request[AppState]) -> Response:
    """Answer `POST /api/builds/{id}/retry` (admin): 202 with the new build's id."""
    control = _admin(request)
    build_id: int = request.path_params["build_id"]
    new_id = await control.retry(build_id)
    log.info("build_retried_by_admin", build_id=build_id, new_build_id=new_id)
    url = request.state["config"].build_url(new_id)
    return JSONResponse({"build_id": new_id, "url": url}, status_code=202)


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
    templates = request.scope.get("state", {}).get("pages")
    if templates is not None and "text/html" in request.headers.get("accept", ""):
        nonce = secrets.token_urlsafe(16)
        html = templates.error(exc.status_code, exc.message, nonce=nonce)
        return HTMLResponse(html, status_code=exc.status_code, headers=_page_headers(nonce))
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
    Route("/api/builds", api_builds, methods=["GET"]),
    Route("/api/builds/{build_id:int}/cancel", api_cancel, methods=["POST"]),
    Route("/api/builds/{build_id:int}/retry", api_retry, methods=["POST"]),
    Route("/api/openapi.json", openapi_json, methods=["GET"]),
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
)
"""The app's routes; later pages and API routes are appended here."""

EXCEPTION_HANDLERS: Final[Mapping[Any, ExceptionHandler]] = {
    WebhookError: _webhook_error,
    HTTPException: _http_error,
}
"""The one mapping from errors to responses: JSON `{"error": message}`."""

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

Add routes to `ROUTES`; every error must go through `EXCEPTION_HANDLERS`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import aclosing
from datetime import datetime
from typing import Any, Final, Protocol, TypedDict

import structlog
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ExceptionHandler

from webhooks import github, gitlab
from webhooks.build import (
    BuildCatalog,
    BuildLogSource,
    BuildRecord,
    BuildRequest,
    BuildSink,
    Forge,
)
from webhooks.config import Ignored, Outcome, WebhookConfig
from webhooks.exceptions import (
    BuildNotFound,
    MalformedPayload,
    PayloadTooLarge,
    StoreUnavailable,
    WebhookError,
)

log = structlog.get_logger()

_MAX_BUILD_ID: Final = 2**63 - 1  # SQLite's INTEGER range; larger ids cannot exist


class AppState(TypedDict):
    """What the lifespan yields and every handler reads from `request.state`."""

    config: WebhookConfig
    sink: BuildSink
    catalog: BuildCatalog
    logs: BuildLogSource | None
    clock: Callable[[], datetime]


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
    check_headers(request.headers, config)
    body = await _read_body(request, config.max_body_bytes)
    outcome = receive(request.headers, body, config, received_at=state["clock"]())
    if isinstance(outcome, Ignored):
        log.info("delivery_ignored", forge=str(forge), reason=outcome.reason)
        return JSONResponse({"ignored": outcome.reason}, status_code=200)
    build_id, created = await _store(state["sink"], outcome)
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
    return FileResponse(
        path,
        media_type="text/plain; charset=utf-8",
        headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"},
    )


async def _webhook_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, WebhookError)
    log.warning(
        "request_refused",
        method=request.method,
        path=request.url.path,
        status=exc.status_code,
        error=exc.message,
    )
    return JSONResponse({"error": exc.message}, status_code=exc.status_code)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)


ROUTES: Final[tuple[BaseRoute, ...]] = (
    Route("/webhooks/github", github_webhook, methods=["POST"]),
    Route("/webhooks/gitlab", gitlab_webhook, methods=["POST"]),
    Route("/api/builds/{build_id:int}", build_detail, methods=["GET"]),
    Route("/builds/{build_id:int}/log", build_log, methods=["GET"]),
)
"""The app's routes; later pages and API routes are appended here."""

EXCEPTION_HANDLERS: Final[Mapping[Any, ExceptionHandler]] = {
    WebhookError: _webhook_error,
    HTTPException: _http_error,
}
"""The one mapping from errors to responses: JSON `{"error": message}`."""

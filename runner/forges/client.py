"""The one thin async transport both forge clients share: send, download, upload.

I/O shell: this is the only module of `runner.forges` that touches the network (and,
for downloads and uploads, the disk). It sends the `ForgeRequest`s the pure builders
make, over an `httpx.AsyncClient` it is given and never creates or closes, and hands the
`ForgeResponse` back to the pure decoders.

`ForgeTransport(client, *, sleep, clock, max_retry_seconds=120)`:

- `send(request) -> ForgeResponse`: one API call. Retries 5xx, 429, GitHub's rate-limit
  403, transport errors and the request's own `retry_statuses`; honours `Retry-After`
  and the rate-limit reset epochs; backs off exponentially otherwise; gives up with a
  `ForgeError` once the next wait would pass `max_retry_seconds` in total. GET requests
  follow redirects by hand. A request that is not `idempotent` (a create) is retried
  only where the forge cannot have acted on it (rate limits, a connection that never
  opened): a 5xx is returned and a lost connection raised, for the caller to look up
  what the forge has before creating again (forge-apis.md §7.2, §9.14).
- `download_to(request, path, *, max_bytes) -> int`: streams the body to `path` in
  1 MiB pieces and stops (removing the file) past `max_bytes`. Redirects are followed by
  hand, and credential headers (`Authorization`, `PRIVATE-TOKEN`, `JOB-TOKEN`) are
  dropped as soon as a redirect leaves the original host: GitHub's tarball answers 302
  to codeload.github.com, which must never see the token.
- `upload_file(request, path) -> ForgeResponse`: streams `path` as the body with its
  exact `Content-Length`, 1 MiB at a time, so memory stays flat for a 2 GiB ISO. It only
  retries rate limits, where the forge refused the body outright, and connections that
  never opened; after a 5xx or a timeout the caller must look at what the forge stored
  (an asset may be half there).

`sleep` and `clock` (`time.time`, since rate-limit resets are epochs) are injected so
tests record waits instead of sleeping. `on_response(method, host, status)`, if given,
is told of every HTTP exchange (each redirect hop and retry included; `status` is None
when no answer came); it feeds the metrics and never changes what the transport does.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit

import anyio
import httpx
import structlog

from runner.forges.exceptions import (
    DownloadTooLarge,
    ForgeError,
    ForgeUnavailable,
    MalformedResponse,
    safe_host,
    safe_url,
)
from runner.forges.request import CREDENTIAL_HEADERS, ForgeRequest, ForgeResponse
from runner.forges.response import check, error_for, retry_advice

#: Size of the pieces read from disk for uploads and written to disk for downloads.
CHUNK_SIZE = 1024 * 1024
#: How many redirects a GET may follow (GitHub's tarball needs one).
MAX_REDIRECTS = 5
#: How much of a failed download's body is kept for the error message.
ERROR_BODY_LIMIT = 64 * 1024

log = structlog.get_logger(__name__)

#: Failures that happen before a request can reach the forge: retrying them cannot
#: make the forge act twice, whatever the request.
_NEVER_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)

#: `on_response(method, host, status)`: status None means the connection failed.
ResponseObserver = Callable[[str, str, int | None], None]


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc.lower()


class ForgeTransport:
    """Sends `ForgeRequest`s over an `httpx.AsyncClient`, with bounded retries.

    Args:
        client: The HTTP client; the caller owns it (opens and closes it).
        sleep: Awaitable sleep, `anyio.sleep` by default; tests record the waits.
        clock: Current Unix time, `time.time` by default.
        max_retry_seconds: Total time one call may spend retrying before it gives up.
        backoff_base: First wait when the forge names none; doubles on each retry.
        backoff_max: Longest wait the backoff picks by itself.
        on_response: Told `(method, host, status)` after every exchange; `status` is
            None when the connection failed. Its own errors are logged and ignored.
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        clock: Callable[[], float] = time.time,
        max_retry_seconds: float = 120.0,
        backoff_base: float = 1.0,
        backoff_max: float = 30.0,
        on_response: ResponseObserver | None = None,
    ) -> None:
        self._client = client
        self._on_response = on_response
        self._sleep = sleep
        self._clock = clock
        self._max_retry_seconds = max_retry_seconds
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max

    @property
    def clock(self) -> Callable[[], float]:
        """The clock this transport reads, shared with the clients built on it."""
        return self._clock

    async def send(self, request: ForgeRequest) -> ForgeResponse:
        """Send one API request and return the final answer, whatever its status.

        Raises:
            ForgeError: The retries ran out (`RateLimited`, `ForgeUnavailable`, or
                the error for a `retry_statuses` status).
        """

        async def attempt() -> ForgeResponse:
            response, _ = await self._exchange(request, dict(request.headers), None, None)
            return response

        return await self._retrying(request, attempt, retry_unavailable=request.idempotent)

    async def download_to(self, request: ForgeRequest, path: Path, *, max_bytes: int) -> int:
        """Stream a response body to `path`; return the number of bytes written.

        Args:
            request: A GET request (redirects are followed by hand).
            path: Where to write; replaced if it exists, removed on any failure.
            max_bytes: The most bytes accepted (after content decoding).

        Raises:
            DownloadTooLarge: The body is larger than `max_bytes`.
            ForgeError: The forge answered an error, or the retries ran out.
        """
        written = 0

        async def attempt() -> ForgeResponse:
            nonlocal written
            response, written = await self._exchange(
                request, dict(request.headers), None, (path, max_bytes)
            )
            return response

        try:
            response = await self._retrying(request, attempt, retry_unavailable=True)
            check(response, now=self._clock())
        except BaseException:
            # Shielded, so that a cancelled download still removes its partial file.
            with anyio.CancelScope(shield=True):
                await anyio.Path(path).unlink(missing_ok=True)
            raise
        return written

    async def upload_file(self, request: ForgeRequest, path: Path) -> ForgeResponse:
        """Send `request` with the file at `path` as its body, streamed, exact length.

        Args:
            request: A POST or PUT request without a body; a `Content-Length` header
                in it, if any, must match the file's size.
            path: The file to send.

        Returns:
            The forge's final answer (a 5xx is returned, not retried).

        Raises:
            ValueError: The request's `Content-Length` differs from the file's size.
            ForgeError: The file changed size during the upload, the forge could not
                be reached, or its rate limit outlasted the retry budget.
        """
        size = (await anyio.Path(path).stat()).st_size
        headers = dict(request.headers)
        declared = {k.lower(): v for k, v in headers.items()}.get("content-length")
        if declared is not None and declared != str(size):
            raise ValueError(f"the upload request says {declared} bytes but {path.name} has {size}")
        headers = {k: v for k, v in headers.items() if k.lower() != "content-length"}
        # An explicit Content-Length stops httpx from falling back to chunked encoding,
        # which GitHub refuses with 400 "Bad Content-Length" (forge-apis.md §9.14).
        headers["Content-Length"] = str(size)

        async def attempt() -> ForgeResponse:
            chunks = _file_chunks(path, size, request.action)
            response, _ = await self._exchange(request, headers, chunks, None)
            return response

        return await self._retrying(request, attempt, retry_unavailable=False)

    async def _retrying(
        self,
        request: ForgeRequest,
        attempt: Callable[[], Awaitable[ForgeResponse]],
        *,
        retry_unavailable: bool,
    ) -> ForgeResponse:
        start = self._clock()
        failures = 0
        while True:
            response: ForgeResponse | None = None
            try:
                response = await attempt()
            except httpx.TransportError as exc:
                if not retry_unavailable and not isinstance(exc, _NEVER_SENT):
                    raise _unreachable(request, exc, note="") from exc
                wait: float | None = None
                failure: httpx.TransportError | None = exc
            except httpx.RequestError as exc:
                # Not a network failure (e.g. a body that fails to decompress): no retry.
                raise MalformedResponse(
                    f"could not {request.action}: the answer could not be read "
                    f"({type(exc).__name__}); check the forge URL, or report it if it persists"
                ) from exc
            else:
                failure = None
                advice = retry_advice(
                    response, now=self._clock(), extra_statuses=request.retry_statuses
                )
                if advice is None or (not advice.rate_limited and not retry_unavailable):
                    return response
                wait = advice.wait
            failures += 1
            if wait is None:
                wait = min(self._backoff_base * 2 ** (failures - 1), self._backoff_max)
            elapsed = self._clock() - start
            if elapsed + wait > self._max_retry_seconds:
                note = f"gave up after {failures} attempts over {elapsed:.0f} s"
                if failure is not None:
                    raise _unreachable(request, failure, note=note) from failure
                assert response is not None
                raise error_for(response, now=self._clock(), note=note)
            log.warning(
                "forge_retry",
                action=request.action,
                status=response.status if response is not None else None,
                error=type(failure).__name__ if failure is not None else None,
                attempt=failures,
                wait_seconds=wait,
            )
            await self._sleep(wait)

    def _observe(self, method: str, host: str, status: int | None) -> None:
        if self._on_response is None:
            return
        try:
            self._on_response(method, host, status)
        except Exception as exc:  # noqa: BLE001 - an observer must not break a forge call
            log.warning("forge_observer_failed", error=repr(exc))

    async def _exchange(
        self,
        request: ForgeRequest,
        headers: dict[str, str],
        content: AsyncIterator[bytes] | None,
        sink: tuple[Path, int] | None,
    ) -> tuple[ForgeResponse, int]:
        url = request.url
        origin = _origin(url)
        for _ in range(MAX_REDIRECTS + 1):
            http_request = self._client.build_request(
                request.method,
                url,
                headers=headers,
                json=request.json,
                content=content if content is not None else request.content,
            )
            try:
                response = await self._client.send(
                    http_request, stream=True, follow_redirects=False
                )
            except httpx.TransportError:
                self._observe(request.method, http_request.url.host, None)
                raise
            self._observe(request.method, http_request.url.host, response.status_code)
            try:
                location = response.headers.get("location")
                if request.method == "GET" and response.is_redirect and location:
                    url = str(response.url.join(location))
                    if _origin(url) != origin:
                        # Never hand the token to another host (forge-apis.md §9.17).
                        for name in [h for h in headers if h.lower() in CREDENTIAL_HEADERS]:
                            del headers[name]
                    continue
                lowered = {k.lower(): v for k, v in response.headers.items()}
                if sink is not None and response.is_success:
                    written = await _write_body(response, sink[0], sink[1], request.action)
                    return ForgeResponse(
                        response.status_code, lowered, b"", request.action
                    ), written
                if sink is not None:
                    body = await _read_limited(response, ERROR_BODY_LIMIT)
                else:
                    body = await response.aread()
                return ForgeResponse(response.status_code, lowered, body, request.action), 0
            finally:
                await response.aclose()
        raise ForgeError(
            f"could not {request.action}: more than {MAX_REDIRECTS} redirects, the last "
            f"to {safe_url(url)}; check the API base URL"
        )


def _unreachable(request: ForgeRequest, exc: httpx.TransportError, *, note: str) -> ForgeError:
    host = safe_host(request.url)
    what = "did not answer in time" if isinstance(exc, httpx.TimeoutException) else "failed"
    suffix = f" ({note})" if note else ""
    return ForgeUnavailable(
        f"could not {request.action}: the connection to {host} {what} "
        f"({type(exc).__name__}){suffix}; check the network and the forge's status page, "
        "then retry"
    )


async def _write_body(response: httpx.Response, path: Path, max_bytes: int, action: str) -> int:
    def too_large() -> DownloadTooLarge:
        return DownloadTooLarge(
            f"could not {action}: the download is larger than the {max_bytes}-byte cap; "
            "raise the cap in the configuration if the repository really is that large",
            max_bytes=max_bytes,
        )

    declared = response.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise too_large()
    written = 0
    async with await anyio.open_file(path, "wb") as file:
        async for chunk in response.aiter_bytes(CHUNK_SIZE):
            written += len(chunk)
            if written > max_bytes:
                raise too_large()
            await file.write(chunk)
    return written


async def _read_limited(response: httpx.Response, limit: int) -> bytes:
    kept = bytearray()
    async for chunk in response.aiter_bytes():
        kept += chunk[: limit - len(kept)]
        if len(kept) >= limit:
            break
    return bytes(kept)


async def _file_chunks(path: Path, size: int, action: str) -> AsyncIterator[bytes]:
    sent = 0
    async with await anyio.open_file(path, "rb") as file:
        while chunk := await file.read(CHUNK_SIZE):
            sent += len(chunk)
            if sent > size:
                break
            yield chunk
    if sent != size:
        raise ForgeError(
            f"could not {action}: {path.name} changed size during the upload "
            f"({size} bytes expected); make sure nothing writes to it while it is published"
        )

"""Streamed downloads from package mirrors: retries, resume, failover, sha256 on the fly.

I/O shell: network through an `httpx.AsyncClient` the caller owns (tests give it a
`MockTransport` or point it at a server on 127.0.0.1), files through worker threads
(hashing and writing 1 MiB pieces never runs on the event loop). Memory stays flat:
one piece per download in flight.

The habits are the forge transport's (runner.forges.client): bounded attempts with
exponential backoff (injected `sleep`), `Retry-After` honoured up to the backoff cap,
timeouts on connect and on every read. Per file, mirrors are tried in order; on one
mirror a 5xx, 429, timeout or dropped connection is retried, resuming with `Range` from
the bytes already written when the server allows it (206); a 404 or other 4xx moves on
to the next mirror at once. When every mirror failed the error names each mirror and
what it did. Bodies are requested with `Accept-Encoding: identity`, so the sha256 is
the file's and `Range` offsets are file offsets.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit, urlunsplit

import anyio
import httpx

from runner.packages.exceptions import CorruptedPackage, DownloadFailed

#: Size of the pieces written and hashed.
CHUNK_SIZE = 1 << 20
_NEXT_MIRROR_STATUSES = frozenset(range(400, 500)) - {408, 429}

ProgressHook = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class DownloadPolicy:
    """How hard to try.

    Attributes:
        attempts: Tries per mirror for transient failures (5xx, 429, timeouts, drops).
        backoff_base: First wait between tries; doubles each time.
        backoff_max: Longest wait (also the cap on a server's `Retry-After`).
        connect_timeout: Seconds to connect.
        read_timeout: Seconds without a byte before a read gives up.
        parallel: Files downloaded at once.
    """

    attempts: int = 3
    backoff_base: float = 1.0
    backoff_max: float = 10.0
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    parallel: int = 4

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.parallel < 1:
            raise ValueError("attempts and parallel must be at least 1")

    @property
    def timeout(self) -> httpx.Timeout:
        """The httpx timeout for one request."""
        return httpx.Timeout(self.read_timeout, connect=self.connect_timeout)


@dataclass(frozen=True, slots=True)
class Fetched:
    """A finished download.

    Attributes:
        url: Where it came from.
        sha256: The content's sha256.
        size: Its size in bytes.
        etag: The server's ETag, if any.
        last_modified: The server's Last-Modified, if any.
    """

    url: str
    sha256: str
    size: int
    etag: str | None = None
    last_modified: str | None = None


@dataclass(frozen=True, slots=True)
class NotModified:
    """The server said the cached copy is current (304)."""

    url: str


def mirror_of(url: str) -> str:
    """The mirror part of a file URL, fit for messages: no credentials, no file name."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    path = parts.path.rsplit("/", 1)[0]
    return urlunsplit((parts.scheme, host, path, "", ""))


class _Retry(Exception):
    """A transient failure on one mirror: try it again after `wait` (None: backoff)."""

    def __init__(self, reason: str, wait: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.wait = wait


class _NextMirror(Exception):
    """This mirror cannot deliver the file: go to the next one."""

    def __init__(self, reason: str, *, corrupt: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.corrupt = corrupt


class _Sink:
    """The file being written and the hash of what it holds (for resuming).

    Tells `progress` of every byte written, and takes them back when it starts over.
    """

    def __init__(self, path: Path, progress: ProgressHook | None) -> None:
        self.path = path
        self.progress = progress
        self.handle: IO[bytes] | None = None
        self.hash = hashlib.sha256()
        self.size = 0

    def reset(self) -> None:
        self.close()
        if self.progress is not None and self.size:
            self.progress(-self.size)
        self.handle = self.path.open("wb")
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, chunk: bytes) -> None:
        if self.handle is None:
            self.handle = self.path.open("ab")
        self.handle.write(chunk)
        self.hash.update(chunk)
        self.size += len(chunk)
        if self.progress is not None:
            self.progress(len(chunk))

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None

    def discard(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)


@dataclass(slots=True)
class _Job:
    """One file's download across mirrors and attempts."""

    sink: _Sink
    max_bytes: int
    expected_sha256: str | None
    validators: tuple[str | None, str | None] | None


def _retry_after(response: httpx.Response, cap: float) -> float | None:
    value = response.headers.get("retry-after", "")
    if value.isdigit():
        return min(float(value), cap)
    return None


class Downloader:
    """Downloads files from mirrors (see the module docstring).

    Args:
        client: The HTTP client; the caller opens and closes it.
        policy: Attempts, backoff, timeouts, parallelism.
        sleep: Awaitable sleep; tests pass one that records waits.
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        policy: DownloadPolicy | None = None,
        *,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        self.client = client
        self.policy = policy or DownloadPolicy()
        self._sleep = sleep

    async def fetch(
        self,
        urls: Sequence[str],
        dest: Path,
        *,
        what: str,
        max_bytes: int,
        expected_sha256: str | None = None,
        progress: ProgressHook | None = None,
    ) -> Fetched:
        """Download one file to `dest`, trying `urls` (one per mirror) in order.

        Args:
            urls: The file's URL on each mirror.
            dest: Where to write (replaced; removed on failure).
            what: The file, for messages (`core/foo-1.0-1`, `core.db`).
            max_bytes: The most bytes accepted (the database's size for a package).
            expected_sha256: When given, a file with another sha256 is refused.
            progress: Told the number of new bytes after each piece.

        Returns:
            Where it came from and its sha256.

        Raises:
            CorruptedPackage: Every mirror served content with another sha256.
            DownloadFailed: Every mirror failed; the message says how.
        """
        result = await self._fetch(
            urls,
            dest,
            what=what,
            max_bytes=max_bytes,
            expected_sha256=expected_sha256,
            progress=progress,
            validators=None,
        )
        assert isinstance(result, Fetched)
        return result

    async def fetch_if_changed(
        self,
        urls: Sequence[str],
        dest: Path,
        *,
        what: str,
        max_bytes: int,
        etag: str | None,
        last_modified: str | None,
    ) -> Fetched | NotModified:
        """Like `fetch`, but a 304 to `If-None-Match`/`If-Modified-Since` means no download.

        Only the first mirror is asked conditionally (the validators are its own).
        """
        return await self._fetch(
            urls,
            dest,
            what=what,
            max_bytes=max_bytes,
            expected_sha256=None,
            progress=None,
            validators=(etag, last_modified),
        )

    async def fetch_optional(self, url: str, *, max_bytes: int) -> bytes | None:
        """A small file that may be absent (a `.sig`): its bytes, or None on 404.

        Raises:
            DownloadFailed: The server failed otherwise after the retries.
        """
        reason = ""
        for attempt in range(1, self.policy.attempts + 1):
            request = self.client.build_request(
                "GET", url, headers={"Accept-Encoding": "identity"}, timeout=self.policy.timeout
            )
            try:
                response = await self.client.send(request, stream=True)
                try:
                    status = response.status_code
                    if status in (404, 410):
                        return None
                    if response.is_success:
                        body = bytearray()
                        async for chunk in response.aiter_bytes():
                            body += chunk
                            if len(body) > max_bytes:
                                break
                        if len(body) <= max_bytes:
                            return bytes(body)
                        reason = f"sent more than {max_bytes} bytes"
                        break
                    reason = f"answered {status} {response.reason_phrase}"
                    if status in _NEXT_MIRROR_STATUSES:
                        break
                finally:
                    await response.aclose()
            except httpx.TransportError as exc:
                reason = _transport_reason(exc)
            if attempt < self.policy.attempts:
                await self._sleep(self._backoff(attempt, None))
        raise DownloadFailed(url.rsplit("/", 1)[-1], [(mirror_of(url), reason)])

    def _backoff(self, attempt: int, wait: float | None) -> float:
        if wait is not None:
            return wait
        return float(min(self.policy.backoff_base * 2 ** (attempt - 1), self.policy.backoff_max))

    async def _fetch(
        self,
        urls: Sequence[str],
        dest: Path,
        *,
        what: str,
        max_bytes: int,
        expected_sha256: str | None,
        progress: ProgressHook | None,
        validators: tuple[str | None, str | None] | None,
    ) -> Fetched | NotModified:
        failures: list[tuple[str, str]] = []
        corrupt_only = True
        job = _Job(_Sink(dest, progress), max_bytes, expected_sha256, validators)
        try:
            for index, url in enumerate(urls):
                if index:
                    job.validators = None  # the validators are the first mirror's own
                await anyio.to_thread.run_sync(job.sink.reset)
                try:
                    result = await self._from_mirror(job, url)
                except _NextMirror as exc:
                    failures.append((mirror_of(url), exc.reason))
                    corrupt_only = corrupt_only and exc.corrupt
                    continue
                if isinstance(result, NotModified):
                    await anyio.to_thread.run_sync(job.sink.discard)
                return result
        except BaseException:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(job.sink.discard)
            raise
        await anyio.to_thread.run_sync(job.sink.discard)
        if failures and corrupt_only:
            raise CorruptedPackage(
                f"{what} is corrupted on every mirror: "
                + "; ".join(f"{mirror} {reason}" for mirror, reason in failures)
                + "; the mirror may be broken or tampered with: try another mirror",
                package=what,
                url=urls[0],
            )
        raise DownloadFailed(what, failures)

    async def _from_mirror(self, job: _Job, url: str) -> Fetched | NotModified:
        reason = ""
        for attempt in range(1, self.policy.attempts + 1):
            try:
                return await self._attempt(job, url)
            except _Retry as exc:
                reason = exc.reason
                if attempt < self.policy.attempts:
                    await self._sleep(self._backoff(attempt, exc.wait))
        plural = "s" if self.policy.attempts > 1 else ""
        raise _NextMirror(f"{reason} ({self.policy.attempts} attempt{plural})")

    async def _attempt(self, job: _Job, url: str) -> Fetched | NotModified:
        sink = job.sink
        headers = {"Accept-Encoding": "identity"}
        if sink.size:
            headers["Range"] = f"bytes={sink.size}-"
        elif job.validators is not None:
            etag, modified = job.validators
            if etag:
                headers["If-None-Match"] = etag
            if modified:
                headers["If-Modified-Since"] = modified
        request = self.client.build_request(
            "GET", url, headers=headers, timeout=self.policy.timeout
        )
        try:
            response = await self.client.send(request, stream=True)
        except httpx.TransportError as exc:
            raise _Retry(_transport_reason(exc)) from exc
        try:
            if await self._check_status(job, response):
                return NotModified(url)
            await self._stream(job, response)
        finally:
            await response.aclose()
        await anyio.to_thread.run_sync(sink.close)
        digest = sink.hash.hexdigest()
        if job.expected_sha256 is not None and digest != job.expected_sha256:
            got = sink.size
            await anyio.to_thread.run_sync(sink.reset)
            raise _NextMirror(
                f"served {got} bytes with sha256 {digest[:16]}…, the database says "
                f"{job.expected_sha256[:16]}…",
                corrupt=True,
            )
        return Fetched(
            url=url,
            sha256=digest,
            size=sink.size,
            etag=response.headers.get("etag"),
            last_modified=response.headers.get("last-modified"),
        )

    async def _check_status(self, job: _Job, response: httpx.Response) -> bool:
        """Decide what a status means; True for "not modified", else go on reading."""
        sink = job.sink
        status = response.status_code
        if status == 304 and job.validators is not None and not sink.size:
            return True
        if status == 206 and sink.size:
            if not response.headers.get("content-range", "").startswith(f"bytes {sink.size}-"):
                await anyio.to_thread.run_sync(sink.reset)
                raise _Retry("answered a range other than the one asked")
        elif status == 200:
            if sink.size:  # the server ignored Range: start again
                await anyio.to_thread.run_sync(sink.reset)
        elif status == 429 or status >= 500:
            raise _Retry(
                f"answered {status} {response.reason_phrase}",
                _retry_after(response, self.policy.backoff_max),
            )
        elif status == 416 and sink.size:
            await anyio.to_thread.run_sync(sink.reset)
            raise _Retry("refused to resume (416)", 0.0)
        else:
            raise _NextMirror(f"answered {status} {response.reason_phrase}")
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and sink.size + int(declared) > job.max_bytes:
            raise _NextMirror(f"offered {sink.size + int(declared)} bytes, over {job.max_bytes}")
        return False

    async def _stream(self, job: _Job, response: httpx.Response) -> None:
        """Write the body in pieces of CHUNK_SIZE; keep what arrived before a failure."""
        sink = job.sink
        pending = bytearray()

        async def flush() -> None:
            if pending:
                piece = bytes(pending)
                pending.clear()
                await anyio.to_thread.run_sync(sink.write, piece)

        try:
            async for chunk in response.aiter_bytes():
                if sink.size + len(pending) + len(chunk) > job.max_bytes:
                    raise _NextMirror(f"sent more than {job.max_bytes} bytes")
                pending += chunk
                if len(pending) >= CHUNK_SIZE:
                    await flush()
        except httpx.TransportError as exc:
            await flush()  # what arrived is kept: the next attempt resumes after it
            raise _Retry(f"{_transport_reason(exc)} after {sink.size} bytes") from exc
        await flush()


def _transport_reason(exc: httpx.TransportError) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return f"timed out ({type(exc).__name__})"
    return f"connection failed ({type(exc).__name__})"

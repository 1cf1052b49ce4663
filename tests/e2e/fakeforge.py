"""A fake GitHub + GitLab for end-to-end tests, served by uvicorn on 127.0.0.1.

Start it with `run_fake_forge()` (sync context manager, server in a thread) or
`arun_fake_forge()` (async, server as a task on the running loop). Both yield a
`FakeForge`: seed repositories on it, arm faults, point isorunner at its URLs, then
inspect what it received. One server plays every host:

    {base}/github/api        api.github.com         (checked against the OpenAPI file)
    {base}/github/uploads    uploads.github.com
    {other}/github/codeload  codeload.github.com    (other = http://localhost:PORT)
    {base}/gitlab/api/v4     a GitLab instance

The tarball redirect goes to `localhost` instead of `127.0.0.1`: another host name, so
a client that forwards `Authorization` across hosts shows up in `requests()`.

This module is the I/O shell: the ASGI layer that records requests and plays faults,
and the server's lifetime. Routes live in fakeforge_github.py and fakeforge_gitlab.py,
the shared state in fakeforge_state.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from http import HTTPStatus
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tests.e2e import fakeforge_github, fakeforge_gitlab
from tests.e2e.fakeforge_openapi import DEFAULT_SPECS, OpenApiCheck
from tests.e2e.fakeforge_state import (
    SECRET_HEADERS,
    App,
    Fault,
    Forge,
    ForgeState,
    RecordedRequest,
    Release,
    Repo,
    StatusRecord,
    StoredFile,
)

__all__ = ["FakeForge", "Fault", "RecordedRequest", "arun_fake_forge", "run_fake_forge"]

# JSON request bodies up to this size are kept in the record; uploads are never read.
MAX_RECORDED_BODY = 1 << 20
STARTUP_TIMEOUT = 10.0
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]


def _redact(name: str, value: str) -> str:
    if name not in SECRET_HEADERS:
        return value
    scheme, _, rest = value.partition(" ")
    return f"{scheme} <redacted>" if rest else "<redacted>"


async def _drop(send: Send) -> None:
    # uvicorn's h11 cycle exposes its transport through its bound `send`; aborting it
    # closes the TCP connection with no answer at all, as a crashed proxy would.
    owner = getattr(send, "__self__", None)
    transport = getattr(owner, "transport", None)
    if not isinstance(transport, asyncio.Transport):
        raise TypeError("the drop fault needs uvicorn's h11 protocol (http='h11')")
    transport.abort()
    # Let uvicorn see the connection lost, so it does not try to answer 500.
    for _ in range(100):
        if getattr(owner, "disconnected", False):
            return
        await asyncio.sleep(0)


def _first_half(receive: Receive, headers: Mapping[str, str]) -> Receive:
    """A `receive` that ends the body after half of its declared length."""
    length = headers.get("content-length", "")
    left = int(length) // 2 if length.isdigit() else 0
    ended = False

    async def half() -> Message:
        nonlocal left, ended
        if ended:
            return {"type": "http.disconnect"}
        message = await receive()
        if message["type"] != "http.request":
            return message
        body = bytes(message.get("body", b""))
        if len(body) >= left or not message.get("more_body", False):
            ended = True
            return {"type": "http.request", "body": body[:left], "more_body": False}
        left -= len(body)
        return message

    return half


class RecordingApp:
    """ASGI layer around the routes: records each request, then plays an armed fault."""

    def __init__(self, state: ForgeState, app: ASGIApp) -> None:
        self.state = state
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Record the request, then answer it, or play the fault armed for it."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = str(scope["method"])
        path = bytes(scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        receive, body = await self._buffer_small_body(headers, receive)
        query = bytes(scope["query_string"]).decode("latin-1")
        index = self.state.record(
            RecordedRequest(
                method=method,
                path=path,
                query=query,
                host=headers.get("host", ""),
                headers={k: _redact(k, v) for k, v in headers.items()},
                json=body,
                had_authorization="authorization" in headers,
            )
        )
        fault = self.state.take_fault(method, path, query)
        if fault is None:

            async def noting_send(message: Message) -> None:
                if message["type"] == "http.response.start":
                    self.state.finish(index, int(message["status"]), None)
                await send(message)

            await self.app(scope, receive, noting_send)
            return
        if fault.after_handling:

            async def discard(message: Message) -> None:
                return None

            handled = _first_half(receive, headers) if fault.truncate else receive
            await self.app(scope, handled, discard)
        await self._play(fault, index, path, send)

    async def _buffer_small_body(
        self, headers: Mapping[str, str], receive: Receive
    ) -> tuple[Receive, object | None]:
        content_type = headers.get("content-type", "")
        length = headers.get("content-length", "")
        if "json" not in content_type or not length.isdigit() or int(length) > MAX_RECORDED_BODY:
            return receive, None
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return receive, None
            chunks.append(bytes(message.get("body", b"")))
            if not message.get("more_body", False):
                break
        raw = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": raw, "more_body": False}

        try:
            parsed: object | None = json.loads(raw) if raw else None
        except ValueError:
            parsed = {"<invalid json>": raw.decode("utf-8", "replace")}
        return replay, parsed

    async def _play(self, fault: Fault, index: int, path: str, send: Send) -> None:
        if fault.kind == "hang":
            self.state.finish(index, 0, "hang")
            await asyncio.sleep(fault.seconds)
            await _drop(send)
            return
        if fault.kind == "drop":
            self.state.finish(index, 0, "drop")
            await _drop(send)
            return
        body, content_type = fault.body, "application/json; charset=utf-8"
        if not body and path.startswith("/gitlab/") and fault.status == 429:
            body, content_type = b"Retry later\n", "text/plain"
        elif not body:
            body = json.dumps({"message": HTTPStatus(fault.status).phrase}).encode()
        head = {"content-type": content_type, **fault.headers, "content-length": str(len(body))}
        self.state.finish(index, fault.status, f"status {fault.status}")
        raw_headers = [(k.lower().encode(), v.encode()) for k, v in head.items()]
        await send({"type": "http.response.start", "status": fault.status, "headers": raw_headers})
        await send({"type": "http.response.body", "body": body})


def create_app(state: ForgeState, check: OpenApiCheck) -> ASGIApp:
    """Build the fake forge's ASGI app: the recording layer around one Starlette app."""

    async def route(request: Request) -> Response:
        raw = bytes(request.scope.get("raw_path") or request.url.path.encode()).decode("latin-1")
        areas: tuple[tuple[str, fakeforge_github.GitHubArea], ...] = (
            ("/github/api", "api"),
            ("/github/uploads", "uploads"),
            ("/github/codeload", "codeload"),
        )
        for prefix, area in areas:
            if raw.startswith(prefix + "/"):
                return await fakeforge_github.dispatch(
                    state, check, request, area, raw.removeprefix(prefix)
                )
        if raw.startswith("/gitlab/api/v4/"):
            return await fakeforge_gitlab.dispatch(
                state, request, raw.removeprefix("/gitlab/api/v4")
            )
        return Response("no forge lives here", 404)

    app = Starlette(routes=[Route("/{rest:path}", route, methods=METHODS)])
    return RecordingApp(state, app)


class FakeForge:
    """The handle a test holds: URLs, seeding, fault injection and inspection."""

    def __init__(self, state: ForgeState, port: int) -> None:
        self._state = state
        self.port = port
        self.base_url = state.base_url
        self.github_api_url = f"{state.base_url}/github/api"
        self.github_uploads_url = f"{state.base_url}/github/uploads"
        self.codeload_url = f"{state.other_host_url}/github/codeload"
        self.gitlab_api_url = f"{state.base_url}/gitlab/api/v4"

    # -- seeding -------------------------------------------------------------------------

    @property
    def codeload_token(self) -> str:
        """The token GitHub's archive redirects carry in their query string."""
        return self._state.codeload_token

    def seed_github(
        self,
        full_name: str,
        *,
        token: str,
        commits: Mapping[str, Path],
        refs: Mapping[str, str] | None = None,
    ) -> None:
        """Create a GitHub repository `owner/name` reachable with `token`.

        Args:
            full_name: "owner/name".
            token: The only token the API accepts for this repository.
            commits: Full 40-hex sha -> profile directory to archive at that commit, or a
                ready .tar.gz file to serve as it is (e.g. a hostile archive).
            refs: Branch and tag names -> sha, for `tarball/{ref}`.
        """
        self._state.seed(Repo("github", full_name, token, dict(commits), dict(refs or {})))

    def seed_gitlab(
        self,
        path: str,
        *,
        token: str,
        commits: Mapping[str, Path],
        refs: Mapping[str, str] | None = None,
        project_id: int | None = None,
    ) -> int:
        """Create a GitLab project `group/name`, addressable by path or id; return the id.

        `refs` (branch and tag names -> sha) also decides the `ref` a status gets when
        none is posted: a sha no ref points at gets 404 "References for commit Not Found".
        """
        number = project_id if project_id is not None else self._state.next_id()
        self._state.seed(Repo("gitlab", path, token, dict(commits), dict(refs or {}), number))
        return number

    def seed_github_app(
        self,
        app_id: str,
        *,
        public_key_pem: bytes,
        installation_id: int,
        repos: Sequence[str],
        client_id: str | None = None,
    ) -> None:
        """Install a GitHub App on seeded repositories.

        Its JWTs (RS256, `iss` = `app_id` or `client_id`, `exp` at most 10 minutes ahead)
        are checked against `public_key_pem`; the installation tokens it mints are
        accepted by `repos` besides their seeded token.
        """
        issuers = frozenset({app_id} | ({client_id} if client_id else set()))
        names = frozenset(name.lower() for name in repos)
        app = App(issuers, public_key_pem, installation_id, names)
        with self._state.locked():
            self._state.apps[installation_id] = app

    def minted_tokens(self, installation_id: int) -> list[str]:
        """Return the installation tokens minted so far for an installation."""
        with self._state.locked():
            return list(self._state.apps[installation_id].minted)

    @property
    def max_asset_size(self) -> int:
        """Largest GitHub release asset accepted, in bytes (default: just under 2 GiB)."""
        return self._state.max_asset_size

    @max_asset_size.setter
    def max_asset_size(self, value: int) -> None:
        self._state.max_asset_size = value

    # -- faults --------------------------------------------------------------------------

    def fail(
        self,
        method: str,
        path: str,
        *,
        status: int = 500,
        times: int = 1,
        retry_after: int | None = None,
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
        after_handling: bool = False,
    ) -> None:
        """Answer the next `times` requests matching `method` and `path` with `status`.

        Args:
            method: HTTP method, or "*".
            path: Glob (fnmatch) over the raw request path, e.g. "/github/api/*/statuses/*".
            status: Status code to answer, e.g. 500, 502, 429.
            times: How many matching requests get this answer.
            retry_after: Seconds for a `Retry-After` header.
            headers: Further response headers (e.g. GitLab's `RateLimit-Reset`).
            body: Response body; by default a JSON message (GitLab 429: "Retry later").
            after_handling: Handle the request for real first, then answer `status`.
        """
        head = dict(headers or {})
        if retry_after is not None:
            head["retry-after"] = str(retry_after)
        fault = Fault(method, path, "status", status, head, body, after_handling=after_handling)
        self._state.inject(fault, times)

    def rate_limit(
        self, method: str, path: str, *, reset: int | None = None, times: int = 1
    ) -> None:
        """Answer GitHub's primary rate-limit 403 (`x-ratelimit-remaining: 0`, reset epoch)."""
        epoch = reset if reset is not None else int(time.time()) + 60
        head = {
            "x-ratelimit-limit": "5000",
            "x-ratelimit-remaining": "0",
            "x-ratelimit-used": "5000",
            "x-ratelimit-reset": str(epoch),
            "x-ratelimit-resource": "core",
        }
        message = {"message": "API rate limit exceeded", "documentation_url": fakeforge_github.DOCS}
        self._state.inject(
            Fault(method, path, "status", 403, head, json.dumps(message).encode()), times
        )

    def fail_half_stored(
        self, method: str, path: str, *, status: int = 502, times: int = 1
    ) -> None:
        """Store only the first half of the next matching uploads, then answer `status`.

        What a proxy that gives up mid-upload leaves: a half file on GitLab, an `open`
        (partial) asset on GitHub, and a 5xx for the client.
        """
        fault = Fault(method, path, "status", status, after_handling=True, truncate=True)
        self._state.inject(fault, times)

    def outage(
        self, method: str, path: str, *, active: Callable[[], bool], status: int = 503
    ) -> None:
        """Answer `status` to every matching request while `active()` returns True.

        Tests give a predicate over their own (simulated) clock: a ten-minute outage
        costs no real time.
        """
        self._state.outage(Fault(method, path, "status", status), active)

    def delete_packages(self, name: str) -> int:
        """Delete every generic package file of a GitLab project, as a person can.

        Returns:
            How many files were deleted.
        """
        repo = self._state.repo("gitlab", name)
        if repo is None:
            raise KeyError(f"no gitlab project {name!r} was seeded")
        with self._state.locked():
            gone, repo.packages[:] = list(repo.packages), []
        for stored in gone:
            stored.path.unlink(missing_ok=True)
        return len(gone)

    def delete_release(self, forge: Forge, name: str, tag: str) -> int:
        """Delete every release of `tag` (and a GitHub release's assets), as a person can.

        Returns:
            How many releases were deleted.
        """
        repo = self._state.repo(forge, name)
        if repo is None:
            raise KeyError(f"no {forge} repository {name!r} was seeded")
        with self._state.locked():
            gone = [r for r in repo.releases if r.tag_name == tag]
            repo.releases[:] = [r for r in repo.releases if r.tag_name != tag]
        for release in gone:
            for asset in release.assets:
                asset.path.unlink(missing_ok=True)
        return len(gone)

    def drop(self, method: str, path: str, *, times: int = 1, after_handling: bool = False) -> None:
        """Close the connection of the next `times` matching requests without answering."""
        self._state.inject(Fault(method, path, "drop", after_handling=after_handling), times)

    def hang(
        self, method: str, path: str, *, seconds: float, times: int = 1, query: str = "*"
    ) -> None:
        """Answer nothing to the next `times` matching requests for `seconds`, then close.

        `query` is a glob over the raw query string (`name=sha256sums*` picks one
        GitHub asset upload).
        """
        self._state.inject(Fault(method, path, "hang", seconds=seconds, query=query), times)

    def pending_faults(self) -> list[tuple[Fault, int]]:
        """Return the faults not yet used up, with their remaining counts."""
        return self._state.pending_faults()

    # -- inspection ----------------------------------------------------------------------

    def requests(self, method: str | None = None, path: str | None = None) -> list[RecordedRequest]:
        """Return the requests received, oldest first, optionally filtered.

        Args:
            method: Keep only this method.
            path: Keep only raw paths matching this glob.
        """
        probe = Fault(method or "*", path or "*", "status")
        return [r for r in self._state.requests() if probe.matches(r.method, r.path)]

    def violations(self) -> list[str]:
        """Return how GitHub requests departed from the OpenAPI description."""
        return self._state.violations()

    def statuses(self, forge: Forge, name: str, sha: str) -> list[StatusRecord]:
        """Return the statuses accepted for a commit, in the order they were posted."""
        return self._state.snapshot(forge, name).statuses.get(sha, [])

    def releases(self, forge: Forge, name: str) -> list[Release]:
        """Return a repository's releases (GitHub: with assets; GitLab: with links)."""
        return self._state.snapshot(forge, name).releases

    def packages(self, name: str) -> list[StoredFile]:
        """Return the files uploaded to a GitLab project's generic package registry."""
        return self._state.snapshot("gitlab", name).packages


def _listen() -> socket.socket:
    # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on sockets whose proto says
    # TCP, so with proto 0 every answer on a reused connection waited ~40 ms (Nagle).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def _prepare(
    workdir: Path, specs: Sequence[Path]
) -> tuple[FakeForge, uvicorn.Server, socket.socket]:
    sock = _listen()
    port = int(sock.getsockname()[1])
    state = ForgeState(workdir, f"http://127.0.0.1:{port}", f"http://localhost:{port}")
    app = create_app(state, OpenApiCheck(specs))
    config = uvicorn.Config(
        app,
        http="h11",
        lifespan="off",
        log_level="warning",
        access_log=False,
        # A hung request is cancelled this long after the test leaves the context.
        timeout_graceful_shutdown=1,
    )
    return FakeForge(state, port), uvicorn.Server(config), sock


@contextlib.contextmanager
def run_fake_forge(
    workdir: Path | None = None, *, specs: Sequence[Path] = DEFAULT_SPECS
) -> Iterator[FakeForge]:
    """Serve a fake forge from a background thread for the duration of the block.

    Args:
        workdir: Where uploads and archives are written; a temporary directory if None.
        specs: The GitHub OpenAPI descriptions requests are checked against.

    Raises:
        RuntimeError: the server did not start within STARTUP_TIMEOUT seconds.
    """
    with contextlib.ExitStack() as stack:
        root = workdir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        forge, server, sock = _prepare(root, specs)
        thread = threading.Thread(
            target=lambda: asyncio.run(server.serve(sockets=[sock])), name="fakeforge", daemon=True
        )
        thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the fake forge did not start; see the uvicorn log above")
            time.sleep(0.01)
        try:
            yield forge
        finally:
            server.should_exit = True
            thread.join()
            sock.close()


@contextlib.asynccontextmanager
async def arun_fake_forge(
    workdir: Path | None = None, *, specs: Sequence[Path] = DEFAULT_SPECS
) -> AsyncIterator[FakeForge]:
    """Serve a fake forge as a task on the running event loop for the duration of the block.

    Args:
        workdir: Where uploads and archives are written; a temporary directory if None.
        specs: The GitHub OpenAPI descriptions requests are checked against.

    Raises:
        RuntimeError: the server did not start within STARTUP_TIMEOUT seconds.
    """
    with contextlib.ExitStack() as stack:
        root = workdir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        forge, server, sock = _prepare(root, specs)
        task = asyncio.create_task(server.serve(sockets=[sock]))
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not server.started:
            if task.done():
                task.result()
            if time.monotonic() > deadline:
                raise RuntimeError("the fake forge did not start; see the uvicorn log above")
            await asyncio.sleep(0.01)
        try:
            yield forge
        finally:
            server.should_exit = True
            await task
            sock.close()

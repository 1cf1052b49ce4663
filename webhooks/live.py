"""Live build logs over server-sent events: one tailer per build, shared by followers.

I/O shell around a pure core (`start_offset`, `sse_message`, `end_message`). While at
least one client follows a build, one tailer task polls that build's log file, reads
what was appended (whole lines only, one bounded block at a time) and keeps the most
recent chunks in a small window; every follower of the build sends from that window, so a hundred
followers cost one file poll and mostly the same pre-encoded bytes. A follower that
is behind the window (it resumed from an old offset, or it is slow) reads the file
itself, block by block. Nothing ever holds a whole log.

Event ids are byte offsets: the id of a message is the offset just after its last
line, so a client that reconnects with `Last-Event-ID: N` gets exactly the lines that
start at offset N or later, none twice. When the build reaches a final state, the
tailer reads the file to its end and followers send the rest, then an `end` event
whose data is `{"state": ..., "detail": ...}`.

A stream also ends after `max_stream_seconds` without an `end` event; browsers
reconnect by themselves with `Last-Event-ID`, so this only bounds how long a
connection (and a graceful shut-down of the server) can be held.
"""

from __future__ import annotations

import contextlib
import json
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import anyio
import anyio.abc
import structlog

from webhooks import logfile
from webhooks.build import BuildCatalog, BuildLogSource, BuildRecord
from webhooks.exceptions import InvalidParameter

log = structlog.get_logger()

RETRY_MS: Final = 1000
"""How long a browser waits before reconnecting a dropped stream."""
_MAX_OFFSET_DIGITS: Final = 18


def start_offset(last_event_id: str | None, after: str | None) -> int:
    """Return where a stream starts: `Last-Event-ID`, else `?after=`, else the log's start.

    A reconnecting browser sends `Last-Event-ID`; a page sends `after`, the offset of
    the log it already shows. Empty values count as absent.

    Raises:
        InvalidParameter: A value is not a byte offset (a whole number).
    """
    resume = _offset(last_event_id, "Last-Event-ID")
    if resume is not None:
        return resume
    return _offset(after, "after") or 0


def _offset(raw: str | None, name: str) -> int | None:
    if raw is None or raw == "":
        return None
    if not (raw.isascii() and raw.isdigit()) or len(raw) > _MAX_OFFSET_DIGITS:
        raise InvalidParameter(f"{name} must be a byte offset (a whole number)")
    return int(raw)


def sse_message(end: int, data: bytes) -> bytes:
    """Encode whole log lines as one SSE message whose id is the offset `end`.

    Each line becomes one `data:` field (the client joins them with newlines). A
    carriage return would end an SSE line early, so it is dropped from log lines.
    """
    text = data.decode("utf-8", "replace")
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    fields = [f"id: {end}\n"]
    fields.extend(f"data: {line.replace(chr(13), '')}\n" for line in lines)
    fields.append("\n")
    return "".join(fields).encode("utf-8")


def end_message(end: int, record: BuildRecord | None) -> bytes:
    """Encode the final `end` event: the build's state and detail."""
    payload = (
        {"state": str(record.state), "detail": record.detail}
        if record is not None
        else {"state": "unknown", "detail": "the build is no longer stored"}
    )
    return f"event: end\nid: {end}\ndata: {json.dumps(payload)}\n\n".encode()


@dataclass(frozen=True, slots=True)
class _Chunk:
    start: int
    end: int
    data: bytes
    message: bytes


class _Tailer:
    """Follows one build's log file for as long as anybody follows the build."""

    def __init__(
        self,
        build_id: int,
        *,
        logs: BuildLogSource | None,
        catalog: BuildCatalog,
        poll_seconds: float,
        state_seconds: float,
        window_bytes: int,
    ) -> None:
        self.build_id = build_id
        self._logs = logs
        self._catalog = catalog
        self._poll = poll_seconds
        self._state_every = state_seconds
        self._window_bytes = window_bytes
        self.window: deque[_Chunk] = deque()
        self._held = 0
        self.offset = 0
        self.followers = 0
        self.ready = anyio.Event()
        self.changed = anyio.Event()
        self.done = False
        self.final: BuildRecord | None = None
        self.ended = False  # reached a final state (as opposed to failing)

    @property
    def window_start(self) -> int:
        """The offset of the oldest byte still in the window."""
        return self.window[0].start if self.window else self.offset

    def path(self) -> Path | None:
        """The log file, if the build has one yet."""
        return self._logs.existing(self.build_id) if self._logs is not None else None

    def _publish(self, data: bytes) -> None:
        start, self.offset = self.offset, self.offset + len(data)
        self.window.append(_Chunk(start, self.offset, data, sse_message(self.offset, data)))
        self._held += len(data)
        while len(self.window) > 1 and self._held > self._window_bytes:
            self._held -= len(self.window.popleft().data)
        self._wake()

    def _wake(self) -> None:
        self.changed.set()
        self.changed = anyio.Event()

    async def _read(self, *, final: bool) -> bool:
        path = self.path()
        size = await anyio.to_thread.run_sync(logfile.file_size, path)
        if path is None or size <= self.offset:
            return False
        data = await anyio.to_thread.run_sync(
            lambda: logfile.read_lines(path, self.offset, size, final=final)
        )
        if data:
            self._publish(data)
        return len(data) == logfile.BLOCK

    async def run(self) -> None:
        """Poll the file and the build's state until nobody follows or it ends."""
        try:
            self.offset = await anyio.to_thread.run_sync(logfile.aligned_end, self.path())
            self.ready.set()
            check_at = 0.0
            while self.followers > 0:
                more = await self._read(final=False)
                if anyio.current_time() >= check_at:
                    check_at = anyio.current_time() + self._state_every
                    record = await self._catalog.get(self.build_id)
                    if record is None or record.state.is_final:
                        # The runner writes the last line before it records the
                        # final state, so the file is complete now.
                        while await self._read(final=True):
                            pass
                        self.final, self.ended = record, True
                        return
                if not more:
                    await anyio.sleep(self._poll)
        except Exception:
            # A tailer must not take the app's task group down. Its followers end
            # their streams without `end`, and browsers reconnect.
            log.exception("log_tailer_failed", build_id=self.build_id)
        finally:
            self.done = True
            self.ready.set()
            self._wake()


def _window_messages(tailer: _Tailer, sent: int) -> Iterator[tuple[bytes, int]]:
    """Yield the window's messages after offset `sent`, each with its end offset."""
    for chunk in list(tailer.window):
        if chunk.end <= sent:
            continue
        if chunk.start == sent:
            yield chunk.message, chunk.end  # the bytes every follower shares
        else:
            yield sse_message(chunk.end, chunk.data[sent - chunk.start :]), chunk.end
        sent = chunk.end


class LogFollowers:
    """Every live log stream of the app: the tailers and the followers they serve.

    Args:
        catalog: Where each followed build's state is read.
        logs: Where build log files are found; None streams empty logs.
        poll_seconds: How often a tailer checks its file for new lines.
        state_seconds: How often a tailer checks whether its build has ended.
        window_bytes: How much recent log each tailer keeps for its followers.
        heartbeat_seconds: How long a stream may stay silent before a comment is sent
            (keeps proxies from closing it).
        max_stream_seconds: How long one stream lasts before the client is asked to
            reconnect (with `Last-Event-ID`).
    """

    def __init__(
        self,
        catalog: BuildCatalog,
        logs: BuildLogSource | None,
        *,
        poll_seconds: float = 0.25,
        state_seconds: float = 0.5,
        window_bytes: int = 1024 * 1024,
        heartbeat_seconds: float = 15.0,
        max_stream_seconds: float = 30.0,
    ) -> None:
        self._catalog = catalog
        self._logs = logs
        self._poll = poll_seconds
        self._state_every = state_seconds
        self._window = window_bytes
        self._heartbeat = heartbeat_seconds
        self._max_stream = max_stream_seconds
        self._tailers: dict[int, _Tailer] = {}
        self._group: anyio.abc.TaskGroup | None = None

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Own the tailer tasks for the app's lifetime (entered by the lifespan)."""
        async with anyio.create_task_group() as group:
            self._group = group
            try:
                yield
            finally:
                self._group = None
                group.cancel_scope.cancel()

    @property
    def tailers(self) -> int:
        """How many builds are being tailed now."""
        return len(self._tailers)

    def _tailer(self, build_id: int) -> _Tailer:
        tailer = self._tailers.get(build_id)
        if tailer is not None and not tailer.done:
            tailer.followers += 1
            return tailer
        if self._group is None:
            msg = "LogFollowers.running() must be entered before following a log"
            raise RuntimeError(msg)
        tailer = _Tailer(
            build_id,
            logs=self._logs,
            catalog=self._catalog,
            poll_seconds=self._poll,
            state_seconds=self._state_every,
            window_bytes=self._window,
        )
        tailer.followers = 1
        self._tailers[build_id] = tailer

        async def run() -> None:
            try:
                await tailer.run()
            finally:
                if self._tailers.get(build_id) is tailer:
                    del self._tailers[build_id]

        self._group.start_soon(run)
        return tailer

    @staticmethod
    async def _catch_up(tailer: _Tailer, sent: int) -> bytes:
        """Read the lines after `sent` that are no longer in the tailer's window."""
        path = tailer.path()
        if path is None:
            return b""
        return await anyio.to_thread.run_sync(logfile.read_lines, path, sent, tailer.window_start)

    async def follow(self, build_id: int, start: int) -> AsyncGenerator[bytes, None]:
        """Yield the SSE stream of a build's log from byte offset `start`.

        Args:
            build_id: A stored build.
            start: The offset to resume from (the last event id the client saw, or
                the offset up to which the page already shows the log).
        """
        tailer = self._tailer(build_id)
        try:
            await tailer.ready.wait()
            yield f"retry: {RETRY_MS}\n\n".encode()
            sent = max(0, min(start, tailer.offset))
            deadline = anyio.current_time() + self._max_stream
            while True:
                changed = tailer.changed
                if sent < tailer.window_start:
                    data = await self._catch_up(tailer, sent)
                    if not data:  # the file shrank under us: skip to the window
                        sent = tailer.window_start
                        continue
                    sent += len(data)
                    yield sse_message(sent, data)
                    continue
                for message, end in _window_messages(tailer, sent):
                    yield message
                    sent = end
                if sent < tailer.window_start:
                    continue
                if tailer.done and sent >= tailer.offset:
                    if tailer.ended:
                        yield end_message(sent, tailer.final)
                    return
                now = anyio.current_time()
                if now >= deadline:
                    return
                with anyio.move_on_after(min(self._heartbeat, deadline - now)) as scope:
                    await changed.wait()
                if scope.cancelled_caught and anyio.current_time() < deadline:
                    yield b": keep-alive\n\n"
        finally:
            tailer.followers -= 1

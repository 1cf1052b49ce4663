"""`QmpClient`: the QEMU Machine Protocol session of a boot test (events, screendump, quit).

Does I/O (a Unix socket). QMP is one JSON object per line
(docs/interop/qmp-spec.rst): a greeting, then `qmp_capabilities`, then commands each
answered by `{"return": ...}` or `{"error": ...}`, with asynchronous events (they carry
"event") in between. One task reads every line: answers complete the pending command,
events go to a bounded queue. Lines are bounded, since the guest drives QEMU. Callers
bound the time with `asyncio.timeout`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from sandbox.exceptions import QmpError

_LINE_LIMIT = 1 << 16
_MAX_EVENTS = 256


class QmpClient:
    """A QMP session: `open` the socket, then `handshake` once QEMU serves it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._greeting: asyncio.Future[dict[str, Any]] = asyncio.Future()
        self._reply: asyncio.Future[dict[str, Any]] | None = None
        self._events: asyncio.Queue[dict[str, Any]] = asyncio.Queue(_MAX_EVENTS)
        self._closed: QmpError | None = None
        self._pump = asyncio.ensure_future(self._read_all())

    @classmethod
    async def open(cls, path: str) -> QmpClient:
        """Connect to QEMU's QMP socket (QEMU may not serve it yet; see `handshake`).

        Args:
            path: The socket's path (may go through /proc/self/fd/N, see `sandbox.guest`).

        Raises:
            QmpError: No connection.
        """
        try:
            reader, writer = await asyncio.open_unix_connection(path, limit=_LINE_LIMIT)
        except OSError as exc:
            raise QmpError(f"cannot connect to QEMU's QMP socket: {exc}") from exc
        return cls(reader, writer)

    async def handshake(self) -> None:
        """Wait for QEMU's greeting and leave capabilities negotiation mode.

        Raises:
            QmpError: QEMU closed the socket or refused.
        """
        greeting = await asyncio.shield(self._greeting)
        if "QMP" not in greeting:
            raise QmpError("QEMU's QMP socket sent no greeting")
        await self.execute("qmp_capabilities")

    async def execute(self, command: str, arguments: dict[str, Any] | None = None) -> object:
        """Run one command and return its "return" value.

        Raises:
            QmpError: QEMU answered with an error or closed the socket.
        """
        if self._closed is not None:
            raise self._closed
        if self._reply is not None:
            raise QmpError(f"QMP {command}: another command is still running")
        message: dict[str, Any] = {"execute": command}
        if arguments:
            message["arguments"] = arguments
        self._reply = asyncio.get_running_loop().create_future()
        try:
            self._writer.write(json.dumps(message).encode() + b"\n")
            await self._writer.drain()
            reply = await asyncio.shield(self._reply)
        except OSError as exc:
            raise QmpError(f"QMP {command}: cannot send: {exc}") from exc
        finally:
            self._reply = None
        if "error" in reply:
            error = reply["error"]
            desc = error.get("desc", "") if isinstance(error, dict) else str(error)
            raise QmpError(f"QMP {command} failed: {str(desc)[:200]}")
        return reply.get("return")

    async def next_event(self) -> dict[str, Any]:
        """The next asynchronous event (e.g. {"event": "SHUTDOWN", "data": {...}}).

        Raises:
            QmpError: The socket closed and no event is left.
        """
        if self._events.empty() and self._closed is not None:
            raise self._closed
        event = await self._events.get()
        if "event" not in event:  # the end-of-stream marker put by _read_all
            raise self._closed or QmpError("QEMU closed its QMP socket")
        return event

    async def _read_all(self) -> None:
        reason = QmpError("QEMU closed its QMP socket")
        try:
            while True:
                message = await self._read()
                if "event" in message:
                    if not self._events.full():
                        self._events.put_nowait(message)
                elif not self._greeting.done():
                    self._greeting.set_result(message)
                elif self._reply is not None and not self._reply.done():
                    self._reply.set_result(message)
        except QmpError as exc:
            reason = exc
        finally:
            self._closed = reason
            for future in (self._greeting, self._reply):
                if future is not None and not future.done():
                    future.set_exception(reason)
                    future.exception()  # retrieved: a waiter, if any, still gets it raised
            with contextlib.suppress(asyncio.QueueFull):
                self._events.put_nowait({})

    async def _read(self) -> dict[str, Any]:
        try:
            line = await self._reader.readline()
        except (OSError, ValueError) as exc:
            raise QmpError(f"no answer on QEMU's QMP socket: {exc!r}") from exc
        if not line:
            raise QmpError("QEMU closed its QMP socket")
        try:
            data = json.loads(line)
        except ValueError as exc:
            raise QmpError("QEMU sent a QMP line that is not JSON") from exc
        if not isinstance(data, dict):
            raise QmpError("QEMU sent a QMP message that is not an object")
        return data

    async def close(self) -> None:
        """Close the session (QEMU stays up unless it was told to quit)."""
        self._pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._pump
        self._writer.close()
        # QEMU may have exited already (after "quit"): the socket is then reset.
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()
        if not self._greeting.done():
            self._greeting.cancel()

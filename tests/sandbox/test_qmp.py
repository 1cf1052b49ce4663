"""Tests for sandbox.qmp against a scripted QMP server on a real Unix socket."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from sandbox.exceptions import QmpError
from sandbox.qmp import QmpClient

GREETING = {"QMP": {"version": {"qemu": {"major": 10}}, "capabilities": []}}
Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def _send(writer: asyncio.StreamWriter, message: object) -> None:
    writer.write(json.dumps(message).encode() + b"\r\n")


async def _command(reader: asyncio.StreamReader) -> dict[str, object]:
    message = json.loads(await reader.readline())
    assert isinstance(message, dict)
    return message


@asynccontextmanager
async def _server(tmp_path: Path, script: Script) -> AsyncIterator[str]:
    path = str(tmp_path / "qmp.sock")

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await script(reader, writer)
            await writer.drain()
        finally:
            writer.close()

    server = await asyncio.start_unix_server(handle, path)
    async with server:
        yield path


async def _negotiate(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    _send(writer, GREETING)
    assert (await _command(reader))["execute"] == "qmp_capabilities"
    _send(writer, {"return": {}})


@pytest.mark.anyio
async def test_qmp_client_runs_commands_and_skips_events_between(tmp_path: Path) -> None:
    """An event arriving before a command's answer is queued; the answer is returned."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _negotiate(reader, writer)
        command = await _command(reader)
        assert command == {
            "execute": "screendump",
            "arguments": {"filename": "/build/work/screen.png", "format": "png"},
        }
        _send(writer, {"event": "RESUME", "timestamp": {}})
        _send(writer, {"return": {}})
        await _command(reader)
        _send(writer, {"return": {"status": "running"}})
        await reader.read()

    async with _server(tmp_path, script) as path:
        qmp = await QmpClient.open(path)
        await qmp.handshake()
        args = {"filename": "/build/work/screen.png", "format": "png"}
        assert await qmp.execute("screendump", args) == {}
        assert await qmp.execute("query-status") == {"status": "running"}
        assert (await qmp.next_event())["event"] == "RESUME"
        await qmp.close()


@pytest.mark.anyio
async def test_qmp_client_raises_qemus_error(tmp_path: Path) -> None:
    """An error answer becomes QmpError with QEMU's description."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _negotiate(reader, writer)
        await _command(reader)
        _send(writer, {"error": {"class": "GenericError", "desc": "no display"}})
        await reader.read()

    async with _server(tmp_path, script) as path:
        qmp = await QmpClient.open(path)
        await qmp.handshake()
        with pytest.raises(QmpError, match="screendump failed: no display"):
            await qmp.execute("screendump", {"filename": "/x"})
        await qmp.close()


@pytest.mark.anyio
async def test_qmp_client_reports_a_closed_socket_to_command_and_event_waiters(
    tmp_path: Path,
) -> None:
    """When QEMU goes away, a pending command and the event reader both get QmpError."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _negotiate(reader, writer)
        _send(writer, {"event": "SHUTDOWN", "data": {"guest": True, "reason": "guest-reset"}})
        await _command(reader)

    async with _server(tmp_path, script) as path:
        qmp = await QmpClient.open(path)
        await qmp.handshake()
        with pytest.raises(QmpError, match="closed"):
            await qmp.execute("quit")
        event = await qmp.next_event()
        assert event["data"] == {"guest": True, "reason": "guest-reset"}
        with pytest.raises(QmpError, match="closed"):
            await qmp.next_event()
        await qmp.close()


@pytest.mark.anyio
async def test_qmp_client_refuses_garbage_and_overlong_lines(tmp_path: Path) -> None:
    """A line that is not a JSON object, or longer than the limit, ends the session."""
    for garbage in (b"[1, 2]\n", b"not json\n", b"x" * 100_000 + b"\n"):

        async def script(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter, garbage: bytes = garbage
        ) -> None:
            writer.write(garbage)
            await reader.read()

        async with _server(tmp_path, script) as path:
            qmp = await QmpClient.open(path)
            with pytest.raises(QmpError):
                await qmp.handshake()
            await qmp.close()


@pytest.mark.anyio
async def test_qmp_client_open_fails_clearly_without_a_socket(tmp_path: Path) -> None:
    """No socket: QmpError saying it cannot connect."""
    with pytest.raises(QmpError, match="cannot connect"):
        await QmpClient.open(str(tmp_path / "missing.sock"))

"""Tests that `ForgeTransport.upload_file` streams: flat memory and a fixed length on the wire."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import anyio
import httpx
import pytest
from anyio.abc import SocketStream

from runner.forges.client import CHUNK_SIZE, ForgeTransport
from runner.forges.request import ForgeRequest
from tests.runner.forges.conftest import FakeClock

pytestmark = pytest.mark.anyio


class CountingTransport(httpx.AsyncBaseTransport):
    """Consumes the request body piece by piece, keeping only counts."""

    def __init__(self) -> None:
        self.total = 0
        self.largest_piece = 0
        self.content_length = ""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Read the streamed body without keeping it and answer 201."""
        self.content_length = request.headers["Content-Length"]
        assert isinstance(request.stream, httpx.AsyncByteStream)
        async for piece in request.stream:
            self.total += len(piece)
            self.largest_piece = max(self.largest_piece, len(piece))
        return httpx.Response(201)


async def test_upload_file_memory_stays_flat_for_a_large_file(
    tmp_path: Path, clock: FakeClock
) -> None:
    """A 256 MiB (sparse) file goes out in 1 MiB pieces; Python memory peaks far below it."""
    size = 256 * 1024 * 1024
    path = tmp_path / "large.iso"
    with path.open("wb") as handle:
        handle.truncate(size)
    counting = CountingTransport()
    transport = ForgeTransport(
        httpx.AsyncClient(transport=counting), sleep=clock.sleep, clock=clock
    )
    request = ForgeRequest("PUT", "https://forge.example.com/upload", action="upload")
    tracemalloc.start()
    try:
        response = await transport.upload_file(request, path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert response.status == 201
    assert counting.total == size
    assert counting.content_length == str(size)
    assert counting.largest_piece <= CHUNK_SIZE
    assert peak < 16 * 1024 * 1024


async def test_upload_file_sends_content_length_not_chunks_on_the_wire(
    tmp_path: Path, clock: FakeClock
) -> None:
    """Over a real loopback socket the request has a Content-Length and no chunked coding."""
    data = bytes(range(256)) * 12_000
    path = tmp_path / "image.iso"
    path.write_bytes(data)
    received: dict[str, bytes] = {}

    async def serve(stream: SocketStream) -> None:
        buffer = b""
        while b"\r\n\r\n" not in buffer:
            buffer += await stream.receive()
        head, _, body = buffer.partition(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        while len(body) < length:
            body += await stream.receive()
        received["head"] = head.lower()
        received["body"] = body
        await stream.send(
            b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
        )
        await stream.aclose()

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    # S610 is about Django's QuerySet.extra; this is anyio's typed attribute lookup.
    port = listener.extra(anyio.abc.SocketAttribute.local_port)  # noqa: S610
    async with listener, httpx.AsyncClient() as http, anyio.create_task_group() as group:
        group.start_soon(listener.serve, serve)
        transport = ForgeTransport(http, sleep=clock.sleep, clock=clock)
        request = ForgeRequest(
            "POST",
            f"http://127.0.0.1:{port}/assets?name=image.iso",
            headers={"Content-Type": "application/octet-stream"},
            action="upload image.iso",
        )
        response = await transport.upload_file(request, path)
        group.cancel_scope.cancel()
    assert response.status == 201
    assert f"content-length: {len(data)}".encode() in received["head"]
    assert b"transfer-encoding" not in received["head"]
    assert received["body"] == data

"""Tests for webhooks.body: a request body read under a size cap."""

from __future__ import annotations

from collections.abc import AsyncGenerator

import pytest
from starlette.requests import ClientDisconnect

from webhooks.body import read_capped
from webhooks.exceptions import MalformedPayload, PayloadTooLarge

pytestmark = pytest.mark.anyio


class Chunks:
    """A body stream of `count` chunks of `size` bytes that records how many were read."""

    def __init__(self, count: int, size: int = 10, *, disconnect: bool = False) -> None:
        self.count, self.size, self.disconnect = count, size, disconnect
        self.pulled = 0

    async def stream(self) -> AsyncGenerator[bytes, None]:
        """Yield the chunks, then end the body or (with `disconnect`) lose the client."""
        for _ in range(self.count):
            self.pulled += 1
            yield b"x" * self.size
        if self.disconnect:
            raise ClientDisconnect


async def test_read_capped_returns_a_body_within_the_limit() -> None:
    """A body at the limit is read whole."""
    body = Chunks(3)
    assert await read_capped("30", body.stream(), 30) == b"x" * 30


async def test_read_capped_refuses_a_declared_length_over_the_limit_unread() -> None:
    """A Content-Length over the limit is refused before a single chunk is read."""
    body = Chunks(3)
    with pytest.raises(PayloadTooLarge, match="over the 20-byte limit"):
        await read_capped("30", body.stream(), 20)
    assert body.pulled == 0


async def test_read_capped_refuses_a_chunked_body_at_the_first_chunk_past_the_limit() -> None:
    """Without a length, reading stops at the chunk that passes the limit."""
    body = Chunks(1000)
    with pytest.raises(PayloadTooLarge):
        await read_capped(None, body.stream(), 25)
    assert body.pulled == 3


@pytest.mark.parametrize("declared", ["", "-1", "1e3", "\uff11\uff12"])
async def test_read_capped_refuses_a_length_that_is_not_a_number(declared: str) -> None:
    """A Content-Length that is not plain ASCII digits is malformed."""
    with pytest.raises(MalformedPayload, match="not a number"):
        await read_capped(declared, Chunks(1).stream(), 100)


async def test_read_capped_reports_a_client_that_went_away() -> None:
    """A body cut short by the client is malformed, not a server error."""
    with pytest.raises(MalformedPayload, match="disconnected"):
        await read_capped(None, Chunks(2, disconnect=True).stream(), 100)

"""A request body read under a size cap, refused as soon as it is known to be too big.

I/O on the stream it is given (no `Request`: `webhooks.routes` passes the declared
`Content-Length` and `request.stream()`). Starlette's own `max_body_size` answers in
plain text and outside the app's exception handlers, so the equivalent is done here.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing

from starlette.requests import ClientDisconnect

from webhooks.exceptions import MalformedPayload, PayloadTooLarge


async def read_capped(
    declared: str | None, stream: AsyncGenerator[bytes, None], limit: int
) -> bytes:
    """Read the whole body from `stream`, refusing it once it is known to exceed `limit`.

    Args:
        declared: The `Content-Length` header, if any: a value over the limit is
            refused before anything is read.
        stream: The body's chunks; a chunked body is refused at the first chunk that
            passes the limit. It is closed however reading ends.
        limit: The most bytes accepted.

    Raises:
        MalformedPayload: `Content-Length` is not a number, or the client went away
            before the body was complete.
        PayloadTooLarge: The body is over `limit` bytes.
    """
    if declared is not None:
        if not (declared.isascii() and declared.isdigit()):
            raise MalformedPayload("Content-Length is not a number")
        # Shortest form first: int() of thousands of digits raises instead of answering.
        digits = declared.lstrip("0") or "0"
        if len(digits) > len(str(limit)) or int(digits) > limit:
            raise PayloadTooLarge(f"the body is over the {limit}-byte limit")
    chunks: list[bytes] = []
    size = 0
    try:
        async with aclosing(stream):
            async for chunk in stream:
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"the body is over the {limit}-byte limit")
                chunks.append(chunk)
    except ClientDisconnect as exc:
        raise MalformedPayload("the client disconnected before the body was complete") from exc
    return b"".join(chunks)

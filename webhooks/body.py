"""Request bodies read under a size cap, a time limit, and a budget for all in flight.

I/O on the stream it is given (no `Request`: `webhooks.routes` passes the declared
`Content-Length` and `request.stream()`). Starlette's own `max_body_size` answers in
plain text and outside the app's exception handlers, so the equivalent is done here.

`BodyBudget` bounds the bytes of all bodies being read or held at once: a delivery
takes its declared length (or its chunks, as they come) from the budget before they
are read, and gives them back when its request ends. Past the budget a delivery is
answered 503 with `Retry-After` before its body is read, so that many slow senders of
large bodies (only GitHub's HMAC needs the body before the sender is known) cannot
push the process past a bounded memory figure; the forges redeliver on 503. A body
that does not arrive within the time limit is answered 408, so that a slow sender
cannot hold its share of the budget for long (GitHub and GitLab give up after 10 s).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Iterator
from contextlib import aclosing

import anyio
from starlette.requests import ClientDisconnect

from webhooks.exceptions import BodiesInFlight, BodyTimeout, MalformedPayload, PayloadTooLarge


class BodyBudget:
    """The bytes all request bodies in flight may hold together (on the event loop).

    Args:
        limit: The most bytes reserved at once.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0

    @contextlib.contextmanager
    def hold(self) -> Iterator[BodyHold]:
        """A hold on the budget for one request; what it took is given back at exit."""
        hold = BodyHold(self)
        try:
            yield hold
        finally:
            self.in_flight -= hold.taken


class BodyHold:
    """What one request took from a `BodyBudget`."""

    def __init__(self, budget: BodyBudget) -> None:
        self._budget = budget
        self.taken = 0

    def take(self, size: int) -> None:
        """Take `size` more bytes, or refuse.

        Raises:
            BodiesInFlight: The budget has no room for them.
        """
        budget = self._budget
        if budget.in_flight + size > budget.limit:
            raise BodiesInFlight(
                "too many deliveries are being received at once; redeliver in a few seconds"
            )
        budget.in_flight += size
        self.taken += size


def declared_length(declared: str | None, limit: int) -> int | None:
    """The `Content-Length` as a number, None when absent.

    Raises:
        MalformedPayload: It is not a number.
        PayloadTooLarge: It is over `limit`.
    """
    if declared is None:
        return None
    if not (declared.isascii() and declared.isdigit()):
        raise MalformedPayload("Content-Length is not a number")
    # Shortest form first: int() of thousands of digits raises instead of answering.
    digits = declared.lstrip("0") or "0"
    if len(digits) > len(str(limit)) or int(digits) > limit:
        raise PayloadTooLarge(f"the body is over the {limit}-byte limit")
    return int(digits)


async def read_capped(
    declared: str | None,
    stream: AsyncGenerator[bytes, None],
    limit: int,
    *,
    hold: BodyHold | None = None,
    seconds: float | None = None,
) -> bytes:
    """Read the whole body from `stream`, refusing it once it is known to exceed `limit`.

    Args:
        declared: The `Content-Length` header, if any: a value over the limit is
            refused before anything is read.
        stream: The body's chunks; a chunked body is refused at the first chunk that
            passes the limit. It is closed however reading ends.
        limit: The most bytes accepted.
        hold: Where the body's bytes are taken from the in-flight budget: its declared
            length before reading, else each chunk before it is kept.
        seconds: How long the whole body may take to arrive; None waits.

    Raises:
        MalformedPayload: `Content-Length` is not a number, or the client went away
            before the body was complete.
        PayloadTooLarge: The body is over `limit` bytes.
        BodiesInFlight: The in-flight budget has no room for it.
        BodyTimeout: It did not arrive within `seconds`.
    """
    length = declared_length(declared, limit)
    if hold is not None and length is not None:
        hold.take(length)
    chunks: list[bytes] = []
    size = 0
    try:
        with anyio.fail_after(seconds):
            async with aclosing(stream):
                async for chunk in stream:
                    size += len(chunk)
                    if size > limit:
                        raise PayloadTooLarge(f"the body is over the {limit}-byte limit")
                    if hold is not None and length is None:
                        hold.take(len(chunk))
                    chunks.append(chunk)
    except ClientDisconnect as exc:
        raise MalformedPayload("the client disconnected before the body was complete") from exc
    except TimeoutError as exc:
        raise BodyTimeout(
            f"the body did not arrive within {seconds:g} s; forges send theirs at once"
        ) from exc
    return b"".join(chunks)

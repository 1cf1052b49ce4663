"""Line splitting of the container's output into bounded log lines.

Does I/O only on the stream and sink it is given. Memory stays bounded by
`max_line_bytes` plus one read, whatever the length of the output or of a line.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

CUT_MARKER = " [line cut]"
_READ_SIZE = 65536


def _decode(raw: bytes | bytearray) -> str:
    return bytes(raw).decode("utf-8", errors="replace").rstrip("\r")


async def pump_lines(
    stream: asyncio.StreamReader,
    sink: Callable[[str], Awaitable[None]],
    *,
    max_line_bytes: int,
) -> int:
    """Send each line of `stream` to `sink` until end of file.

    Lines longer than `max_line_bytes` are cut there, marked with " [line cut]", and
    the rest of the line is dropped. Invalid UTF-8 is replaced, never fatal.

    Args:
        stream: The container's combined stdout and stderr.
        sink: Awaited with each line, without its newline.
        max_line_bytes: Longest line passed on.

    Returns:
        The number of lines sent.
    """
    buf = bytearray()
    dropping = False
    sent = 0
    while chunk := await stream.read(_READ_SIZE):
        buf += chunk
        while True:
            newline = buf.find(b"\n")
            if newline < 0:
                if len(buf) > max_line_bytes:
                    if not dropping:
                        await sink(_decode(buf[:max_line_bytes]) + CUT_MARKER)
                        sent += 1
                    dropping = True
                    buf.clear()
                break
            line = buf[:newline]
            del buf[: newline + 1]
            if dropping:
                dropping = False  # the tail of a line already cut
                continue
            if len(line) > max_line_bytes:
                await sink(_decode(line[:max_line_bytes]) + CUT_MARKER)
            else:
                await sink(_decode(line))
            sent += 1
    if buf and not dropping:
        await sink(_decode(buf))
        sent += 1
    return sent

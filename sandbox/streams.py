"""Line splitting of the container's output into bounded, inert log lines.

Does I/O only on the stream and sink it is given. Memory stays bounded by
`max_line_bytes` plus one read, whatever the length of the output or of a line.

The output is the profile's: every control character but the tab is shown as a
visible glyph (`show_controls`), so a line can neither drive the terminal or the page
that shows it (clear the screen, set a window title, ring, move the cursor back with
CR) nor hide text (NUL, bidirectional overrides).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Final

CUT_MARKER = " [line cut]"
_READ_SIZE = 65536

_VISIBLE: Final[dict[int, str]] = {
    # C0 controls as Unicode's control pictures (ESC -> U+241B), DEL as U+2421.
    **{code: chr(0x2400 + code) for code in range(0x20) if code != 0x09},
    0x7F: "\u2421",
    # C1 controls (0x9B is CSI to some terminals), written out.
    **{code: f"\\x{code:02x}" for code in range(0x80, 0xA0)},
    # Line separators and bidirectional controls, which reorder or split what is shown.
    **{
        code: f"\\u{code:04x}"
        for code in (0x061C, 0x200E, 0x200F, 0x2028, 0x2029, *range(0x202A, 0x202F))
    },
    **{code: f"\\u{code:04x}" for code in range(0x2066, 0x206A)},
}


def show_controls(text: str) -> str:
    r"""`text` with every control character except the tab replaced by a visible form.

    C0 controls become control pictures (ESC `\x1b` shows as `␛`), DEL `␡`; C1
    controls, line separators and bidirectional controls become escapes such as
    `\x9b` and `\u202e`, written out.
    """
    return text.translate(_VISIBLE)


def _decode(raw: bytes | bytearray) -> str:
    return show_controls(bytes(raw).decode("utf-8", errors="replace").rstrip("\r"))


async def pump_lines(
    stream: asyncio.StreamReader,
    sink: Callable[[str], Awaitable[None]],
    *,
    max_line_bytes: int,
) -> int:
    """Send each line of `stream` to `sink` until end of file.

    Lines longer than `max_line_bytes` are cut there, marked with " [line cut]", and
    the rest of the line is dropped. Invalid UTF-8 is replaced, never fatal; control
    characters are made visible (`show_controls`).

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

"""A small PNG reader for tests: enough of PNG (8-bit, not interlaced) to count colours.

Pure; stdlib only (zlib). It decodes what QEMU's `screendump` writes (8-bit RGB) and
what headless Chromium writes (8-bit RGBA), so tests can tell a real picture from a
blank one without an imaging library.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}


@dataclass(frozen=True, slots=True)
class Image:
    """A decoded image: size, bytes per pixel and the unfiltered scanlines."""

    width: int
    height: int
    pixel_bytes: int
    rows: tuple[bytes, ...]

    def colours(self, limit: int = 1 << 16) -> int:
        """The number of distinct pixel values (counting stops at `limit`)."""
        seen: set[bytes] = set()
        step = self.pixel_bytes
        for row in self.rows:
            seen.update(row[i : i + step] for i in range(0, len(row), step))
            if len(seen) >= limit:
                break
        return len(seen)


def decode(data: bytes) -> Image:
    """Decode an 8-bit, non-interlaced PNG.

    Raises:
        ValueError: Not a PNG of that kind.
    """
    if not data.startswith(SIGNATURE):
        raise ValueError("not a PNG")
    pos, idat = len(SIGNATURE), bytearray()
    header = b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
        pos += 12 + length
    width, height, depth, colour, _comp, _filter, interlace = struct.unpack(">IIBBBBB", header)
    if depth != 8 or interlace or colour not in _CHANNELS:
        raise ValueError(f"unsupported PNG: depth {depth}, colour type {colour}")
    bpp = _CHANNELS[colour]
    raw = zlib.decompress(bytes(idat))
    stride = width * bpp
    rows: list[bytes] = []
    previous = bytes(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        _unfilter(kind, line, previous, bpp)
        previous = bytes(line)
        rows.append(previous)
    return Image(width, height, bpp, tuple(rows))


def _unfilter(kind: int, line: bytearray, up: bytes, bpp: int) -> None:
    if kind == 0:
        return
    for i in range(len(line)):
        left = line[i - bpp] if i >= bpp else 0
        above = up[i]
        if kind == 1:
            line[i] = (line[i] + left) & 0xFF
        elif kind == 2:
            line[i] = (line[i] + above) & 0xFF
        elif kind == 3:
            line[i] = (line[i] + (left + above) // 2) & 0xFF
        elif kind == 4:
            corner = up[i - bpp] if i >= bpp else 0
            p = left + above - corner
            pa, pb, pc = abs(p - left), abs(p - above), abs(p - corner)
            best = left if pa <= pb and pa <= pc else above if pb <= pc else corner
            line[i] = (line[i] + best) & 0xFF
        else:
            raise ValueError(f"bad PNG filter {kind}")

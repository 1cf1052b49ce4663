"""An HTTP response that serves a build log as it was when the response was made.

I/O shell (reads the file while sending). A running build's log grows while it is
downloaded; Starlette's `FileResponse` declares the size it saw but reads to the end
of the file, so a log that grew in between overran its own Content-Length and broke
the response. This response takes the size once and sends exactly that many bytes,
in 1 MiB blocks (memory stays flat for logs of any size). A single `Range: bytes=`
request is honoured, so a reader can fetch what was added since its last download.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

import anyio
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

CHUNK: Final = 1024 * 1024
"""Bytes read and sent per step."""

_RANGE = re.compile(r"^bytes=(\d{0,18})-(\d{0,18})$")
"""A single byte range; offsets of more than 18 digits (past any file) are not one."""
_MEDIA_TYPE = "text/plain; charset=utf-8"


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The `[start, end)` a `Range` header asks for within `size` bytes.

    Returns:
        The whole file for no header or one that is not a single byte range (the
        header is then ignored, as RFC 9110 allows); None when the range cannot be
        satisfied.
    """
    match = _RANGE.match(header.strip()) if header else None
    if match is None or match.groups() == ("", ""):
        return 0, size
    first, last = match.groups()
    if first == "":  # a suffix: the last N bytes
        return max(0, size - int(last)), size
    start = int(first)
    end = size if last == "" else min(size, int(last) + 1)
    if start >= size or start >= end:
        return None
    return start, end


class LogSnapshotResponse(Response):
    """Serves bytes of `path` up to `size`, the log's length when the request came.

    Args:
        path: The log file (append-only).
        size: The length to serve; later additions are left for the next request.
        range_header: The request's `Range` header, if any.
        headers: Extra response headers.
    """

    def __init__(
        self, path: Path, *, size: int, range_header: str | None, headers: dict[str, str]
    ) -> None:
        self.path = path
        span = byte_range(range_header, size)
        extra = {**headers, "Accept-Ranges": "bytes"}
        if span is None:
            self.span = (0, 0)
            super().__init__(status_code=416, headers={**extra, "Content-Range": f"bytes */{size}"})
            return
        self.span = span
        start, end = span
        partial = (start, end) != (0, size)
        if partial:
            extra["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        extra["Content-Length"] = str(end - start)
        super().__init__(status_code=206 if partial else 200, headers=extra, media_type=_MEDIA_TYPE)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Send the headers, then exactly the snapshot's bytes."""
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        start, end = self.span
        if scope["method"] == "HEAD" or start == end:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        async with await anyio.open_file(self.path, "rb") as handle:
            await handle.seek(start)
            remaining = end - start
            while remaining > 0:
                chunk = await handle.read(min(CHUNK, remaining))
                if not chunk:
                    # The file shrank (retention removed it meanwhile): end the body
                    # short; the client sees a broken download, not wrong data.
                    raise OSError(f"{self.path} ended {remaining} bytes early")
                remaining -= len(chunk)
                await send(
                    {"type": "http.response.body", "body": chunk, "more_body": remaining > 0}
                )

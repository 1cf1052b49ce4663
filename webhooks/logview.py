"""The part of a build log that a build page embeds, and that part as escaped HTML.

Does file I/O on the log (blocking in `log_view`, which callers run in a worker
thread; `escaped_log` runs its reads in one itself). A page embeds at most the last
`PAGE_LOG_BYTES` of the log, cut at a line start, and the live stream continues where
the embedded part ends. The text is escaped block by block, so a large log is never
held in memory and no log line can become markup.
"""

from __future__ import annotations

import codecs
import functools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import anyio
from markupsafe import escape

from webhooks import logfile

PAGE_LOG_BYTES: Final = 512 * 1024
"""The most of a log a build page embeds (its end); the full log is a link away."""


@dataclass(frozen=True, slots=True)
class LogView:
    """Which part of the log the page shows, and where the live stream continues.

    Attributes:
        start: The first byte shown (0 unless the log is longer than the page shows).
        end: The offset after the last complete line shown; the stream resumes here.
        live: Whether the build may still write (the stream is opened).
    """

    start: int
    end: int
    live: bool


def log_view(path: Path | None, *, live: bool) -> LogView:
    """Return the part of the log at `path` (None: no log yet) that a page shows.

    A live log is shown up to its last complete line; a final one to its end.
    """
    if path is None:
        return LogView(0, 0, live)
    end = logfile.aligned_end(path) if live else logfile.file_size(path)
    return LogView(logfile.tail_start(path, end, PAGE_LOG_BYTES), end, live)


async def escaped_log(path: Path | None, start: int, end: int) -> AsyncIterator[str]:
    """Yield the log's bytes `[start, end)` as escaped HTML, one bounded block at a time."""
    if path is None:
        return
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    offset = start
    while offset < end:
        data = await anyio.to_thread.run_sync(
            functools.partial(logfile.read_lines, path, offset, end, final=True)
        )
        if not data:
            break
        offset += len(data)
        yield str(escape(decoder.decode(data)))
    yield str(escape(decoder.decode(b"", final=True)))


async def around(head: str, middle: AsyncIterator[str], tail: str) -> AsyncIterator[str]:
    """Yield `head`, then everything `middle` yields, then `tail` (a page around its log)."""
    yield head
    async for chunk in middle:
        yield chunk
    yield tail

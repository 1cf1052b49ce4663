"""Line-aligned reads of a build log that may be growing while it is read.

Does file I/O (blocking, small, positional reads: callers run them in a worker
thread). A log is appended line by line by the runner, so its last line may be
incomplete at any moment; these functions only hand out whole lines unless told the
file is final, and never read more than one bounded block at a time.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

BLOCK: Final = 256 * 1024
"""The most read from a log in one call."""


def file_size(path: Path | None) -> int:
    """Return the size of the log at `path`, 0 when there is none (yet)."""
    if path is None:
        return 0
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


def read_lines(path: Path, start: int, stop: int, *, final: bool = False) -> bytes:
    """Read whole lines from `[start, stop)`, at most `BLOCK` bytes.

    Args:
        path: The log file.
        start: Where to start; a line start (0 or just after a newline).
        stop: Read nothing at or beyond this offset.
        final: The file no longer grows: a last line without a newline counts.

    Returns:
        The bytes from `start` up to and including the last newline read (up to the
        end of what was read when `final`, or when a single line is longer than
        `BLOCK`, so that progress is always made). Empty at the end of the file.
    """
    want = min(stop - start, BLOCK)
    if want <= 0:
        return b""
    with open(path, "rb", buffering=0) as handle:
        data = os.pread(handle.fileno(), want, start)
    if final or not data:
        return data
    cut = data.rfind(b"\n")
    if cut >= 0:
        return data[: cut + 1]
    # No newline in a whole block: the writer cuts lines far shorter than BLOCK, so
    # this is not its output; hand it out rather than stall.
    return data if len(data) == BLOCK else b""


def aligned_end(path: Path | None) -> int:
    """Return the offset just after the log's last complete line (0 if none)."""
    size = file_size(path)
    if path is None or size == 0:
        return 0
    start = max(0, size - BLOCK)
    with open(path, "rb", buffering=0) as handle:
        data = os.pread(handle.fileno(), size - start, start)
    cut = data.rfind(b"\n")
    if cut < 0:
        return start
    return start + cut + 1


def tail_start(path: Path, end: int, max_bytes: int) -> int:
    """Return where to start showing the log so that at most `max_bytes` precede `end`.

    The result is a line start: 0, or just after the first newline at or after
    `end - max_bytes`.
    """
    start = end - max_bytes
    if start <= 0:
        return 0
    with open(path, "rb", buffering=0) as handle:
        data = os.pread(handle.fileno(), min(BLOCK, end - start), start - 1)
    cut = data.find(b"\n")
    return end if cut < 0 else start + cut

"""Build logs on disk: one append-only text file per build, written as lines arrive.

Does file I/O. A log is persisted line by line while the build runs (so a page can
follow it and a crash loses at most the line being written) and is served as a file,
never loaded whole. The build's own lines are set apart from isorunner's
(`build_output`), and reach here with their control characters already made visible
(`sandbox.streams`). Lines are bounded: a runaway line is cut with a marker, and a log
stops growing at `max_bytes` with one final note, so a build cannot fill the disk
through its log.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType
from typing import Self

MAX_LINE_BYTES = 16 * 1024
BUILD_OUTPUT_MARK = "| "
"""Starts every line of a build's own output, in its log as on the terminal.

isorunner's own lines start with `[isorunner]`; the build's can no longer look like
them (a profile printing `[isorunner] build succeeded` shows as `| [isorunner] ...`).
"""
DEFAULT_MAX_LOG_BYTES = 256 * 1024 * 1024
_TRUNCATED = " […line cut]"


def build_output(line: str) -> str:
    """A line of the build's own output as isorunner shows it: after `BUILD_OUTPUT_MARK`."""
    return BUILD_OUTPUT_MARK + line


class BuildLogs:
    """Where build logs live: `<logs_dir>/<build id>.log`.

    Args:
        logs_dir: The directory; created on first write.
        max_bytes: The most a single log may hold.
    """

    def __init__(self, logs_dir: Path, *, max_bytes: int = DEFAULT_MAX_LOG_BYTES) -> None:
        self._dir = logs_dir
        self._max_bytes = max_bytes

    def path(self, build_id: int) -> Path:
        """The log file of a build (it may not exist yet)."""
        return self._dir / f"{int(build_id)}.log"

    def existing(self, build_id: int) -> Path | None:
        """The log file of a build if it exists, else None."""
        path = self.path(build_id)
        return path if path.is_file() else None

    def writer(self, build_id: int) -> LogWriter:
        """Open the build's log for appending (a context manager)."""
        self._dir.mkdir(parents=True, exist_ok=True, mode=0o750)
        return LogWriter(self.path(build_id), max_bytes=self._max_bytes)

    def remove(self, build_id: int) -> None:
        """Delete a build's log if there is one (retention)."""
        self.path(build_id).unlink(missing_ok=True)


class LogWriter:
    """Appends lines to one build log, flushing each so readers see it at once."""

    def __init__(self, path: Path, *, max_bytes: int) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o640)
        self._file = os.fdopen(fd, "ab")
        self._written = self._file.tell()
        self._max_bytes = max_bytes
        self._full = False

    def write_line(self, line: str) -> None:
        """Append one line (a trailing newline is added; a long line is cut)."""
        if self._full:
            return
        data = line.rstrip("\n").encode("utf-8", "replace")
        if len(data) > MAX_LINE_BYTES:
            data = data[:MAX_LINE_BYTES] + _TRUNCATED.encode()
        data += b"\n"
        if self._written + len(data) > self._max_bytes:
            data = b"[isorunner] log limit reached; further output is not kept\n"
            self._full = True
        self._file.write(data)
        self._file.flush()
        self._written += len(data)

    async def __call__(self, line: str) -> None:
        """Append one line: the async log sink the sandbox and pipeline call."""
        self.write_line(line)

    def close(self) -> None:
        """Flush and close the file."""
        self._file.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

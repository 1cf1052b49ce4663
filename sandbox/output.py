"""Checks on what a build left in its output directory, before anything is published.

Does read-only file-system I/O. Runs after every process of the build is dead, so the
output cannot change between the check and the caller's use of it. Nothing is followed:
entries are examined with lstat, and files are opened with O_NOFOLLOW|O_NONBLOCK so
that a link is refused and a FIFO can never block.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from sandbox.config import format_size
from sandbox.exceptions import OutputRejected

#: A file whose allocation is below 1/SPARSE_RATIO of its size is a sparse trap.
SPARSE_RATIO = 4
#: Small files are never called sparse (file systems pack tails).
SPARSE_MIN_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class OutputFile:
    """One accepted output file.

    Attributes:
        path: Absolute host path.
        size: Size in bytes.
    """

    path: Path
    size: int


def _reject(message: str, rel: str) -> OutputRejected:
    return OutputRejected(f"output {rel!r} rejected: {message}", path=rel)


def _check_file(path: Path, rel: str, max_bytes: int) -> int:
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise _reject(f"cannot be opened safely ({exc.strerror})", rel) from exc
    try:
        st = os.fstat(fd)
    finally:
        os.close(fd)
    if not stat.S_ISREG(st.st_mode):
        raise _reject("not a regular file", rel)
    if st.st_nlink != 1:
        raise _reject(f"has {st.st_nlink} hard links; outputs must be plain files", rel)
    if st.st_size > max_bytes:
        raise _reject(f"{st.st_size} bytes is over the limit of {format_size(max_bytes)}", rel)
    allocated = st.st_blocks * 512
    if st.st_size > SPARSE_MIN_BYTES and allocated * SPARSE_RATIO < st.st_size:
        raise _reject(f"sparse file ({st.st_size} bytes apparent, {allocated} allocated)", rel)
    return st.st_size


def check_output(output_dir: Path, *, max_bytes: int, require_iso: bool = True) -> list[OutputFile]:
    """Accept the output directory's files, or reject the whole output.

    Args:
        output_dir: The build's output directory on the host.
        max_bytes: Cap on each file and on the total.
        require_iso: Reject an output without an `.iso` (a build's); False for other
            commands' output (e.g. the rebuild check's listings).

    Returns:
        Every file, sorted by path; at least one is an `.iso` when required.

    Raises:
        OutputRejected: A symbolic link, FIFO, socket, device node, hard link, sparse
            or oversized file is present, the total is too big, or no ISO was produced.
    """
    accepted: list[OutputFile] = []
    total = 0
    pending = [output_dir]
    while pending:
        directory = pending.pop()
        with os.scandir(directory) as entries:
            for entry in entries:
                path = Path(entry.path)
                rel = str(path.relative_to(output_dir))
                mode = entry.stat(follow_symlinks=False).st_mode
                if stat.S_ISLNK(mode):
                    raise _reject("symbolic link", rel)
                if stat.S_ISDIR(mode):
                    pending.append(path)
                    continue
                if not stat.S_ISREG(mode):
                    raise _reject("not a regular file (FIFO, socket or device node)", rel)
                size = _check_file(path, rel, max_bytes)
                total += size
                if total > max_bytes:
                    raise _reject(f"the output totals more than {format_size(max_bytes)}", rel)
                accepted.append(OutputFile(path=path, size=size))
    if require_iso and not any(f.path.suffix == ".iso" for f in accepted):
        raise OutputRejected("the build produced no .iso file in its output directory")
    return sorted(accepted, key=lambda f: f.path)

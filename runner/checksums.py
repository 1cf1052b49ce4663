"""SHA-256 and BLAKE2b checksums of a build artefact, and the sums files that carry them.

Owns how a release's `sha256sums` and `b2sums` are computed and written out.
`compute_checksums` does I/O (it reads the file once) and blocks; `compute_checksums_async`
runs it in a worker thread so the event loop never waits on a 2 GiB ISO.
`format_sums_file` is pure.

Both digests come from one read of the file: each 1 MiB chunk is hashed by two
threads at once (hashlib releases the GIL for large buffers) while the next chunk is
read. On the development machine this takes about as long as `b2sum` alone, well under
`sha256sum` and `b2sum` run one after the other (figures in docs/benchmarks.md).
"""

from __future__ import annotations

import hashlib
import re
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import anyio.to_thread
import nacl.hashlib

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

_CHUNK: Final = 1 << 20
_HEX_DIGEST: Final = re.compile(r"[0-9a-f]+")
# coreutils escapes names holding these (a leading backslash on the line); asset
# names never need them, so they are refused rather than escaped.
_UNSAFE_NAME: Final = re.compile(r"[\\\n\r]")


@dataclass(frozen=True, slots=True)
class Checksums:
    """The digests and size of one file.

    Attributes:
        sha256: Lowercase hex SHA-256, as `sha256sum` prints it.
        b2: Lowercase hex BLAKE2b-512, as `b2sum` prints it.
        size: Bytes read.
    """

    sha256: str
    b2: str
    size: int


def compute_checksums(path: Path) -> Checksums:
    """Compute the SHA-256 and BLAKE2b-512 digests of a file in one read.

    Args:
        path: The file to hash.

    Returns:
        Both digests in lowercase hex and the file's size.

    Raises:
        OSError: The file cannot be read.
    """
    sha256 = hashlib.sha256()
    # The 64-byte digest is what `b2sum` prints; libsodium's BLAKE2b (pynacl) is ~1.4x
    # hashlib's here, and its result is also the prehash of the ISO's minisign signature.
    b2 = nacl.hashlib.blake2b(digest_size=64)
    size = 0
    pending: list[Future[None]] = []
    with (
        open(path, "rb", buffering=0) as source,
        ThreadPoolExecutor(max_workers=2, thread_name_prefix="checksums") as pool,
    ):
        while chunk := source.read(_CHUNK):
            size += len(chunk)
            # Each hash must see the chunks in order: finish the previous ones first.
            for future in pending:
                future.result()
            pending = [pool.submit(sha256.update, chunk), pool.submit(b2.update, chunk)]
        for future in pending:
            future.result()
    return Checksums(sha256=sha256.hexdigest(), b2=b2.hexdigest(), size=size)


async def compute_checksums_async(path: Path) -> Checksums:
    """Run `compute_checksums` in a worker thread so the event loop keeps serving.

    Args:
        path: The file to hash.

    Returns:
        Both digests in lowercase hex and the file's size.

    Raises:
        OSError: The file cannot be read.
    """
    return await anyio.to_thread.run_sync(compute_checksums, path)


def format_sums_file(entries: Sequence[tuple[str, str]]) -> str:
    """Render a sums file that `sha256sum -c` or `b2sum -c` verifies.

    Args:
        entries: `(hex digest, file name)` pairs, in the order to list them.

    Returns:
        One `<digest>  <name>` line per entry (two spaces: text mode, as coreutils
        writes it), each ending in a newline.

    Raises:
        ValueError: A digest is not lowercase hex, or a name is empty or holds a
            backslash, newline or carriage return.
    """
    lines = []
    for digest, name in entries:
        if not _HEX_DIGEST.fullmatch(digest):
            raise ValueError(f"checksum for {name!r} is not lowercase hex: {digest!r}")
        if not name or _UNSAFE_NAME.search(name):
            raise ValueError(f"file name {name!r} cannot be listed in a sums file")
        lines.append(f"{digest}  {name}\n")
    return "".join(lines)

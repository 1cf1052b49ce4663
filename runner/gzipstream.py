"""A forward-only stream of a gzip file's decompressed bytes, inflated in a thread.

Does I/O: reads the compressed file it is given. Unlike tarfile's own `r|gz`, the
decoder checks every gzip member's CRC-32 and length, so a truncated or corrupted
archive is an error rather than a silently short tree. Used by `runner.archive`.
"""

from __future__ import annotations

import errno
import queue
import threading
import zlib
from collections.abc import Iterator
from typing import BinaryIO, Final

# Compressed bytes read per call.
_CHUNK: Final = 1 << 20
# Decompressed bytes per step of the inflating thread, and how many steps it may run ahead.
_INFLATE_CHUNK: Final = 256 << 10
_INFLATE_AHEAD: Final = 8
# zlib window bits for a gzip container: zlib then checks the trailer's CRC-32 and length.
_GZIP_WBITS: Final = 16 + zlib.MAX_WBITS


def _inflate(raw: BinaryIO) -> Iterator[bytes]:
    """Yield the decompressed bytes of a (multi-member) gzip file in bounded chunks.

    zlib checks each member's CRC-32 and length; a file that ends before a member's
    trailer raises `EOFError`. Output is bounded per step, so a small, highly
    compressed input never inflates into memory at once.
    """
    inflater = zlib.decompressobj(_GZIP_WBITS)
    data = b""
    while True:
        if inflater.eof:
            data = inflater.unused_data or raw.read(_CHUNK)
            if not data:
                return
            inflater = zlib.decompressobj(_GZIP_WBITS)
        elif not data:
            data = raw.read(_CHUNK)
            if not data:
                raise EOFError("the compressed data ends before its end-of-stream marker")
        out = inflater.decompress(data, _INFLATE_CHUNK)
        data = inflater.unconsumed_tail
        if out:
            yield out


class GzipStream:
    """A read-only stream of a gzip file's decompressed bytes, inflated ahead in a thread.

    zlib releases the GIL, so decompression overlaps with parsing and writing files,
    as `gzip | tar` overlaps them in two processes. At most `_INFLATE_AHEAD` chunks wait
    in the queue. An error in the thread is raised by the next `read`.
    """

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._chunks: queue.Queue[bytes | BaseException | None] = queue.Queue(_INFLATE_AHEAD)
        self._stop = threading.Event()
        self._chunk = b""
        self._pos = 0
        self._offset = 0
        self._ended = False
        self._thread = threading.Thread(target=self._produce, name="archive-inflate")
        self._thread.start()

    def _produce(self) -> None:
        try:
            for chunk in _inflate(self._raw):
                if not self._put(chunk):
                    return
            self._put(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the reading thread, raised there
            self._put(exc)

    def _put(self, item: bytes | BaseException | None) -> bool:
        """Queue an item unless the reader has gone; return False once it has."""
        while not self._stop.is_set():
            try:
                self._chunks.put(item, timeout=0.05)
            except queue.Full:
                continue
            return True
        return False

    def read(self, size: int, /) -> bytes:
        """Return up to `size` decompressed bytes; b"" only at a clean end of file."""
        if self._pos >= len(self._chunk):
            if self._ended:
                return b""
            item = self._chunks.get()
            if item is None or isinstance(item, BaseException):
                self._ended = True
                if item is None:
                    return b""
                raise item
            self._chunk, self._pos = item, 0
        out = self._chunk[self._pos : self._pos + size]
        self._pos += len(out)
        self._offset += len(out)
        return out

    def write(self, data: bytes, /) -> int:
        """Refuse to write: the stream is read-only."""
        raise OSError(errno.EBADF, "the gzip stream is read-only")

    def tell(self) -> int:
        """Return how many decompressed bytes were read so far."""
        return self._offset

    def seek(self, pos: int, /) -> int:
        """Refuse to seek: the stream only goes forward."""
        raise OSError(errno.ESPIPE, "the gzip stream cannot seek")

    def close(self) -> None:
        """Stop the inflating thread and wait for it (the caller owns the raw file)."""
        self._stop.set()
        self._thread.join()

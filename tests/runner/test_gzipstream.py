"""Tests for runner.gzipstream: checked, bounded, thread-inflated gzip reading."""

from __future__ import annotations

import gzip
import time
import zlib
from pathlib import Path

import pytest

from runner.gzipstream import GzipStream


def read_all(stream: GzipStream) -> bytes:
    """Read the stream to its end in small pieces."""
    parts = []
    while chunk := stream.read(7777):
        parts.append(chunk)
    return b"".join(parts)


def test_gzip_stream_reads_multi_member_files_whole(tmp_path: Path) -> None:
    """Concatenated gzip members read as one stream, as gzip -d does."""
    archive = tmp_path / "two.gz"
    archive.write_bytes(gzip.compress(b"first ") + gzip.compress(b"second" * 100_000))
    with archive.open("rb") as raw:
        stream = GzipStream(raw)
        try:
            assert read_all(stream) == b"first " + b"second" * 100_000
            assert stream.tell() == 6 + 600_000
        finally:
            stream.close()


def test_gzip_stream_refuses_a_truncated_file(tmp_path: Path) -> None:
    """A file cut before the gzip trailer raises instead of ending quietly."""
    archive = tmp_path / "cut.gz"
    archive.write_bytes(gzip.compress(b"x" * 100_000)[:-6])
    with archive.open("rb") as raw:
        stream = GzipStream(raw)
        try:
            with pytest.raises(EOFError, match="ends before its end-of-stream marker"):
                read_all(stream)
        finally:
            stream.close()


def test_gzip_stream_refuses_a_bad_checksum(tmp_path: Path) -> None:
    """A corrupted CRC-32 in the trailer is a zlib error."""
    data = bytearray(gzip.compress(b"y" * 10_000))
    data[-8] ^= 0xFF
    archive = tmp_path / "crc.gz"
    archive.write_bytes(bytes(data))
    with archive.open("rb") as raw:
        stream = GzipStream(raw)
        try:
            with pytest.raises(zlib.error):
                read_all(stream)
        finally:
            stream.close()


def test_gzip_stream_close_stops_an_inflater_blocked_on_a_full_queue(tmp_path: Path) -> None:
    """Closing the stream while its thread waits for room in the queue ends the thread."""
    archive = tmp_path / "zeros.gz"
    archive.write_bytes(gzip.compress(b"\0" * (64 << 20)))

    with archive.open("rb") as raw:
        stream = GzipStream(raw)
        first = stream.read(4096)
        deadline = time.monotonic() + 10
        while not stream._chunks.full() and time.monotonic() < deadline:
            time.sleep(0.01)
        full = stream._chunks.full()
        stream.close()

    assert first == b"\0" * 4096
    assert full
    assert not stream._thread.is_alive()

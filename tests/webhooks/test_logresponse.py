"""Tests for webhooks.logresponse: a growing log served as a consistent snapshot."""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.types import Message

from webhooks.logresponse import LogSnapshotResponse, byte_range


async def serve(response: LogSnapshotResponse, method: str = "GET") -> list[Message]:
    """Run the response against a recording `send` and return what it sent."""
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await response({"type": "http", "method": method}, receive, send)
    return sent


def body(sent: list[Message]) -> bytes:
    """The body bytes of the recorded messages."""
    return b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


def header(sent: list[Message], name: bytes) -> bytes | None:
    """One response header's value, or None."""
    return dict(sent[0]["headers"]).get(name)


@pytest.mark.anyio
async def test_log_snapshot_ignores_lines_appended_after_the_request(tmp_path: Path) -> None:
    """Lines written while the response is on its way are not sent: the length holds."""
    log = tmp_path / "1.log"
    log.write_bytes(b"one\ntwo\n")
    response = LogSnapshotResponse(log, size=8, range_header=None, headers={})
    with log.open("ab") as handle:
        handle.write(b"three, written while the response was being sent\n")
    sent = await serve(response)
    assert sent[0]["status"] == 200
    assert header(sent, b"content-length") == b"8"
    assert body(sent) == b"one\ntwo\n"
    assert sent[-1]["more_body"] is False


@pytest.mark.anyio
async def test_log_snapshot_streams_large_logs_in_bounded_chunks(tmp_path: Path) -> None:
    """A log of several MiB is sent in 1 MiB pieces, whole."""
    log = tmp_path / "big.log"
    data = b"x" * 1000 + b"\n"
    log.write_bytes(data * 3000)
    response = LogSnapshotResponse(log, size=len(data) * 3000, range_header=None, headers={})
    sent = await serve(response)
    chunks = [m["body"] for m in sent if m["type"] == "http.response.body"]
    assert max(len(c) for c in chunks) == 1024 * 1024
    assert body(sent) == data * 3000


@pytest.mark.anyio
async def test_log_snapshot_range_sends_the_rest(tmp_path: Path) -> None:
    """`Range: bytes=N-` answers 206 with what follows N in the snapshot."""
    log = tmp_path / "1.log"
    log.write_bytes(b"line one\nline two\n")
    sent = await serve(LogSnapshotResponse(log, size=18, range_header="bytes=9-", headers={}))
    assert sent[0]["status"] == 206
    assert header(sent, b"content-range") == b"bytes 9-17/18"
    assert body(sent) == b"line two\n"


@pytest.mark.anyio
async def test_log_snapshot_unsatisfiable_range_is_416(tmp_path: Path) -> None:
    """A range starting at or past the end answers 416 with the current size."""
    log = tmp_path / "1.log"
    log.write_bytes(b"abc\n")
    sent = await serve(LogSnapshotResponse(log, size=4, range_header="bytes=4-", headers={}))
    assert sent[0]["status"] == 416
    assert header(sent, b"content-range") == b"bytes */4"
    assert body(sent) == b""


@pytest.mark.anyio
async def test_log_snapshot_head_sends_no_body(tmp_path: Path) -> None:
    """HEAD gets the headers and the length, not the bytes."""
    log = tmp_path / "1.log"
    log.write_bytes(b"abc\n")
    sent = await serve(LogSnapshotResponse(log, size=4, range_header=None, headers={}), "HEAD")
    assert header(sent, b"content-length") == b"4"
    assert body(sent) == b""


@pytest.mark.parametrize(
    ("header_value", "expected"),
    [
        (None, (0, 100)),
        ("bytes=10-19", (10, 20)),
        ("bytes=90-", (90, 100)),
        ("bytes=-5", (95, 100)),
        ("bytes=95-500", (95, 100)),
        ("bytes=100-", None),
        ("bytes=20-10", None),
        ("bytes=0-1,5-9", (0, 100)),
        ("items=0-5", (0, 100)),
        ("bytes=-", (0, 100)),
    ],
)
def test_byte_range_parses_single_ranges(
    header_value: str | None, expected: tuple[int, int] | None
) -> None:
    """Single byte ranges are honoured, unsatisfiable ones refused, others ignored."""
    assert byte_range(header_value, 100) == expected

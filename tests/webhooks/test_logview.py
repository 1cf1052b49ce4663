"""Tests for webhooks.logview: which part of a log a build page embeds, escaped."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from webhooks.logview import PAGE_LOG_BYTES, LogView, around, escaped_log, log_view

pytestmark = pytest.mark.anyio


async def _joined(chunks: AsyncIterator[str]) -> str:
    return "".join([chunk async for chunk in chunks])


async def test_log_view_without_a_log_is_empty() -> None:
    """A build that has written no log yet shows nothing and streams from 0."""
    assert log_view(None, live=True) == LogView(0, 0, True)


async def test_log_view_of_a_live_log_stops_at_its_last_complete_line(tmp_path: Path) -> None:
    """A running build's page shows whole lines only; a finished one's shows everything."""
    path = tmp_path / "1.log"
    path.write_bytes(b"one\ntwo\nthr")
    assert log_view(path, live=True) == LogView(0, 8, True)
    assert log_view(path, live=False) == LogView(0, 11, False)


async def test_log_view_of_a_long_log_starts_at_a_line_near_its_tail(tmp_path: Path) -> None:
    """A log longer than a page shows only its end, from the start of a line."""
    path = tmp_path / "1.log"
    line = b"x" * 99 + b"\n"
    path.write_bytes(line * (PAGE_LOG_BYTES // 100 + 50))
    view = log_view(path, live=False)
    assert view.end - view.start <= PAGE_LOG_BYTES
    assert view.start % 100 == 0
    assert view.start > 0


async def test_escaped_log_escapes_markup_and_bad_utf8(tmp_path: Path) -> None:
    """Log text can never become markup, and invalid UTF-8 becomes a replacement mark."""
    path = tmp_path / "1.log"
    path.write_bytes(b"<script>alert(1)</script>\n\xff&\n")
    text = await _joined(escaped_log(path, 0, path.stat().st_size))
    assert text == "&lt;script&gt;alert(1)&lt;/script&gt;\n\ufffd&amp;\n"
    assert await _joined(escaped_log(None, 0, 0)) == ""


async def test_around_puts_the_middle_between_head_and_tail() -> None:
    """A page is its head, then the streamed log, then its tail."""

    async def middle() -> AsyncIterator[str]:
        yield "a"
        yield "b"

    assert await _joined(around("<p>", middle(), "</p>")) == "<p>ab</p>"

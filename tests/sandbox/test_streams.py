"""Tests for sandbox.streams: output is split into bounded lines."""

from __future__ import annotations

import asyncio

import pytest

from sandbox.streams import CUT_MARKER, pump_lines, show_controls


async def _pump(data: list[bytes], max_line_bytes: int = 100) -> list[str]:
    reader = asyncio.StreamReader()
    for chunk in data:
        reader.feed_data(chunk)
    reader.feed_eof()
    lines: list[str] = []

    async def sink(line: str) -> None:
        lines.append(line)

    sent = await pump_lines(reader, sink, max_line_bytes=max_line_bytes)
    assert sent == len(lines)
    return lines


@pytest.mark.anyio
async def test_pump_lines_splits_across_chunks() -> None:
    """Lines split over several reads arrive whole and in order; a last partial line too."""
    assert await _pump([b"one\ntw", b"o\r\nthr", b"ee"]) == ["one", "two", "three"]


@pytest.mark.anyio
async def test_pump_lines_cuts_long_lines_and_drops_their_tail() -> None:
    """A line over the cap is cut there, marked, and its tail is not sent as a new line."""
    long = b"a" * 250
    assert await _pump([long[:120], long[120:] + b"\nnext\n"]) == ["a" * 100 + CUT_MARKER, "next"]


@pytest.mark.anyio
async def test_pump_lines_cuts_a_long_line_within_one_chunk() -> None:
    """A long line that arrives with its newline is cut the same way."""
    assert await _pump([b"b" * 150 + b"\n"]) == ["b" * 100 + CUT_MARKER]


@pytest.mark.anyio
async def test_pump_lines_replaces_invalid_utf8() -> None:
    """Invalid UTF-8 is replaced, never fatal."""
    assert await _pump([b"caf\xe9\n"]) == ["caf\ufffd"]


@pytest.mark.anyio
async def test_pump_lines_shows_control_characters_instead_of_passing_them() -> None:
    """Escapes, BEL, CR, NUL, DEL, C1 and bidi controls arrive visible; tabs stay tabs."""
    hostile = "\x1b[2J\x1b]0;pwned\x07\r[isorunner] ok\x00\x7f\u009b\u202e\tend\r\n"
    (line,) = await _pump([hostile.encode()])
    assert line == "␛[2J␛]0;pwned␇␍[isorunner] ok␀␡\\x9b\\u202e\tend"
    assert not any(ord(char) < 0x20 and char != "\t" for char in line)


def test_show_controls_leaves_printable_text_alone() -> None:
    """Ordinary text, accents and emoji pass unchanged."""
    text = "[mkarchiso] INFO: Création de l'image ✓ 🎉"
    assert show_controls(text) == text

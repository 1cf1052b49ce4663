"""Tests of runner.packages.transfer: the progress line of long downloads, sizes for people."""

from __future__ import annotations

import anyio
import pytest

from runner.packages.transfer import Counters, report_progress, size_text


@pytest.mark.anyio
async def test_report_progress_logs_until_done() -> None:
    """Each interval logs how far the downloads are; the line stops once they are done."""
    counters = Counters(bytes_done=3 << 20, files_done=1, files_total=2, bytes_total=6 << 20)
    done = anyio.Event()
    lines: list[str] = []

    def log(line: str) -> None:
        lines.append(line)
        if len(lines) == 2:
            done.set()

    await report_progress(counters, log, done, 0.0)
    assert len(lines) == 2
    assert lines[0].startswith("packages: downloading 3.0 MiB of 6.0 MiB, 1 of 2 files, ")
    assert lines[0].endswith("/s")


@pytest.mark.anyio
async def test_report_progress_is_silent_when_done_at_once() -> None:
    """Downloads over before the first interval log no progress line."""
    done = anyio.Event()
    done.set()
    lines: list[str] = []
    await report_progress(Counters(), lines.append, done, 60.0)
    assert lines == []


@pytest.mark.parametrize(
    ("count", "text"),
    [(0, "0.0 KiB"), (1536, "1.5 KiB"), (5 << 20, "5.0 MiB"), (3 << 30, "3.00 GiB")],
)
def test_size_text_picks_a_unit(count: int, text: str) -> None:
    """Sizes read in KiB, MiB or GiB."""
    assert size_text(count) == text

"""Bounds on the free text isorunner takes from deliveries: titles, names, reasons.

Pure: no I/O. A delivery may be 25 MiB of one commit message; whatever of it is stored
or answered is cut here first, and marked as cut, so that every stored build and so
every page of `GET /api/builds` stays small whatever was pushed.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import urlsplit, urlunsplit

CUT: Final = "…"
"""Ends a text that was cut."""

MAX_TITLE: Final = 1000
"""The most characters of a title (a commit message's first line, a PR/MR title)."""

MAX_NAME: Final = 255
"""The most characters of a name kept from a payload (sender, repository)."""

MAX_URL: Final = 2048
"""The longest repository web URL kept; a longer one is dropped, not cut into a broken link."""

MAX_QUOTED: Final = 100
"""The most characters of a sender-chosen name that an answer or log line repeats."""

MAX_REASON: Final = 500
"""The longest reason an "ignored" answer gives."""


def cut(text: str, limit: int) -> str:
    """`text` if it has at most `limit` characters, else its start ending in `CUT`.

    The result never has more than `limit` characters.
    """
    if len(text) <= limit:
        return text
    return text[: limit - len(CUT)] + CUT


def title(message: str) -> str:
    """A commit message's title: its first non-blank line, stripped, at most `MAX_TITLE`.

    Only the first line is looked at, so a 25 MiB message costs one scan for a newline.
    """
    start = 0
    while True:
        end = message.find("\n", start)
        line = message[start:] if end < 0 else message[start:end]
        # Strip only what can be kept: a 25 MiB line is never copied whole.
        head = line[: MAX_TITLE + 64].strip()
        if head or end < 0:
            return cut(head if len(line) <= MAX_TITLE + 64 else head + CUT, MAX_TITLE)
        start = end + 1


def quoted(name: str) -> str:
    """`name` as an answer or log line repeats it: `repr` of at most `MAX_QUOTED` characters."""
    return repr(cut(name, MAX_QUOTED))


def url(text: str) -> str:
    """A web URL from a payload without query or fragment; "" if not a plain http(s) URL.

    Dropped: URLs over `MAX_URL`, other schemes (`javascript:`), and URLs with a user
    part (no URL is shown or logged with credentials in it).
    """
    if len(text) > MAX_URL:
        return ""
    try:
        parts = urlsplit(text)
    except ValueError:  # e.g. an unbalanced IPv6 bracket
        return ""
    if parts.scheme not in ("http", "https") or not parts.netloc or "@" in parts.netloc:
        return ""
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))

"""Process logging: one line per event, console or JSON, with secrets redacted.

`configure_logging` is called once by the composition root. The redaction processor is
pure and is also what tests exercise: it replaces every configured secret value, the
value of any key that names a secret, and the user part and query string of every URL
(`scrub_urls`), wherever they appear in an event, exception texts and the lines of
uvicorn and httpx included. GitHub's archive redirect carries a token for a private
repository in its query string; no URL is logged with one.

The naming rule for events, in every package (runner, sandbox, webhooks): the event is
a constant snake_case name, subject first then what happened (`delivery_accepted`,
`build_started`, `status_not_delivered`, `sandbox_kill_incomplete`), so that a log
query can match it exactly. Everything else (ids, reasons, what happens next) goes
in key=value fields, never into the event name; an event name never holds a value
from a delivery, a build or an error. Only third-party loggers (uvicorn) write
phrases, through the standard library.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any, Literal

import structlog
from pydantic import SecretStr

REDACTED = "[redacted]"
_URL_TAIL = re.compile(r"[^\s\"'<>`]*")
"""The rest of a URL after `://`: up to the first space, quote or angle bracket."""
_SCHEME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+.-")
_MAX_SCHEME = 32
_SECRET_KEYS = ("token", "secret", "password", "authorization", "private_key", "signature")


@functools.lru_cache(maxsize=4096)
def names_a_secret(key: str) -> bool:
    """Whether an event key names a secret (its value is then never logged).

    Cached: events use a small, fixed set of keys, and this runs for every key of
    every line (it was 40% of a log line's cost).
    """
    lowered = key.lower()
    return any(marker in lowered for marker in _SECRET_KEYS)


def clean_url(url: str) -> str:
    """`url` with its user part and its query string and fragment replaced by `REDACTED`.

    `https://user:pw@host/p?token=x#f` becomes `https://[redacted]@host/p?[redacted]`,
    and a bare path `/p?x` becomes `/p?[redacted]`; a URL with neither is unchanged.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:  # a path: `/builds/1/log?x=y`
        scheme, rest = "", url
    cut = len(rest) if sep else 0
    for mark in "/?#":
        found = rest.find(mark)
        if 0 <= found < cut:
            cut = found
    authority, tail = rest[:cut], rest[cut:]
    if "@" in authority:
        authority = f"{REDACTED}@{authority.rpartition('@')[2]}"
    query = min((i for i in (tail.find("?"), tail.find("#")) if i >= 0), default=-1)
    if query >= 0:
        tail = f"{tail[:query]}?{REDACTED}"
    return f"{scheme}{sep}{authority}{tail}"


def scrub_urls(text: str) -> str:
    """`text` with every `scheme://…` URL in it passed through `clean_url`.

    One pass, linear in the text: each `://` is found with `str.find`, its scheme is
    read back over at most 32 characters and its end forward with a pattern that
    cannot backtrack.
    """
    if "://" not in text:
        return text
    parts: list[str] = []
    pos = 0
    while (sep := text.find("://", pos)) >= 0:
        start = sep
        while start > pos and sep - start < _MAX_SCHEME and text[start - 1] in _SCHEME_CHARS:
            start -= 1
        tail = _URL_TAIL.match(text, sep + 3)
        end = tail.end() if tail is not None else sep + 3
        parts.append(text[pos:start])
        parts.append(clean_url(text[start:end]) if start < sep else text[start:end])
        pos = end
    parts.append(text[pos:])
    return "".join(parts)


class Redactor:
    """A structlog processor that removes secret values from every event.

    Args:
        secrets: The configured secret values; each is replaced wherever it occurs
            in a string value of the event (messages, exception text, URLs).
    """

    def __init__(self, secrets: Iterable[SecretStr | None]) -> None:
        values = {s.get_secret_value() for s in secrets if s is not None}
        # Very short values would redact ordinary words; config validation keeps real
        # secrets long, and a 1-3 character secret is not worth protecting this way.
        self._values = sorted((v for v in values if len(v) >= 4), key=len, reverse=True)

    def scrub(self, text: str) -> str:
        """Return `text` with every known secret value and every URL's query replaced."""
        for value in self._values:
            if value in text:
                text = text.replace(value, REDACTED)
        return scrub_urls(text)

    def __call__(
        self, logger: object, method_name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        """Redact the event in place and return it (the structlog processor call)."""
        for key, value in list(event_dict.items()):
            if names_a_secret(key):
                event_dict[key] = REDACTED
            elif isinstance(value, str):
                event_dict[key] = self.scrub(value)
            elif isinstance(value, SecretStr):
                event_dict[key] = REDACTED
        return event_dict


_BARE_VALUE = re.compile(r"[^\s\"\\=\x00-\x1f\x7f]+")
"""A value printed without quotes: no space, quote, backslash, `=` or control character."""
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _logfmt_value(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = value if isinstance(value, str) else str(value)
    if _BARE_VALUE.fullmatch(text):
        return text
    # JSON string syntax: quotes, and escapes that keep a value on one line.
    return json.dumps(text, ensure_ascii=False)


def render_console(logger: object, method_name: str, event_dict: MutableMapping[str, Any]) -> str:
    """Render an event as one logfmt-style line for people (the `console` format).

    `TIME LEVEL EVENT key=value ...`, in the order the keys were given. A value with a
    space, quote, `=` or control character is quoted with JSON escapes (the message
    only when it holds a control character), so a commit title or a forge's error
    text can never start a line of its own. A traceback (the `exception` key)
    follows on the next lines, as tracebacks do.

    Written for the hot path: structlog's `ConsoleRenderer` (padded columns) took
    ~25 µs of a ~150 µs webhook delivery; this takes ~2 µs.
    """
    timestamp = event_dict.pop("timestamp", "")
    level = event_dict.pop("level", "")
    event = str(event_dict.pop("event", ""))
    if _CONTROL.search(event):  # a message is printed as is unless it would break the line
        event = json.dumps(event, ensure_ascii=False)
    exception = event_dict.pop("exception", None)
    fields = " ".join(f"{key}={_logfmt_value(value)}" for key, value in event_dict.items())
    line = f"{timestamp} {level:<7} {event} {fields}".rstrip()
    return line if exception is None else f"{line}\n{exception}"


def drop_access_queries(record: logging.LogRecord) -> bool:
    """A logging filter: uvicorn's access lines lose the query string of their path.

    Their path (`/builds/1/log?x=y`) has no scheme for `scrub_urls` to find, so its
    query is replaced here, before the line is formatted. Always keeps the record.
    """
    if record.name == "uvicorn.access" and isinstance(record.args, tuple):
        record.args = tuple(
            clean_url(arg) if isinstance(arg, str) and arg.startswith("/") else arg
            for arg in record.args
        )
    return True


def configure_logging(
    *, log_format: Literal["console", "json"], secrets: Iterable[SecretStr | None]
) -> None:
    """Configure structlog (and stdlib logging, for uvicorn) for the whole process.

    Args:
        log_format: `console` for people, `json` for log collectors.
        secrets: Secret values to redact from every line.
    """
    redactor = Redactor(secrets)
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if log_format == "json" else render_console
    )
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        redactor,
    ]
    structlog.configure(
        processors=[*shared, renderer],
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    # uvicorn logs through the standard library: send it through the same chain.
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    handler.addFilter(drop_access_queries)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True

"""Tests for runner.logs: secrets never reach a log line."""

from __future__ import annotations

import json
import logging

import pytest
import structlog
from pydantic import SecretStr

from runner.logs import (
    REDACTED,
    Redactor,
    configure_logging,
    drop_access_queries,
    render_console,
    scrub_urls,
)


def test_redactor_replaces_secret_values_anywhere() -> None:
    """A configured secret is replaced inside any string value of the event."""
    redactor = Redactor([SecretStr("hunter2-very-secret"), None])
    event = redactor(
        None, "info", {"event": "forge_call_failed", "note": "had hunter2-very-secret"}
    )
    assert event["note"] == f"had {REDACTED}"
    assert event["event"] == "forge_call_failed"


def test_redactor_hides_values_of_secret_named_keys() -> None:
    """Keys that name a secret are redacted whatever their value."""
    redactor = Redactor([])
    event = redactor(None, "info", {"event": "x", "Authorization": "Bearer abc", "gh_token": 3})
    assert event["Authorization"] == REDACTED
    assert event["gh_token"] == REDACTED


def test_redactor_hides_secretstr_values() -> None:
    """A SecretStr passed as a value is never rendered."""
    event = Redactor([])(None, "info", {"event": "x", "value": SecretStr("abc")})
    assert event["value"] == REDACTED


def test_configure_logging_json_lines_are_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    """In JSON mode each event is one JSON line, and stdlib records are redacted too."""
    try:
        configure_logging(log_format="json", secrets=[SecretStr("s3cr3t-value")])
        structlog.get_logger().info("delivery", build_id=7, note="has s3cr3t-value inside")
        logging.getLogger("uvicorn.error").warning("leak s3cr3t-value")
        lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers[:] = []
    assert lines[0]["build_id"] == 7
    assert lines[0]["note"] == f"has {REDACTED} inside"
    assert lines[1]["event"] == f"leak {REDACTED}"
    assert all("s3cr3t-value" not in json.dumps(line) for line in lines)


def fail(message: str) -> None:
    """Raise a RuntimeError carrying `message` (as a forge library might)."""
    raise RuntimeError(message)


def test_configure_logging_redacts_a_token_from_an_exception_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A forge token inside an exception's message never reaches the rendered line."""
    token = "ghp_live-token-in-an-error-1234"
    try:
        configure_logging(log_format="json", secrets=[SecretStr(token)])
        try:
            fail(f"GET https://x-access-token:{token}@github.com/o/r failed")
        except RuntimeError:
            structlog.get_logger().exception("build_crashed", build_id=12)
        err = capsys.readouterr().err
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers[:] = []
    (line,) = err.splitlines()
    event = json.loads(line)
    assert event["build_id"] == 12
    assert "RuntimeError" in event["exception"]
    assert REDACTED in event["exception"]
    assert token not in line


def test_configure_logging_adds_the_bound_build_id_to_every_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Lines logged inside `bound_contextvars(build_id=…)` carry the id, from any module."""
    try:
        configure_logging(log_format="json", secrets=[])
        with structlog.contextvars.bound_contextvars(build_id=5):
            structlog.get_logger("runner.forges.client").warning("forge_retry", attempt=1)
        structlog.get_logger().info("idle")
        lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers[:] = []
    assert lines[0]["build_id"] == 5
    assert "build_id" not in lines[1]


def test_render_console_keeps_each_event_on_one_line() -> None:
    """Values with spaces, quotes or newlines are quoted with escapes; plain ones are not."""
    line = render_console(
        None,
        "info",
        {
            "timestamp": "2026-11-29T04:00:00Z",
            "level": "info",
            "event": "delivery_accepted",
            "repo": "owner/profile",
            "title": 'fix: mirror\nfake_line level=error "x"',
            "build_id": 7,
            "duplicate": False,
            "pr_number": None,
            "empty": "",
        },
    )
    assert line == (
        "2026-11-29T04:00:00Z info    delivery_accepted repo=owner/profile"
        ' title="fix: mirror\\nfake_line level=error \\"x\\"" build_id=7 duplicate=false'
        ' pr_number=null empty=""'
    )


def test_render_console_escapes_a_message_only_when_it_would_break_the_line() -> None:
    """A message with spaces stays readable; one with a newline is quoted."""
    plain = render_console(None, "info", {"level": "warning", "event": "Started server [12]"})
    broken = render_console(None, "info", {"level": "info", "event": "a\nb"})
    assert plain == " warning Started server [12]"
    assert broken == ' info    "a\\nb"'


def test_configure_logging_console_lines_are_redacted_with_the_traceback_after(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Console mode: one line per event, secrets redacted, a traceback on the lines after."""
    token = "ghp_console-secret-5678"
    try:
        configure_logging(log_format="console", secrets=[SecretStr(token)])
        try:
            fail(f"token {token} refused")
        except RuntimeError:
            structlog.get_logger().exception("forge_call_failed", build_id=3, url=f"x?{token}")
        err = capsys.readouterr().err
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers[:] = []
    first, *traceback = err.splitlines()
    assert " error   forge_call_failed build_id=3 url=x?[redacted]" in first
    assert traceback[0] == "Traceback (most recent call last):"
    assert traceback[-1] == f"RuntimeError: token {REDACTED} refused"
    assert token not in err


@pytest.mark.parametrize(
    ("url", "logged"),
    [
        (
            "https://codeload.example/o/r/legacy.tar.gz/abc?token=AQ4x",
            "https://codeload.example/o/r/legacy.tar.gz/abc?[redacted]",
        ),
        ("https://user:pw@gitlab.example/api/v4/x", "https://[redacted]@gitlab.example/api/v4/x"),
        ("http://h:8/p#access_token=1", "http://h:8/p?[redacted]"),
        ("https://api.github.com/repos/o/r", "https://api.github.com/repos/o/r"),
    ],
)
def test_redactor_strips_user_part_and_query_of_every_url(url: str, logged: str) -> None:
    """A URL in any value, an exception text included, keeps neither credentials nor query."""
    event = Redactor([])(
        None, "info", {"event": f"HTTP Request: GET {url} 200", "exception": f"at {url}\n"}
    )
    assert event["event"] == f"HTTP Request: GET {logged} 200"
    assert event["exception"] == f"at {logged}\n"


def test_scrub_urls_leaves_text_without_urls_alone() -> None:
    """Text without `://` is returned as it is, colons and question marks included."""
    text = "why? because: a:b ://"
    assert scrub_urls(text) == text


def test_configure_logging_drops_the_query_of_httpx_lines(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The request line httpx logs for each forge call keeps no query string."""
    try:
        configure_logging(log_format="console", secrets=[])
        logging.getLogger("httpx").info(
            'HTTP Request: %s %s "%s"', "GET", "https://c.example/a?token=q2", "HTTP/1.1 200 OK"
        )
        err = capsys.readouterr().err
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers[:] = []
    assert "q2" not in err
    assert "GET https://c.example/a?[redacted]" in err


def test_access_lines_lose_the_query_of_their_path() -> None:
    """The access line of uvicorn (a path, no scheme) is logged without its query string."""
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("1.2.3.4:5", "GET", "/builds/1/log?token=q1", "1.1", 200),
        None,
    )
    assert drop_access_queries(record) is True
    assert record.getMessage() == '1.2.3.4:5 - "GET /builds/1/log?[redacted] HTTP/1.1" 200'

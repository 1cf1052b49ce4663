"""Every pattern and glob that sees forge, webhook or profile input, fed input built to backtrack.

One test per pattern, across packages, so that the list is in one place: a new pattern
on hostile input belongs here too. Each runs under `tests.deadline.returns`, which fails
instead of hanging when a check backtracks; the answers are checked as well.
(`webhooks.refs` has no patterns; its long-input tests are in tests/webhooks/test_refs.py.)
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import SecretStr

from runner.archive import extract_profile
from runner.checksums import format_sums_file
from runner.logs import render_console, scrub_urls
from runner.pipeline import is_error_line
from runner.settings import RepoSettings
from tests.deadline import returns
from tests.runner.test_archive import good_profile, write_archive
from tests.webhooks.samples import GITLAB_SIGNING_KEY
from webhooks.build import Forge
from webhooks.config import RepoRule
from webhooks.exceptions import MalformedPayload, SignatureMismatch
from webhooks.github import PushPayload
from webhooks.logresponse import byte_range
from webhooks.payload import parse_payload, previous_commit
from webhooks.verify import verify_standard_webhook

LONG = 1_000_000
GLOBS = ("*a*a*a*a*a*a*a*a*b", "*?*?*?*?*?*?*?*?b", "release/*/*/*/*x", "[a-z]*[a-z]*[a-z]*!")


def test_previous_commit_refuses_long_near_commit_ids() -> None:
    """A `before` of a million hex digits, or 40 of them and a bad one, is no commit."""
    assert returns(previous_commit, "a" * LONG) is None
    assert returns(previous_commit, "a" * 40 + "g" * LONG) is None


def _push_with_head(commit_id: str) -> None:
    body = {
        "ref": "refs/heads/main",
        "repository": {"full_name": "o/r"},
        "head_commit": {"id": commit_id, "timestamp": "2025-01-01T00:00:00Z"},
    }
    parse_payload(PushPayload, json.dumps(body).encode(), "GitHub push")


@pytest.mark.parametrize("commit_id", ["a" * LONG, "0" * 40 + "z" * LONG])
def test_commit_id_field_pattern_refuses_long_ids(commit_id: str) -> None:
    """A payload's commit id of a million characters is refused as malformed."""
    with pytest.raises(MalformedPayload, match=r"head_commit\.id"):
        returns(_push_with_head, commit_id)


@pytest.mark.parametrize("pattern", GLOBS)
def test_branch_and_tag_globs_answer_long_names(pattern: str) -> None:
    """Configured globs answer a name of a million characters (fnmatch is atomic)."""
    rule = RepoRule(Forge.GITHUB, "o/r", branches=(pattern,), release_tags=(pattern,))
    name = "a" * LONG
    assert returns(rule.builds_branch, name) is False
    assert returns(rule.builds_tag, name) is False
    settings = RepoSettings(forge=Forge.GITHUB, name="o/r", branches=(pattern,))
    assert returns(settings.matches_branch, name) is False


@pytest.mark.parametrize(
    "header",
    ["bytes=" + "1" * LONG + "-x", "bytes=" + "1" * 5000 + "-", "bytes=-" + "9" * 5000],
)
def test_range_header_pattern_ignores_long_offsets(header: str) -> None:
    """A `Range` of thousands of digits is no range: the whole log is served."""
    assert returns(byte_range, header, 100) == (0, 100)


def test_signature_header_of_a_million_entries_is_refused() -> None:
    """A `webhook-signature` of 200,000 entries is checked entry by entry and refused."""
    with pytest.raises(SignatureMismatch):
        returns(
            verify_standard_webhook,
            b"{}",
            webhook_id="id",
            webhook_timestamp="1767225600",
            webhook_signature="v1,AAAA " * 200_000,
            key=SecretStr(GITLAB_SIGNING_KEY),
            now=1767225600.0,
            tolerance=300,
        )


def test_error_line_pattern_answers_long_lines() -> None:
    """A build log line of a million characters is classified at once."""
    assert returns(is_error_line, "error" * LONG) is False
    assert returns(is_error_line, "error: " + "x" * LONG) is True


def test_log_value_patterns_answer_long_values() -> None:
    """A logged value of a million characters with quotes and escapes renders on one line."""
    line = returns(render_console, None, "info", {"event": "x", "title": '"\\=\x1b' * LONG})
    assert "\n" not in line


@pytest.mark.parametrize(
    "text",
    ["a" * LONG + "://", "://" * LONG, "https://" + "x" * LONG + "?q", "a://b?q " * 100_000],
)
def test_url_scrubbing_pattern_answers_long_texts(text: str) -> None:
    """Log text of millions of characters full of `://` is scrubbed at once, query removed."""
    scrubbed = returns(scrub_urls, text)
    assert "?q" not in scrubbed


def test_sums_file_patterns_answer_long_names() -> None:
    """A file name of a million characters ending in a newline is refused at once."""
    with pytest.raises(ValueError, match="cannot be listed"):
        returns(format_sums_file, [("ab" * 32, "a" * LONG + "\n")])


def test_archive_commit_pattern_answers_a_long_comment(tmp_path: Path) -> None:
    """A pax `comment` of a million hex digits is no commit id, found at once."""
    archive = write_archive(tmp_path / "a.tar.gz", good_profile(), {"comment": "a" * LONG})
    assert returns(extract_profile, archive, tmp_path / "profile").commit is None

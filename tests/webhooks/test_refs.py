"""Tests of `webhooks.refs`: which branch, tag and package-version names are taken."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.deadline import returns
from webhooks.refs import (
    MAX_REF_NAME_BYTES,
    package_version_problem,
    ref_name_problem,
    repo_path_problem,
)

# GitLab's own rule (forge-apis.md §6.2), kept here only to compare against on short
# strings: on long ones it backtracks for days.
GITLAB_PACKAGE_VERSION = re.compile(r"(\.?[\w+-]+\.?)+", re.ASCII)

HOSTILE_TAG = "v" + "1" * 40 + "!"
"""The tag that froze the service: a valid git ref matching `v*`."""


@given(st.text(alphabet="a1_+-.!/ é", max_size=12))
def test_package_version_problem_agrees_with_gitlabs_pattern(version: str) -> None:
    """On every short string the one-pass check says what GitLab's pattern says."""
    assert (package_version_problem(version) is None) == (
        GITLAB_PACKAGE_VERSION.fullmatch(version) is not None
    )


@pytest.mark.parametrize("version", ["v1", "1.2.3", ".v1.", "a..b", "1+build", "v1.0-rc_1"])
def test_package_version_problem_accepts_versions_gitlab_takes(version: str) -> None:
    """Tag names GitLab takes as package versions pass."""
    assert package_version_problem(version) is None


@pytest.mark.parametrize(
    ("version", "reason"),
    [
        ("", "no letter or digit"),
        ("..", "no letter or digit"),
        ("release/1", "only letters"),
        ("v1!", "only letters"),
        ("..v1", "more than one '.'"),
        ("v1..", "more than one '.'"),
        ("a...b", "more than one '.'"),
        ("v" * 256, "longer than 255"),
    ],
)
def test_package_version_problem_names_what_gitlab_refuses(version: str, reason: str) -> None:
    """Versions GitLab refuses get a reason saying what is wrong."""
    problem = package_version_problem(version)
    assert problem is not None
    assert reason in problem


@pytest.mark.parametrize(
    "version",
    [HOSTILE_TAG, "1" * 100_000 + "!", "a." * 50_000 + "!", ".a" * 50_000 + "..."],
)
def test_package_version_problem_answers_hostile_tags_at_once(version: str) -> None:
    """Inputs built to make GitLab's pattern backtrack are refused without hanging."""
    assert returns(package_version_problem, version) is not None


@pytest.mark.parametrize(
    "name", ["main", "feature/x", "release/1.x", "v1.0", "ünïcode", "a" * MAX_REF_NAME_BYTES]
)
def test_ref_name_problem_accepts_names_git_allows(name: str) -> None:
    """Ordinary branch and tag names, up to 255 bytes, are taken."""
    assert ref_name_problem(name) is None


@pytest.mark.parametrize(
    "name",
    [
        "",
        "@",
        "a" * (MAX_REF_NAME_BYTES + 1),
        "é" * 128,  # 256 bytes
        "with space",
        "bell\x07",
        "esc\x1b[2J",
        "a~b",
        "a^b",
        "a:b",
        "a?b",
        "a*b",
        "a[b",
        "a\\b",
        "a..b",
        "a@{1}",
        "a//b",
        "/a",
        "a/",
        "a.",
        ".hidden",
        "a/.b",
        "a.lock",
        "a.lock/b",
    ],
)
def test_ref_name_problem_refuses_names_git_refuses(name: str) -> None:
    """Names `git check-ref-format` refuses, or over 255 bytes, get a reason."""
    assert ref_name_problem(name) is not None


@pytest.mark.parametrize("name", ["a" * 10_000_000, "a/" * 1_000_000, "." * 1_000_000])
def test_ref_name_problem_answers_long_names_at_once(name: str) -> None:
    """A name of millions of characters is refused by its length, at once."""
    problem = returns(ref_name_problem, name)
    assert problem == f"is longer than {MAX_REF_NAME_BYTES} bytes"


@pytest.mark.parametrize(
    ("path", "ok"),
    [
        ("octo/archlive", True),
        ("group/sub/project", True),
        ("noslash", False),
        ("a//b", False),
        ("a/b ", False),
        ("a/\x1b[2Jb", False),
        ("a/" + "b" * 2000, False),
    ],
)
def test_repo_path_problem_takes_only_repository_paths(path: str, ok: bool) -> None:
    """A repository path is owner/name parts, printable, without spaces, capped."""
    assert (repo_path_problem(path) is None) is ok

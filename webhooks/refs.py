r"""Branch, tag and package-version names as forges give them: which ones isorunner takes.

Pure: no I/O, and no regular expressions. Every name here comes from a delivery, so
each check is one pass over a name whose length is capped first: nothing a pusher
chooses can make a check slow (a backtracking pattern on a 40-character tag once
stalled the whole service for days).

- `ref_name_problem`: a branch or tag name that `git check-ref-format` would refuse,
  or one longer than `MAX_REF_NAME_BYTES`. A forge never sends such a name for a real
  push, so a delivery carrying one is ignored with the reason.
- `package_version_problem`: a tag that GitLab's generic package registry would refuse
  as a `package_version` (`\A(\.?[\w\+-]+\.?)+\z`, forge-apis.md §6.2). isorunner
  publishes a GitLab release tag there, so such a tag is ignored at intake rather than
  refused after its ISO was built.
"""

from __future__ import annotations

import string
from typing import Final

MAX_REF_NAME_BYTES: Final = 255
"""The longest branch or tag name taken (UTF-8 bytes, without `refs/heads/`).

GitLab refuses a commit status whose `ref` is longer than 255 characters (forge-apis.md
§3.3), and a ref is a file whose name component cannot pass 255 bytes on common file
systems; a longer name would build and then never get its status.
"""

MAX_PACKAGE_VERSION: Final = 255
"""The longest GitLab generic package version taken (GitLab's column limit)."""

# git check-ref-format: no control characters, space, ~ ^ : ? * [ or backslash.
_REF_FORBIDDEN: Final = frozenset(" ~^:?*[\\\x7f") | frozenset(map(chr, range(0x20)))
_VERSION_CHARS: Final = frozenset(string.ascii_letters + string.digits + "_+-.")


def ref_name_problem(name: str) -> str | None:
    """Why `name` is not a branch or tag name git would create, or None when it is one.

    Args:
        name: The short name (`main`, `release/1.x`, `v1.0`), without `refs/heads/`.

    Returns:
        A reason fit for an "ignored" answer, or None.
    """
    if (
        len(name) > MAX_REF_NAME_BYTES
        or len(name.encode("utf-8", "surrogatepass")) > MAX_REF_NAME_BYTES
    ):
        return f"is longer than {MAX_REF_NAME_BYTES} bytes"
    return _syntax_problem(name)


def _syntax_problem(name: str) -> str | None:
    """The rules of `git check-ref-format`, for a name known to be short."""
    if name in ("", "@"):
        return "is empty or '@'"
    if any(char in _REF_FORBIDDEN for char in name):
        return "has a control character, a space or one of ~ ^ : ? * [ \\"
    if ".." in name or "@{" in name or "//" in name:
        return "has '..', '@{' or '//'"
    if name.startswith("/") or name.endswith(("/", ".")):
        return "starts with '/' or ends with '/' or '.'"
    if any(part.startswith(".") or part.endswith(".lock") for part in name.split("/")):
        return "has a part that starts with '.' or ends with '.lock'"
    return None


def package_version_problem(version: str) -> str | None:
    r"""Why GitLab would refuse `version` as a generic package version, or None.

    Equivalent to GitLab's `\A(\.?[\w\+-]+\.?)+\z` with ASCII `\w`: letters,
    digits, `_`, `+`, `-` and dots, where dots come at most one at either end and at
    most two in a row between other characters. Checked in one pass, after the length.

    Args:
        version: The tag name to publish under.

    Returns:
        A reason fit for an error message or an "ignored" answer, or None.
    """
    if len(version) > MAX_PACKAGE_VERSION:
        return f"is longer than {MAX_PACKAGE_VERSION} characters"
    if not version.strip("."):
        return "has no letter or digit"
    if not _VERSION_CHARS.issuperset(version):
        return "may hold only letters, digits, '.', '_', '+' and '-'"
    if version.startswith("..") or version.endswith("..") or "..." in version:
        return "has more than one '.' at an end, or more than two in a row"
    return None


MAX_REPO_PATH: Final = 1024
"""The longest repository path taken (`owner/name`, GitLab's `group/sub/project`)."""


def repo_path_problem(path: str) -> str | None:
    """Why `path` is not a repository path a forge would send, or None when it is one.

    A path is at least two non-empty parts joined by `/`, without whitespace or control
    characters, at most `MAX_REPO_PATH` characters.
    """
    if len(path) > MAX_REPO_PATH:
        return f"is longer than {MAX_REPO_PATH} characters"
    if any(char.isspace() or not char.isprintable() for char in path):
        return "has whitespace or a control character"
    parts = path.split("/")
    if len(parts) < 2 or "" in parts:
        return "is not owner/name"
    return None

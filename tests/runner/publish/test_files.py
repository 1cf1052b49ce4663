"""Tests for runner.publish.files: which files a release carries, in which order."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from runner.publish.files import MAX_NOTES_BYTES, publish_order, release_files, release_notes
from webhooks.build import RELEASE_NOTES_FILE

pytestmark = pytest.mark.anyio


def test_publish_order_puts_images_first_sums_last_and_signatures_after_their_file() -> None:
    """ISOs, other files, then sums in their order; each signature right after its file."""
    names = [
        "b2sums",
        "sha256sums.minisig",
        "provenance.json",
        "z.iso",
        "sha256sums",
        "a.iso.minisig",
        "a.iso",
    ]
    assert publish_order(names) == [
        "a.iso",
        "a.iso.minisig",
        "z.iso",
        "provenance.json",
        "sha256sums",
        "sha256sums.minisig",
        "b2sums",
    ]


async def test_release_files_lists_every_regular_file_with_its_digest(tmp_path: Path) -> None:
    """Every plain regular file goes up; the sums file's digests are used, others computed."""
    listed = hashlib.sha256(b"ISO").hexdigest()
    (tmp_path / "image.iso").write_bytes(b"ISO")
    (tmp_path / "sha256sums").write_text(f"{listed}  image.iso\n")
    (tmp_path / "image.iso.minisig").write_bytes(b"sig")
    (tmp_path / ".hidden").write_bytes(b"x")
    (tmp_path / "link.iso").symlink_to(tmp_path / "image.iso")
    files = await release_files(tmp_path)
    assert [(f.name, f.size) for f in files] == [
        ("image.iso", 3),
        ("image.iso.minisig", 3),
        ("sha256sums", 76),
    ]
    assert [f.sha256 for f in files] == [
        listed,
        hashlib.sha256(b"sig").hexdigest(),
        hashlib.sha256((tmp_path / "sha256sums").read_bytes()).hexdigest(),
    ]


async def test_release_files_of_a_missing_directory_is_empty(tmp_path: Path) -> None:
    """A build whose directory is gone has nothing to publish."""
    assert await release_files(tmp_path / "gone") == []


async def test_release_notes_are_the_body_the_build_wrote(tmp_path: Path) -> None:
    """The hidden notes file's text is the body; it is never published as a file."""
    (tmp_path / RELEASE_NOTES_FILE).write_text("**Reproducible**: rebuilt.\n")
    (tmp_path / "image.iso").write_bytes(b"ISO")
    assert await release_notes(tmp_path) == "**Reproducible**: rebuilt."
    assert [f.name for f in await release_files(tmp_path)] == ["image.iso"]


async def test_release_notes_absent_oversized_or_undecodable(tmp_path: Path) -> None:
    """No file gives None, an oversized one is ignored, broken UTF-8 is replaced."""
    assert await release_notes(tmp_path) is None
    (tmp_path / RELEASE_NOTES_FILE).write_bytes(b"x" * (MAX_NOTES_BYTES + 1))
    assert await release_notes(tmp_path) is None
    (tmp_path / RELEASE_NOTES_FILE).write_bytes(b"ok \xff\xfe")
    assert await release_notes(tmp_path) == "ok \ufffd\ufffd"

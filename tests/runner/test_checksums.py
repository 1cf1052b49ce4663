"""Tests for runner.checksums: digests match hashlib and coreutils, sums files verify."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from runner.checksums import compute_checksums, compute_checksums_async, format_sums_file
from tests.conftest import require_tool

# Sizes around the 1 MiB read size: empty, short, exact, one over, several chunks.
SIZES = [0, 1, 1 << 20, (1 << 20) + 1, (5 << 20) + 12345]


@pytest.mark.parametrize("size", SIZES)
def test_compute_checksums_matches_hashlib(tmp_path: Path, size: int) -> None:
    """Both digests and the size equal a plain hashlib pass over the same bytes."""
    data = os.urandom(size)
    path = tmp_path / "file.iso"
    path.write_bytes(data)

    sums = compute_checksums(path)

    assert sums.sha256 == hashlib.sha256(data).hexdigest()
    assert sums.b2 == hashlib.blake2b(data).hexdigest()
    assert sums.size == size


@pytest.mark.parametrize(("tool", "field"), [("sha256sum", "sha256"), ("b2sum", "b2")])
def test_compute_checksums_matches_coreutils(tmp_path: Path, tool: str, field: str) -> None:
    """Each digest is the one the coreutils tool prints for the same file."""
    executable = require_tool(tool)
    path = tmp_path / "image.iso"
    path.write_bytes(os.urandom((3 << 20) + 7))

    sums = compute_checksums(path)
    printed = subprocess.run(
        [executable, path.name], cwd=tmp_path, capture_output=True, check=True, text=True
    ).stdout

    assert printed == format_sums_file([(getattr(sums, field), path.name)])


def test_compute_checksums_reports_missing_file(tmp_path: Path) -> None:
    """A file that does not exist raises FileNotFoundError."""
    with pytest.raises(FileNotFoundError):
        compute_checksums(tmp_path / "absent.iso")


@pytest.mark.anyio
async def test_compute_checksums_async_matches_sync(tmp_path: Path) -> None:
    """The async wrapper returns what the blocking function returns."""
    path = tmp_path / "file.iso"
    path.write_bytes(os.urandom(70_000))

    assert await compute_checksums_async(path) == compute_checksums(path)


def _write_release(directory: Path) -> dict[str, bytes]:
    files = {
        "isorunner-2026.11.29-x86_64.iso": os.urandom((2 << 20) + 3),
        "isorunner-2026.11.29-x86_64.iso.sig": os.urandom(566),
        "name with spaces.txt": b"",
    }
    for name, data in files.items():
        (directory / name).write_bytes(data)
    return files


@pytest.mark.parametrize(("tool", "field"), [("sha256sum", "sha256"), ("b2sum", "b2")])
def test_format_sums_file_verifies_with_coreutils(tmp_path: Path, tool: str, field: str) -> None:
    """`sha256sum -c` and `b2sum -c` accept the sums file for every listed file."""
    executable = require_tool(tool)
    files = _write_release(tmp_path)
    entries = [(getattr(compute_checksums(tmp_path / name), field), name) for name in files]
    (tmp_path / "SUMS").write_text(format_sums_file(entries))

    result = subprocess.run(
        [executable, "--strict", "-c", "SUMS"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count(": OK\n") == len(files)


@pytest.mark.parametrize(("tool", "field"), [("sha256sum", "sha256"), ("b2sum", "b2")])
def test_format_sums_file_fails_verification_after_a_change(
    tmp_path: Path, tool: str, field: str
) -> None:
    """The coreutils check fails once a listed file's content changes."""
    executable = require_tool(tool)
    files = _write_release(tmp_path)
    entries = [(getattr(compute_checksums(tmp_path / name), field), name) for name in files]
    (tmp_path / "SUMS").write_text(format_sums_file(entries))
    (tmp_path / "isorunner-2026.11.29-x86_64.iso.sig").write_bytes(b"tampered")

    result = subprocess.run(
        [executable, "--strict", "-c", "SUMS"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )

    assert result.returncode == 1
    assert "isorunner-2026.11.29-x86_64.iso.sig: FAILED" in result.stdout


def test_format_sums_file_writes_two_spaces_and_newlines() -> None:
    """Each entry is one `<digest>  <name>` line ending in a newline, in the given order."""
    text = format_sums_file([("ab" * 32, "b.iso"), ("cd" * 32, "a.iso")])

    assert text.splitlines(keepends=True) == [f"{'ab' * 32}  b.iso\n", f"{'cd' * 32}  a.iso\n"]


def test_format_sums_file_of_nothing_is_empty() -> None:
    """No entries give an empty sums file."""
    assert format_sums_file([]) == ""


@pytest.mark.parametrize("name", ["", "a\nb.iso", "a\\b.iso", "a\rb.iso"])
def test_format_sums_file_refuses_names_coreutils_would_escape(name: str) -> None:
    """Empty names and names holding a newline, carriage return or backslash are refused."""
    with pytest.raises(ValueError, match="cannot be listed in a sums file"):
        format_sums_file([("ab" * 32, name)])


@pytest.mark.parametrize("digest", ["", "AB" * 32, "xyz", "ab cd"])
def test_format_sums_file_refuses_non_hex_digests(digest: str) -> None:
    """A digest that is not lowercase hex is refused."""
    with pytest.raises(ValueError, match="is not lowercase hex"):
        format_sums_file([(digest, "a.iso")])

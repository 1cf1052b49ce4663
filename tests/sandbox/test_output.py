"""Tests for sandbox.output: poisoned outputs are refused without following or blocking."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from sandbox.exceptions import OutputRejected
from sandbox.output import check_output


def _out(tmp_path: Path) -> Path:
    out = tmp_path / "output"
    out.mkdir()
    (out / "x-1-x86_64.iso").write_bytes(b"iso" * 100)
    return out


def test_check_output_accepts_regular_files(tmp_path: Path) -> None:
    """Regular files under the cap, one of them an ISO, are returned with their sizes."""
    out = _out(tmp_path)
    (out / "sub").mkdir()
    (out / "sub" / "sha256sums").write_text("abc")
    files = check_output(out, max_bytes=10_000)
    assert [(f.path.relative_to(out).as_posix(), f.size) for f in files] == [
        ("sub/sha256sums", 3),
        ("x-1-x86_64.iso", 300),
    ]


def test_check_output_rejects_a_symlink_to_a_host_file(tmp_path: Path) -> None:
    """A symlink (e.g. to /etc/shadow) is refused and never followed."""
    out = _out(tmp_path)
    (out / "evil.iso").symlink_to("/etc/shadow")
    with pytest.raises(OutputRejected, match="symbolic link") as info:
        check_output(out, max_bytes=10_000)
    assert info.value.path == "evil.iso"


def test_check_output_rejects_a_fifo_without_hanging(tmp_path: Path) -> None:
    """A FIFO is refused at once (lstat), so the check can never block on it."""
    out = _out(tmp_path)
    os.mkfifo(out / "evil.iso")
    with pytest.raises(OutputRejected, match="FIFO"):
        check_output(out, max_bytes=10_000)


def test_check_output_rejects_a_device_node(tmp_path: Path) -> None:
    """A device node is refused (created here with mknod as root, else a socket stands in)."""
    out = _out(tmp_path)
    if os.geteuid() == 0:
        os.mknod(out / "evil.iso", 0o600 | 0o060000, os.makedev(7, 0))
    else:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.bind(str(out / "evil.iso"))
    with pytest.raises(OutputRejected, match="device node"):
        check_output(out, max_bytes=10_000)


def test_check_output_rejects_hard_links(tmp_path: Path) -> None:
    """A file with a second hard link is refused."""
    out = _out(tmp_path)
    os.link(out / "x-1-x86_64.iso", tmp_path / "elsewhere")
    with pytest.raises(OutputRejected, match="hard links"):
        check_output(out, max_bytes=10_000)


def test_check_output_rejects_huge_sparse_files(tmp_path: Path) -> None:
    """A file whose size hugely exceeds its allocation is refused."""
    out = _out(tmp_path)
    with (out / "sparse.iso").open("wb") as handle:
        handle.truncate(64 << 20)
    with pytest.raises(OutputRejected, match="sparse"):
        check_output(out, max_bytes=1 << 30)


def test_check_output_rejects_oversized_files_and_totals(tmp_path: Path) -> None:
    """One file over the cap, or several adding up past it, are refused."""
    out = _out(tmp_path)
    (out / "big").write_bytes(b"x" * 400)
    with pytest.raises(OutputRejected, match="over the limit"):
        check_output(out, max_bytes=350)
    (out / "big").write_bytes(b"x" * 200)
    with pytest.raises(OutputRejected, match="totals more than"):
        check_output(out, max_bytes=350)


def test_check_output_requires_an_iso(tmp_path: Path) -> None:
    """An output without any .iso is refused."""
    out = tmp_path / "o"
    out.mkdir()
    (out / "log.txt").write_text("x")
    with pytest.raises(OutputRejected, match=r"no \.iso"):
        check_output(out, max_bytes=10_000)

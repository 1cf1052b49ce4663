"""Tests of runner.packages.syncdb: reading sync database entries, writing a build's database."""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

import pytest

from runner.packages.exceptions import DatabaseInvalid
from runner.packages.syncdb import (
    check_entry,
    check_filename,
    parse_desc,
    read_entries,
    write_repository_db,
)
from tests.conftest import require_tool

SHA = "a" * 64


def _desc(name: str = "foo", version: str = "1.0-1", **fields: str) -> bytes:
    values = {
        "FILENAME": f"{name}-{version}-any.pkg.tar.zst",
        "NAME": name,
        "VERSION": version,
        "CSIZE": "1234",
        "SHA256SUM": SHA,
        **fields,
    }
    return "".join(f"%{k}%\n{v}\n\n" for k, v in values.items()).encode()


def _db(path: Path, entries: dict[str, bytes], *, mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tar:  # type: ignore[call-overload]
        for key, desc in entries.items():
            info = tarfile.TarInfo(f"{key}/")
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
            info = tarfile.TarInfo(f"{key}/desc")
            info.size = len(desc)
            tar.addfile(info, io.BytesIO(desc))
    return path


def test_parse_desc_reads_fields_with_several_values() -> None:
    """Each %FIELD% keeps its values in order; blank lines end a field."""
    text = "%NAME%\nfoo\n\n%DEPENDS%\nbar>=1\nbaz\n\n%PGPSIG%\nAAAA\n"
    assert parse_desc(text) == {"NAME": ["foo"], "DEPENDS": ["bar>=1", "baz"], "PGPSIG": ["AAAA"]}


def test_check_entry_reads_the_fields_used() -> None:
    """File name, sha256, size and signature come from the entry."""
    entry = check_entry("foo-1.0-1", {"desc": _desc(PGPSIG="c2ln")})
    assert (entry.filename, entry.sha256, entry.size, entry.pgpsig) == (
        "foo-1.0-1-any.pkg.tar.zst",
        SHA,
        1234,
        "c2ln",
    )


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"FILENAME": "../../etc/passwd.pkg.tar.zst"}, "unusable file name"),
        ({"FILENAME": ".hidden.pkg.tar.zst"}, "unusable file name"),
        ({"FILENAME": "foo.tar"}, "unusable file name"),
        ({"SHA256SUM": "z" * 64}, "malformed %SHA256SUM%"),
        ({"CSIZE": "-1"}, "malformed %CSIZE%"),
        ({"CSIZE": "9" * 40}, "malformed %CSIZE%"),
        ({"NAME": "bar"}, "describes bar-1.0-1"),
    ],
)
def test_check_entry_refuses_hostile_fields(fields: dict[str, str], message: str) -> None:
    """A mirror's database cannot smuggle a path, a bad hash or a bad size through."""
    with pytest.raises(DatabaseInvalid, match=message):
        check_entry("foo-1.0-1", {"desc": _desc(**fields)})


def test_check_filename_is_linear_on_long_input() -> None:
    """A megabyte-long file name is refused by length."""
    assert not check_filename("a" * 1_000_000 + ".pkg.tar.zst")
    assert check_filename("foo-1:2.0-1-x86_64.pkg.tar.zst")


def test_read_entries_returns_only_the_wanted(tmp_path: Path) -> None:
    """Only the wanted entries are read; missing ones are absent."""
    db = _db(tmp_path / "core.db", {"foo-1.0-1": _desc(), "bar-2-1": _desc("bar", "2-1")})
    entries = read_entries(db, ["foo-1.0-1", "nope-1-1"])
    assert list(entries) == ["foo-1.0-1"]


@pytest.mark.parametrize("mode", ["w:gz", "w:xz", "w:bz2", "w"])
def test_read_entries_reads_every_compression(tmp_path: Path, mode: str) -> None:
    """gzip, xz, bzip2 and plain databases are read."""
    db = _db(tmp_path / "core.db", {"foo-1.0-1": _desc()}, mode=mode)
    assert read_entries(db, ["foo-1.0-1"])["foo-1.0-1"].sha256 == SHA


def test_read_entries_reads_zstd(tmp_path: Path) -> None:
    """A zstd-compressed database is read through the zstd tool."""
    require_tool("zstd")
    plain = _db(tmp_path / "core.tar", {"foo-1.0-1": _desc()}, mode="w")
    subprocess.run(["zstd", "-q", str(plain), "-o", str(tmp_path / "core.db")], check=True)
    assert read_entries(tmp_path / "core.db", ["foo-1.0-1"])["foo-1.0-1"].name == "foo"


def test_read_entries_refuses_garbage(tmp_path: Path) -> None:
    """A file that is no database is refused, naming it."""
    bad = tmp_path / "core.db"
    bad.write_bytes(b"<html>mirror error page</html>")
    with pytest.raises(DatabaseInvalid, match=r"core\.db is not a readable package database"):
        read_entries(bad, ["foo-1.0-1"])


def test_read_entries_refuses_an_oversized_entry(tmp_path: Path) -> None:
    """An entry file over the size bound is refused before it is read."""
    db = _db(tmp_path / "core.db", {"foo-1.0-1": _desc(DESC="x" * (1 << 21))})
    with pytest.raises(DatabaseInvalid, match="too large"):
        read_entries(db, ["foo-1.0-1"])


def test_write_repository_db_is_what_pacman_reads(tmp_path: Path) -> None:
    """The build's database holds the entries verbatim and the isorunner.db link."""
    entry = check_entry("foo-1.0-1", {"desc": _desc()})
    db = write_repository_db(tmp_path, [entry])
    assert (tmp_path / "isorunner.db").readlink() == Path("isorunner.db.tar.gz")
    with tarfile.open(db) as tar:
        assert tar.getnames() == ["foo-1.0-1", "foo-1.0-1/desc"]
        member = tar.extractfile("foo-1.0-1/desc")
        assert member is not None
        assert member.read() == _desc()


def test_write_repository_db_equals_repo_add(tmp_path: Path) -> None:
    """For the same package file, the entry written equals what repo-add writes."""
    require_tool("repo-add")
    pkg = tmp_path / "hello-1.0-1-any.pkg.tar.gz"
    pkginfo = b"pkgname = hello\npkgbase = hello\npkgver = 1.0-1\narch = any\nsize = 3\n"
    with tarfile.open(pkg, "w:gz") as tar:
        for name, data in ((".PKGINFO", pkginfo), ("usr/share/hello", b"hi\n")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    upstream = tmp_path / "up"
    upstream.mkdir()
    subprocess.run(
        ["repo-add", "-q", str(upstream / "core.db.tar.gz"), str(pkg)],
        check=True,
        capture_output=True,
    )
    entry = read_entries(upstream / "core.db.tar.gz", ["hello-1.0-1"])["hello-1.0-1"]
    ours = tmp_path / "ours"
    ours.mkdir()
    write_repository_db(ours, [entry])
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    subprocess.run(
        ["repo-add", "-q", str(theirs / "isorunner.db.tar.gz"), str(pkg)],
        check=True,
        capture_output=True,
    )

    def desc(path: Path) -> bytes:
        with tarfile.open(path) as tar:
            member = tar.extractfile("hello-1.0-1/desc")
            assert member is not None
            return member.read()

    assert desc(ours / "isorunner.db.tar.gz") == desc(theirs / "isorunner.db.tar.gz")

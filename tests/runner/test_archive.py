"""Tests for runner.archive: hostile tarballs are refused, good profiles land intact."""

from __future__ import annotations

import dataclasses
import gzip
import io
import os
import re
import stat
import tarfile
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runner.archive import ExtractLimits, extract_profile, extract_profile_async
from runner.exceptions import ArchiveRejected

TOP = "owner-repo-abc1234"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@dataclass(frozen=True, slots=True)
class Entry:
    """One member to put in a test archive."""

    name: str
    type: bytes = tarfile.REGTYPE
    data: bytes = b""
    mode: int = 0o644
    linkname: str = ""
    mtime: int = 1_700_000_000


def d(name: str, mode: int = 0o755) -> Entry:
    """A directory entry."""
    return Entry(name, tarfile.DIRTYPE, mode=mode)


def f(name: str, data: bytes = b"x", mode: int = 0o644) -> Entry:
    """A regular file entry."""
    return Entry(name, tarfile.REGTYPE, data, mode)


def link(name: str, target: str) -> Entry:
    """A symbolic link entry."""
    return Entry(name, tarfile.SYMTYPE, linkname=target, mode=0o777)


def tar_bytes(entries: list[Entry], pax_headers: dict[str, str] | None = None) -> bytes:
    """Serialise entries as an uncompressed tar, exactly as given (no checks, no fixes)."""
    out = io.BytesIO()
    with tarfile.open(
        fileobj=out, mode="w", format=tarfile.PAX_FORMAT, pax_headers=pax_headers or {}
    ) as tar:
        for entry in entries:
            info = tarfile.TarInfo(entry.name)
            info.type = entry.type
            info.mode = entry.mode
            info.linkname = entry.linkname
            info.size = len(entry.data) if entry.type == tarfile.REGTYPE else 0
            info.mtime = entry.mtime
            tar.addfile(info, io.BytesIO(entry.data))
    return out.getvalue()


def write_archive(
    path: Path, entries: list[Entry], pax_headers: dict[str, str] | None = None
) -> Path:
    """Write entries as a .tar.gz at path and return the path."""
    path.write_bytes(gzip.compress(tar_bytes(entries, pax_headers)))
    return path


def lying_archive(path: Path, name: str, claimed: int, actual: bytes) -> Path:
    """Write a .tar.gz whose one file header claims `claimed` bytes but carries `actual`."""
    out = io.BytesIO()
    info = tarfile.TarInfo(f"{TOP}/{name}")
    info.size = claimed
    top = tarfile.TarInfo(TOP)
    top.type = tarfile.DIRTYPE
    out.write(top.tobuf(format=tarfile.PAX_FORMAT))
    out.write(info.tobuf(format=tarfile.PAX_FORMAT))
    out.write(actual)
    path.write_bytes(gzip.compress(out.getvalue()))
    return path


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    """Where the profile goes (not created yet)."""
    return tmp_path / "profile"


def good_profile() -> list[Entry]:
    """A small archiso-like profile as a GitHub tarball lays it out."""
    return [
        d(f"{TOP}/"),
        f(f"{TOP}/profiledef.sh", b"iso_name=test\n", 0o644),
        f(f"{TOP}/packages.x86_64", b"base\nlinux\n"),
        d(f"{TOP}/airootfs"),
        d(f"{TOP}/airootfs/etc"),
        link(f"{TOP}/airootfs/etc/localtime", "/usr/share/zoneinfo/UTC"),
        link(f"{TOP}/airootfs/etc/resolv.conf", "../run/systemd/resolve/stub-resolv.conf"),
        f(f"{TOP}/airootfs/root/customize_airootfs.sh", b"#!/bin/sh\ntrue\n", 0o755),
    ]


def test_extract_profile_strips_the_top_level_directory(tmp_path: Path, dest: Path) -> None:
    """The profile's files land directly under dest, without the archive's top directory."""
    archive = write_archive(tmp_path / "a.tar.gz", good_profile())

    extract_profile(archive, dest)

    assert sorted(p.name for p in dest.iterdir()) == [
        "airootfs",
        "packages.x86_64",
        "profiledef.sh",
    ]
    assert (dest / "profiledef.sh").read_bytes() == b"iso_name=test\n"
    assert (dest / "airootfs/root/customize_airootfs.sh").read_bytes() == b"#!/bin/sh\ntrue\n"


def test_extract_profile_keeps_absolute_symlink_inert(tmp_path: Path, dest: Path) -> None:
    """An absolute symlink stays a link with its target text unchanged and is not followed."""
    archive = write_archive(tmp_path / "a.tar.gz", good_profile())

    report = extract_profile(archive, dest)

    localtime = dest / "airootfs/etc/localtime"
    assert localtime.is_symlink()
    assert os.readlink(localtime) == "/usr/share/zoneinfo/UTC"
    assert (
        os.readlink(dest / "airootfs/etc/resolv.conf") == "../run/systemd/resolve/stub-resolv.conf"
    )
    assert report.symlinks == 2


def test_extract_profile_reports_counts_and_bytes(tmp_path: Path, dest: Path) -> None:
    """The report counts regular files, directories, links and the bytes written."""
    entries = good_profile()
    archive = write_archive(tmp_path / "a.tar.gz", entries)

    report = extract_profile(archive, dest)

    regular = [e for e in entries if e.type == tarfile.REGTYPE]
    assert report.files == len(regular)
    assert report.total_bytes == sum(len(e.data) for e in regular)
    # airootfs, airootfs/etc and the implicit airootfs/root.
    assert report.directories == 3
    assert report.commit is None


def test_extract_profile_reports_commit_from_pax_global_header(tmp_path: Path, dest: Path) -> None:
    """The commit id in a GitHub tarball's pax global header appears in the report."""
    archive = write_archive(tmp_path / "a.tar.gz", good_profile(), {"comment": COMMIT})

    assert extract_profile(archive, dest).commit == COMMIT


def test_extract_profile_reports_the_newest_entry_time(tmp_path: Path, dest: Path) -> None:
    """The newest entry time (the commit time, in a git archive) is in the report."""
    entries = [d(TOP), dataclasses.replace(f(f"{TOP}/profiledef.sh"), mtime=1_735_787_045)]
    archive = write_archive(tmp_path / "a.tar.gz", entries)

    assert extract_profile(archive, dest).newest_mtime == 1_735_787_045


def test_extract_profile_reports_no_time_when_entries_have_none(tmp_path: Path, dest: Path) -> None:
    """An archive whose entries carry no time (mtime 0) reports none rather than 1970."""
    entries = [dataclasses.replace(d(TOP), mtime=0), dataclasses.replace(f(f"{TOP}/x"), mtime=0)]
    archive = write_archive(tmp_path / "a.tar.gz", entries)

    assert extract_profile(archive, dest).newest_mtime is None


def test_extract_profile_ignores_a_comment_that_is_no_commit_id(tmp_path: Path, dest: Path) -> None:
    """A pax global comment that is not a hex object id is not reported as a commit."""
    archive = write_archive(tmp_path / "a.tar.gz", good_profile(), {"comment": "hello"})

    assert extract_profile(archive, dest).commit is None


def test_extract_profile_sanitises_modes(tmp_path: Path, dest: Path) -> None:
    """setuid, setgid, sticky and group/world-write bits are dropped; the exec bit stays."""
    archive = write_archive(
        tmp_path / "a.tar.gz",
        [
            d(f"{TOP}/"),
            d(f"{TOP}/tmp", 0o1777),
            f(f"{TOP}/tmp/suid", b"#!/bin/sh\n", 0o6777),
            f(f"{TOP}/tmp/shared", b"data", 0o666),
            f(f"{TOP}/tmp/private", b"data", 0o400),
        ],
    )

    extract_profile(archive, dest)

    def mode(path: Path) -> int:
        return stat.S_IMODE(path.lstat().st_mode)

    assert mode(dest / "tmp") == 0o755
    assert mode(dest / "tmp/suid") == 0o755
    assert mode(dest / "tmp/shared") == 0o644
    assert mode(dest / "tmp/private") == 0o644
    assert mode(dest) == 0o755


def test_extract_profile_accepts_directory_entry_after_its_files(
    tmp_path: Path, dest: Path
) -> None:
    """A directory listed after a file inside it is not a duplicate."""
    archive = write_archive(
        tmp_path / "a.tar.gz", [f(f"{TOP}/a/b/c", b"1"), d(f"{TOP}/a/b"), d(f"{TOP}/")]
    )

    extract_profile(archive, dest)

    assert (dest / "a/b/c").read_bytes() == b"1"


def test_extract_profile_normalises_dot_and_double_slash(tmp_path: Path, dest: Path) -> None:
    """`./` prefixes and doubled slashes in member names are harmless and dropped."""
    archive = write_archive(tmp_path / "a.tar.gz", [d(f"./{TOP}/"), f(f"./{TOP}//a/./b", b"2")])

    extract_profile(archive, dest)

    assert (dest / "a/b").read_bytes() == b"2"


def test_extract_profile_reads_multi_member_gzip(tmp_path: Path, dest: Path) -> None:
    """A tar split over two concatenated gzip members is read whole."""
    raw = tar_bytes(good_profile())
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(gzip.compress(raw[:3000]) + gzip.compress(raw[3000:]))

    extract_profile(archive, dest)

    assert (dest / "packages.x86_64").read_bytes() == b"base\nlinux\n"


def test_extract_profile_refuses_an_existing_destination(tmp_path: Path, dest: Path) -> None:
    """An existing destination is an error and is left as it was."""
    dest.mkdir()
    (dest / "keep").write_text("mine")
    archive = write_archive(tmp_path / "a.tar.gz", good_profile())

    with pytest.raises(FileExistsError):
        extract_profile(archive, dest)

    assert (dest / "keep").read_text() == "mine"


HOSTILE: dict[str, tuple[list[Entry], str]] = {
    "absolute path": (
        [d(f"{TOP}/"), f("/etc/isorunner-test-absolute")],
        "archive entry '/etc/isorunner-test-absolute' is an absolute path",
    ),
    "dot-dot": (
        [d(f"{TOP}/"), f(f"{TOP}/../../etc/passwd")],
        f"archive entry '{TOP}/../../etc/passwd' escapes the profile directory",
    ),
    "dot-dot inside": (
        [d(f"{TOP}/"), f(f"{TOP}/a/../b")],
        "escapes the profile directory",
    ),
    "file through symlink": (
        [d(f"{TOP}/"), link(f"{TOP}/a", "b"), d(f"{TOP}/b"), f(f"{TOP}/a/x")],
        f"archive entry '{TOP}/a/x' passes through symlink '{TOP}/a'",
    ),
    "write through symlink to /etc": (
        [d(f"{TOP}/"), link(f"{TOP}/etc", "/etc"), f(f"{TOP}/etc/isorunner-test-escape")],
        f"archive entry '{TOP}/etc/isorunner-test-escape' passes through symlink '{TOP}/etc'",
    ),
    "directory through symlink": (
        [d(f"{TOP}/"), link(f"{TOP}/etc", "/etc"), d(f"{TOP}/etc/sub")],
        "passes through symlink",
    ),
    "symlink through symlink": (
        [d(f"{TOP}/"), link(f"{TOP}/etc", "/etc"), link(f"{TOP}/etc/x", "/")],
        "passes through symlink",
    ),
    "through a file": (
        [d(f"{TOP}/"), f(f"{TOP}/a"), f(f"{TOP}/a/b")],
        f"archive entry '{TOP}/a/b' passes through file '{TOP}/a'",
    ),
    "hard link": (
        [d(f"{TOP}/"), f(f"{TOP}/a"), Entry(f"{TOP}/b", tarfile.LNKTYPE, linkname=f"{TOP}/a")],
        f"archive entry '{TOP}/b' is a hard link",
    ),
    "character device": (
        [d(f"{TOP}/"), Entry(f"{TOP}/null", tarfile.CHRTYPE)],
        "is a device file",
    ),
    "block device": (
        [d(f"{TOP}/"), Entry(f"{TOP}/sda", tarfile.BLKTYPE)],
        "is a device file",
    ),
    "fifo": (
        [d(f"{TOP}/"), Entry(f"{TOP}/pipe", tarfile.FIFOTYPE)],
        "is a FIFO",
    ),
    "unknown type": (
        [d(f"{TOP}/"), Entry(f"{TOP}/odd", b"Z")],
        "has an unsupported type",
    ),
    "two top-level directories": (
        [d(f"{TOP}/"), f(f"{TOP}/a"), d("other/"), f("other/b")],
        "archive entry 'other' is outside the top-level directory",
    ),
    "top-level file beside the directory": (
        [d(f"{TOP}/"), f("README")],
        "is outside the top-level directory",
    ),
    "no top-level directory": (
        [f("profiledef.sh")],
        "archive entry 'profiledef.sh' is not a directory",
    ),
    "top-level symlink": (
        [link(TOP, "/")],
        "is not a directory",
    ),
    "duplicate file": (
        [d(f"{TOP}/"), f(f"{TOP}/a", b"1"), f(f"{TOP}/a", b"2")],
        f"archive entry '{TOP}/a' duplicates an earlier entry",
    ),
    "file over directory": (
        [d(f"{TOP}/"), d(f"{TOP}/a"), f(f"{TOP}/a")],
        "duplicates an earlier entry",
    ),
    "duplicate directory": (
        [d(f"{TOP}/"), d(f"{TOP}/a"), d(f"{TOP}/a")],
        "duplicates an earlier entry",
    ),
    "duplicate top-level directory": (
        [d(f"{TOP}/"), f(f"{TOP}/a"), d(f"{TOP}/")],
        "duplicates an earlier entry",
    ),
    "symlink replacing a file": (
        [d(f"{TOP}/"), f(f"{TOP}/a"), link(f"{TOP}/a", "/etc/passwd")],
        "duplicates an earlier entry",
    ),
    "empty symlink target": (
        [d(f"{TOP}/"), link(f"{TOP}/a", "")],
        "is a symbolic link with an empty target",
    ),
    "overlong symlink target": (
        [d(f"{TOP}/"), link(f"{TOP}/a", "x/" * 2500)],
        f"archive entry '{TOP}/a' cannot be created safely (File name too long)",
    ),
    "overlong name": (
        [d(f"{TOP}/"), f(f"{TOP}/{'n' * 256}")],
        "has a path component longer than 255 bytes",
    ),
    "empty archive": ([], "is empty"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_extract_profile_refuses_hostile_archive(tmp_path: Path, dest: Path, case: str) -> None:
    """Each hostile archive is refused with a message naming the rule, and dest is removed."""
    entries, message = HOSTILE[case]
    archive = write_archive(tmp_path / "a.tar.gz", entries)

    with pytest.raises(ArchiveRejected, match=re.escape(message)):
        extract_profile(archive, dest)

    assert not dest.exists()
    assert not Path("/etc/isorunner-test-escape").exists()
    assert not Path("/etc/isorunner-test-absolute").exists()


def test_extract_profile_removes_partial_tree_after_rejection(tmp_path: Path, dest: Path) -> None:
    """Files written before the offending entry are removed along with dest."""
    entries = [*good_profile(), f(f"{TOP}/../escape")]
    archive = write_archive(tmp_path / "a.tar.gz", entries)

    with pytest.raises(ArchiveRejected) as caught:
        extract_profile(archive, dest)

    assert caught.value.entry == f"{TOP}/../escape"
    assert not dest.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tar.gz"]


def test_extract_profile_symlink_to_outside_does_not_redirect_writes(
    tmp_path: Path, dest: Path
) -> None:
    """A symlink to a directory outside dest never receives a later entry's data."""
    outside = tmp_path / "outside"
    outside.mkdir()
    archive = write_archive(
        tmp_path / "a.tar.gz",
        [d(f"{TOP}/"), link(f"{TOP}/out", str(outside)), f(f"{TOP}/out/planted", b"evil")],
    )

    with pytest.raises(ArchiveRejected, match="passes through symlink"):
        extract_profile(archive, dest)

    assert list(outside.iterdir()) == []


def test_extract_profile_limits_entry_count(tmp_path: Path, dest: Path) -> None:
    """One entry more than max_entries is refused and named."""
    entries = [d(f"{TOP}/"), *(f(f"{TOP}/f{i}") for i in range(4))]
    archive = write_archive(tmp_path / "a.tar.gz", entries)

    with pytest.raises(ArchiveRejected, match="over the limit of 3 entries") as caught:
        extract_profile(archive, dest, limits=ExtractLimits(max_entries=3))

    assert caught.value.entry == f"{TOP}/f3"
    assert not dest.exists()


def test_extract_profile_allows_entries_up_to_the_limit(tmp_path: Path, dest: Path) -> None:
    """Exactly max_entries entries are accepted."""
    entries = [d(f"{TOP}/"), *(f(f"{TOP}/f{i}") for i in range(3))]
    archive = write_archive(tmp_path / "a.tar.gz", entries)

    assert extract_profile(archive, dest, limits=ExtractLimits(max_entries=3)).files == 3


def test_extract_profile_limits_depth(tmp_path: Path, dest: Path) -> None:
    """A path nested deeper than max_depth is refused; one at the limit is fine."""
    at_limit = f"{TOP}/" + "/".join(["d"] * 3)
    too_deep = f"{TOP}/" + "/".join(["e"] * 4)
    ok = write_archive(tmp_path / "ok.tar.gz", [d(f"{TOP}/"), f(at_limit)])
    bad = write_archive(tmp_path / "bad.tar.gz", [d(f"{TOP}/"), f(too_deep)])
    limits = ExtractLimits(max_depth=3)

    extract_profile(ok, tmp_path / "ok", limits=limits)
    with pytest.raises(ArchiveRejected, match="nested deeper than 3 levels"):
        extract_profile(bad, dest, limits=limits)

    assert not dest.exists()


def test_extract_profile_limits_single_file_size(tmp_path: Path, dest: Path) -> None:
    """A file larger than max_file_bytes is refused; one of exactly that size is fine."""
    limit = 3 << 20
    ok = write_archive(tmp_path / "ok.tar.gz", [d(f"{TOP}/"), f(f"{TOP}/blob", b"\0" * limit)])
    big = write_archive(
        tmp_path / "big.tar.gz", [d(f"{TOP}/"), f(f"{TOP}/blob", b"\0" * (limit + 1))]
    )
    limits = ExtractLimits(max_file_bytes=limit)

    assert extract_profile(ok, tmp_path / "ok", limits=limits).total_bytes == limit
    with pytest.raises(ArchiveRejected, match=f"larger than the limit of {limit} bytes"):
        extract_profile(big, dest, limits=limits)

    assert not dest.exists()


def test_extract_profile_limits_total_size(tmp_path: Path, dest: Path) -> None:
    """Files each under the single-file cap but together over the total cap are refused."""
    entries = [d(f"{TOP}/"), *(f(f"{TOP}/f{i}", b"y" * 1000) for i in range(5))]
    archive = write_archive(tmp_path / "a.tar.gz", entries)
    limits = ExtractLimits(max_file_bytes=1000, max_total_bytes=4500)

    with pytest.raises(ArchiveRejected, match="over the limit of 4500 bytes") as caught:
        extract_profile(archive, dest, limits=limits)

    assert caught.value.entry == f"{TOP}/f4"


def test_extract_profile_counts_written_bytes_not_header_claims(tmp_path: Path, dest: Path) -> None:
    """A header claiming more than the data holds is cut off by the size cap as bytes arrive."""
    archive = lying_archive(tmp_path / "a.tar.gz", "blob", 64 << 20, b"\0" * (2 << 20))

    with pytest.raises(ArchiveRejected, match="larger than the limit of 1048576 bytes"):
        extract_profile(archive, dest, limits=ExtractLimits(max_file_bytes=1 << 20))

    assert not dest.exists()


def test_extract_profile_refuses_header_claiming_missing_data(tmp_path: Path, dest: Path) -> None:
    """A header claiming more data than the archive holds is refused, naming that entry."""
    archive = lying_archive(tmp_path / "a.tar.gz", "blob", 10_000, b"z" * 600)

    with pytest.raises(ArchiveRejected, match=r"not a valid tar\.gz archive") as caught:
        extract_profile(archive, dest)

    assert caught.value.entry == f"{TOP}/blob"
    assert f"archive entry '{TOP}/blob' is cut short" in str(caught.value)
    assert not dest.exists()


def test_extract_profile_names_the_entry_a_truncated_archive_ends_in(
    tmp_path: Path, dest: Path
) -> None:
    """An archive cut inside a member's data is refused with that member's name."""
    data = tar_bytes([*good_profile(), f(f"{TOP}/blob", os.urandom(64_000))])
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(gzip.compress(data[: len(data) - 40_000]))

    with pytest.raises(ArchiveRejected, match="cut short") as caught:
        extract_profile(archive, dest)

    assert caught.value.entry == f"{TOP}/blob"


def test_extract_profile_names_the_entry_before_a_cut_header(tmp_path: Path, dest: Path) -> None:
    """An archive cut inside a header is refused naming the entry read before it."""
    data = tar_bytes(good_profile())
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        third = tar.getmembers()[2]
    # Stored (level 0) deflate keeps offsets: gzip's 10-byte header, a 5-byte block header.
    stored = gzip.compress(data, compresslevel=0)
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(stored[: 15 + third.offset + 100])

    with pytest.raises(ArchiveRejected, match=r"not a valid tar\.gz archive: .*after the entry"):
        extract_profile(archive, dest)


def test_extract_profile_refuses_non_gzip_data(tmp_path: Path, dest: Path) -> None:
    """Bytes that are not gzip are refused as an invalid archive."""
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(b"<html>rate limited</html>" * 100)

    with pytest.raises(ArchiveRejected, match=r"not a valid tar\.gz archive") as caught:
        extract_profile(archive, dest)

    assert caught.value.entry is None
    assert caught.value.__cause__ is not None
    assert not dest.exists()


def test_extract_profile_refuses_gzip_of_non_tar(tmp_path: Path, dest: Path) -> None:
    """A gzip file whose content is not a tar archive is refused as invalid."""
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(gzip.compress(b"just some text\n" * 100))

    with pytest.raises(ArchiveRejected, match=r"not a valid tar\.gz archive"):
        extract_profile(archive, dest)


@pytest.mark.parametrize("cut", [4, 8, 200, 2000])
def test_extract_profile_refuses_truncated_archive(tmp_path: Path, dest: Path, cut: int) -> None:
    """An archive missing its last bytes (even only the gzip trailer) is refused."""
    whole = gzip.compress(tar_bytes([*good_profile(), f(f"{TOP}/blob", os.urandom(4000))]))
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(whole[:-cut])

    with pytest.raises(ArchiveRejected, match=r"not a valid tar\.gz archive"):
        extract_profile(archive, dest)

    assert not dest.exists()


def test_extract_profile_refuses_corrupt_checksum(tmp_path: Path, dest: Path) -> None:
    """A flipped bit in the gzip CRC is detected and the archive refused."""
    data = bytearray(gzip.compress(tar_bytes(good_profile())))
    data[-6] ^= 0x01
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(bytes(data))

    with pytest.raises(ArchiveRejected, match=r"not a valid tar\.gz archive"):
        extract_profile(archive, dest)

    assert not dest.exists()


def test_extract_profile_refuses_long_trailer(tmp_path: Path, dest: Path) -> None:
    """More than 1 MiB of data after the tar end-of-archive marker is refused."""
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(gzip.compress(tar_bytes(good_profile()) + b"\0" * (2 << 20)))

    with pytest.raises(ArchiveRejected, match="unexpected data after the end"):
        extract_profile(archive, dest)

    assert not dest.exists()


def test_extract_profile_stops_inflating_after_early_rejection(tmp_path: Path, dest: Path) -> None:
    """A refusal at the first entry stops the inflating thread instead of reading on."""
    archive = write_archive(
        tmp_path / "a.tar.gz",
        [d(f"{TOP}/"), f("/abs"), f(f"{TOP}/zeros", b"\0" * (64 << 20))],
    )

    with pytest.raises(ArchiveRejected, match="is an absolute path"):
        extract_profile(archive, dest)

    assert [t for t in threading.enumerate() if t.name == "archive-inflate"] == []


@pytest.mark.anyio
async def test_extract_profile_async_extracts_in_a_thread(tmp_path: Path, dest: Path) -> None:
    """The async wrapper extracts the same profile and returns the same report."""
    archive = write_archive(tmp_path / "a.tar.gz", good_profile(), {"comment": COMMIT})

    report = await extract_profile_async(archive, dest)

    assert report.commit == COMMIT
    assert (dest / "profiledef.sh").is_file()


_COMPONENTS = st.sampled_from(["a", "b", ".", "..", "", "etc", "/"])
_NAMES = st.lists(_COMPONENTS, min_size=1, max_size=5).map("/".join)
_TARGETS = st.sampled_from(["/", "..", "../..", "a", "/tmp", "OUTSIDE", "../../OUTSIDE"])


@st.composite
def _member(draw: st.DrawFn) -> Entry:
    name = draw(_NAMES)
    prefix = draw(st.sampled_from([f"{TOP}/", "", "/", "../", f"{TOP}/../"]))
    kind = draw(st.sampled_from(["file", "dir", "link"]))
    if kind == "file":
        return f(prefix + name, b"payload")
    if kind == "dir":
        return d(prefix + name)
    return link(prefix + name, draw(_TARGETS))


@settings(max_examples=150, deadline=None)
@given(members=st.lists(_member(), max_size=8))
def test_extract_profile_never_writes_outside_dest(members: list[Entry]) -> None:
    """Whatever the member names and link targets, nothing appears outside dest."""
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        outside = root / "outside"
        outside.mkdir()
        resolved = [
            Entry(m.name, m.type, m.data, m.mode, m.linkname.replace("OUTSIDE", str(outside)))
            for m in members
        ]
        archive = write_archive(root / "a.tar.gz", [d(f"{TOP}/"), *resolved])
        dest = root / "work" / "profile"
        dest.parent.mkdir()

        try:
            extract_profile(archive, dest)
        except ArchiveRejected:
            assert not dest.exists()

        assert list(outside.iterdir()) == []
        assert sorted(p.name for p in root.iterdir()) == ["a.tar.gz", "outside", "work"]
        assert [p.name for p in dest.parent.iterdir()] in ([], ["profile"])
        for dirpath, _dirs, files in os.walk(dest):
            for name in files:
                path = Path(dirpath) / name
                if not path.is_symlink():
                    assert path.resolve().is_relative_to(dest.resolve())

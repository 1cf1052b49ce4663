"""Tests of runner.packages.cache: content addressing, links, locks and LRU pruning."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from runner.packages.cache import PackageCache, file_sha256, verify_stamp
from runner.packages.exceptions import PackageSetupError
from tests.conftest import require


def _put(cache: PackageCache, data: bytes, *, age: float = 0.0) -> str:
    sha = hashlib.sha256(data).hexdigest()
    tmp = cache.temp_path("x")
    tmp.write_bytes(data)
    path = cache.add(tmp, sha)
    if age:
        then = path.stat().st_mtime - age
        os.utime(path, (then, then))
    return sha


def test_add_makes_a_read_only_object_named_by_content(tmp_path: Path) -> None:
    """A file enters objects/ under its sha256, read-only, and the temp file is gone."""
    cache = PackageCache(tmp_path, max_bytes=1 << 20)
    sha = _put(cache, b"hello")
    path = cache.object_path(sha)
    assert path == tmp_path / "objects" / sha[:2] / sha
    assert path.read_bytes() == b"hello"
    assert stat.S_IMODE(path.stat().st_mode) == 0o444
    assert cache.has(sha)
    assert list((tmp_path / "tmp").iterdir()) == []


def test_add_of_the_same_content_twice_keeps_one_copy(tmp_path: Path) -> None:
    """Adding identical content again leaves one object."""
    cache = PackageCache(tmp_path, max_bytes=1 << 20)
    first = _put(cache, b"same")
    assert _put(cache, b"same") == first
    assert len(list((tmp_path / "objects").rglob("*"))) == 2  # the <ab> dir and the file


def test_link_into_shares_the_inode(tmp_path: Path) -> None:
    """A build's repository gets a hard link, not a copy."""
    cache = PackageCache(tmp_path / "c", max_bytes=1 << 20)
    sha = _put(cache, b"pkg")
    dest = tmp_path / "repo-file"
    cache.link_into(sha, dest)
    assert dest.stat().st_ino == cache.object_path(sha).stat().st_ino
    assert cache.object_path(sha).stat().st_nlink == 2


def test_link_into_another_file_system_is_refused(tmp_path: Path) -> None:
    """Across file systems that cannot reflink, the error says where to put the cache."""
    require(Path("/dev/shm").is_dir(), "a tmpfs at /dev/shm")
    cache = PackageCache(tmp_path, max_bytes=1 << 20)
    sha = _put(cache, b"pkg")
    with tempfile.TemporaryDirectory(dir="/dev/shm") as other:
        with pytest.raises(PackageSetupError, match=r"same file system as sandbox\.sandbox_root"):
            cache.link_into(sha, Path(other) / "f")
        assert list(Path(other).iterdir()) == []


def test_prune_removes_least_recently_used_first(tmp_path: Path) -> None:
    """Pruning removes the oldest-used objects until the cache fits, with their marks."""
    cache = PackageCache(tmp_path, max_bytes=250)
    old = _put(cache, b"o" * 100, age=300)
    mid = _put(cache, b"m" * 100, age=200)
    new = _put(cache, b"n" * 100, age=100)
    cache.mark_verified("stamp", old)
    cache.add_signature(old, b"sig")
    cache.touch(mid)  # used just now: newest
    report = cache.prune()
    assert (report.ran, report.removed, report.freed_bytes, report.kept_bytes) == (
        True,
        1,
        100,
        200,
    )
    assert not cache.has(old)
    assert cache.has(mid)
    assert cache.has(new)
    assert not cache.is_verified("stamp", old)
    assert cache.signature(old) is None


def test_prune_keeps_objects_in_use_by_a_build(tmp_path: Path) -> None:
    """An object linked into a build's repository is kept even when it is the oldest."""
    cache = PackageCache(tmp_path / "c", max_bytes=100)
    used = _put(cache, b"u" * 100, age=300)
    other = _put(cache, b"x" * 100, age=100)
    cache.link_into(used, tmp_path / "in-use")
    report = cache.prune()
    assert report.removed == 1
    assert cache.has(used)
    assert not cache.has(other)


def test_prune_waits_for_no_sync(tmp_path: Path) -> None:
    """While a sync holds the cache, pruning skips; afterwards it runs and clears tmp/."""
    cache = PackageCache(tmp_path, max_bytes=0)
    sha = _put(cache, b"data")
    (tmp_path / "tmp" / "half-download").write_bytes(b"partial")
    with cache.sync_lock():
        assert not cache.prune().ran
        assert cache.has(sha)
    report = cache.prune()
    assert report.ran
    assert not cache.has(sha)
    assert list((tmp_path / "tmp").iterdir()) == []


def test_object_lock_is_exclusive(tmp_path: Path) -> None:
    """One holder at a time: a second try gets nothing until the first releases."""
    cache = PackageCache(tmp_path, max_bytes=1 << 20)
    sha = "b" * 64
    first = cache.try_object_lock(sha)
    assert first is not None
    assert cache.try_object_lock(sha) is None
    cache.release_lock(first)
    second = cache.try_object_lock(sha)
    assert second is not None
    cache.release_lock(second)


def test_adopt_incoming_takes_only_matching_content(tmp_path: Path) -> None:
    """A pre-warmed file is adopted when its content matches; a mismatch is left alone."""
    cache = PackageCache(tmp_path, max_bytes=1 << 20)
    incoming = tmp_path / "incoming"
    (incoming / "foo-1-1-any.pkg.tar.zst").write_bytes(b"foo")
    (incoming / "foo-1-1-any.pkg.tar.zst.sig").write_bytes(b"sig")
    (incoming / "bar-1-1-any.pkg.tar.zst").write_bytes(b"tampered")
    foo = hashlib.sha256(b"foo").hexdigest()
    bar = hashlib.sha256(b"bar").hexdigest()
    assert cache.adopt_incoming("foo-1-1-any.pkg.tar.zst", foo)
    assert cache.has(foo)
    sig = cache.signature(foo)
    assert sig is not None
    assert sig.read_bytes() == b"sig"
    assert not (incoming / "foo-1-1-any.pkg.tar.zst").exists()
    assert not cache.adopt_incoming("bar-1-1-any.pkg.tar.zst", bar)
    assert (incoming / "bar-1-1-any.pkg.tar.zst").exists()
    assert not cache.adopt_incoming("none-1-1-any.pkg.tar.zst", bar)


def test_db_state_round_trips_and_survives_garbage(tmp_path: Path) -> None:
    """A database URL's state is stored and read back; a damaged file reads as none."""
    cache = PackageCache(tmp_path, max_bytes=1 << 20)
    cache.set_db_state("k", {"db": "d", "etag": None})
    assert cache.db_state("k") == {"db": "d", "etag": None}
    (tmp_path / "dbs" / "k.json").write_text("{broken")
    assert cache.db_state("k") is None


@pytest.fixture
def keyring(tmp_path: Path) -> Iterator[Path]:
    """A fake GnuPG home with a pubring and a trustdb."""
    home = tmp_path / "gnupg"
    home.mkdir()
    (home / "pubring.gpg").write_bytes(b"keys")
    (home / "trustdb.gpg").write_bytes(b"trust")
    yield home
    shutil.rmtree(home)


def test_verify_stamp_changes_with_the_keyring_and_sig_level(keyring: Path) -> None:
    """A new key, new trust or another SigLevel gives another stamp."""
    first = verify_stamp(keyring, "Required")
    assert verify_stamp(keyring, "Required") == first
    assert verify_stamp(keyring, "Optional TrustAll") != first
    (keyring / "trustdb.gpg").write_bytes(b"trust2")
    assert verify_stamp(keyring, "Required") != first


def test_file_sha256_reads_in_pieces(tmp_path: Path) -> None:
    """The file hash equals hashlib's over the whole content."""
    data = os.urandom(3 << 20)
    (tmp_path / "f").write_bytes(data)
    assert file_sha256(tmp_path / "f") == hashlib.sha256(data).hexdigest()


def test_cache_refuses_an_unusable_root(tmp_path: Path) -> None:
    """A cache root that cannot be created names the config key."""
    (tmp_path / "file").write_text("x")
    with pytest.raises(PackageSetupError, match=r"packages\.cache_dir"):
        PackageCache(tmp_path / "file" / "cache", max_bytes=1)

"""The host's package cache: one copy of each file, shared by every build, bounded by LRU.

I/O: file system only (flock, link, rename, utime); every method is synchronous and
short, except `prune`, so async callers run them with `anyio.to_thread`.

Layout under the cache root (the root is created 0755; objects are 0444, never changed):

    objects/<ab>/<sha256>        package and database files, named by their content
    sigs/<sha256>                the detached signature a mirror served for that content
    verified/<stamp>/<ab>/<sha>  empty marker: pacman checked this content under the
                                 keyring and SigLevel that `stamp` names
    dbs/<key>.json               a database URL's last answer: object ids, ETag, Last-Modified
    locks/<sha256>               download locks (one sync downloads a file, others wait)
    tmp/                         downloads in progress
    incoming/                    files put here by `setup-sandbox.sh --packages` (pre-warm),
                                 adopted when a build needs a file of that name and content
    lock                         shared by syncs, exclusive for pruning

Concurrency: files enter `objects/` only by an atomic rename of a finished, checked
download, so a reader never sees half a file; two syncs wanting the same file take its
lock in turn and the second finds it there. Pruning runs only when no sync holds the
shared lock, and never removes an object linked into a build's repository (`st_nlink`
> 1). Last use is the object's mtime, set on every use (LRU).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from runner.packages.exceptions import PackageSetupError

#: ioctl(FICLONE): a reflink copy on btrfs/xfs when a hard link is not possible.
_FICLONE = 0x40049409
_HASH_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class PruneReport:
    """What one pruning pass did.

    Attributes:
        ran: False when a sync held the cache, so nothing was looked at.
        removed: Objects removed.
        freed_bytes: Their total size.
        kept_bytes: The size of the objects left.
    """

    ran: bool
    removed: int = 0
    freed_bytes: int = 0
    kept_bytes: int = 0


def file_sha256(path: Path) -> str:
    """The sha256 of a file, read in 1 MiB pieces."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _check_sha(sha256: str) -> str:
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise ValueError(f"not a sha256: {sha256!r}")
    return sha256


class PackageCache:
    """The content-addressed package cache (see the module docstring).

    Args:
        root: The cache directory; created if missing.
        max_bytes: `prune` removes least recently used objects above this size.
    """

    def __init__(self, root: Path, *, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes
        try:
            for sub in ("objects", "sigs", "verified", "dbs", "locks", "tmp", "incoming"):
                (root / sub).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise PackageSetupError(
                f"cannot create the package cache at {root}: {exc.strerror}; check "
                "packages.cache_dir in the config"
            ) from exc

    # --- objects -------------------------------------------------------------------

    def object_path(self, sha256: str) -> Path:
        """Where the object with this sha256 lives (whether or not it exists)."""
        _check_sha(sha256)
        return self.root / "objects" / sha256[:2] / sha256

    def has(self, sha256: str) -> bool:
        """Whether the object exists."""
        return self.object_path(sha256).is_file()

    def touch(self, sha256: str) -> bool:
        """Record a use of the object (LRU); False if it is gone."""
        try:
            os.utime(self.object_path(sha256))
        except FileNotFoundError:
            return False
        return True

    def temp_path(self, label: str) -> Path:
        """A fresh path under `tmp/` for a download (the label is for people reading)."""
        safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in label)[:80]
        return self.root / "tmp" / f"{uuid.uuid4().hex}-{safe}"

    def add(self, path: Path, sha256: str) -> Path:
        """Move a finished, checked file into `objects/` under its sha256.

        Args:
            path: A file under `tmp/` whose content has this sha256.
            sha256: Its sha256.

        Returns:
            The object's path.
        """
        dest = self.object_path(sha256)
        dest.parent.mkdir(exist_ok=True)
        os.chmod(path, 0o444)
        # Atomic: readers see the old identical object or the new one, never half.
        os.replace(path, dest)
        return dest

    def add_signature(self, sha256: str, signature: bytes) -> None:
        """Keep the detached signature a mirror served for the object."""
        dest = self.root / "sigs" / _check_sha(sha256)
        tmp = self.temp_path("sig")
        tmp.write_bytes(signature)
        os.replace(tmp, dest)

    def signature(self, sha256: str) -> Path | None:
        """The kept detached signature of the object, if any."""
        path = self.root / "sigs" / _check_sha(sha256)
        return path if path.is_file() else None

    def adopt_incoming(self, filename: str, sha256: str) -> bool:
        """Take `incoming/<filename>` into `objects/` if its content has this sha256.

        Args:
            filename: A package file name (from a checked database entry).
            sha256: What the database says its content is.

        Returns:
            True when the object now exists.
        """
        source = self.root / "incoming" / filename
        if not source.is_file() or source.is_symlink():
            return False
        if file_sha256(source) != sha256:
            return False
        tmp = self.temp_path(filename)
        os.link(source, tmp)
        self.add(tmp, sha256)
        source.unlink(missing_ok=True)
        sig = source.with_name(filename + ".sig")
        if sig.is_file() and not sig.is_symlink():
            self.add_signature(sha256, sig.read_bytes()[: 64 * 1024])
            sig.unlink(missing_ok=True)
        return True

    def link_into(self, sha256: str, dest: Path) -> None:
        """Put the object at `dest` as a hard link (or a reflink), never as a copy.

        Raises:
            PackageSetupError: `dest` is on another file system that cannot reflink.
        """
        source = self.object_path(sha256)
        try:
            os.link(source, dest)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
        else:
            return
        try:
            with source.open("rb") as src, dest.open("xb") as dst:
                fcntl.ioctl(dst.fileno(), _FICLONE, src.fileno())
        except OSError as exc:
            dest.unlink(missing_ok=True)
            raise PackageSetupError(
                f"the package cache {self.root} and {dest.parent} are on different file "
                "systems and cannot share files; put packages.cache_dir on the same file "
                "system as sandbox.sandbox_root"
            ) from exc

    # --- verification markers ------------------------------------------------------

    def _marker(self, stamp: str, sha256: str) -> Path:
        return self.root / "verified" / stamp / sha256[:2] / _check_sha(sha256)

    def is_verified(self, stamp: str, sha256: str) -> bool:
        """Whether pacman checked this content under `stamp` (see `verify_stamp`)."""
        return self._marker(stamp, sha256).exists()

    def mark_verified(self, stamp: str, sha256: str) -> None:
        """Record that pacman checked this content under `stamp`."""
        marker = self._marker(stamp, sha256)
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()

    # --- database state ------------------------------------------------------------

    def db_state(self, key: str) -> dict[str, str | None] | None:
        """The last stored state of a database URL (`key` from `db_key`), if any."""
        try:
            data = json.loads((self.root / "dbs" / f"{key}.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        if not isinstance(data, dict):
            return None
        return {k: v if isinstance(v, str) else None for k, v in data.items()}

    def set_db_state(self, key: str, state: dict[str, str | None]) -> None:
        """Store the state of a database URL atomically."""
        tmp = self.temp_path("db-state")
        tmp.write_text(json.dumps(state, sort_keys=True))
        os.replace(tmp, self.root / "dbs" / f"{key}.json")

    # --- locks ---------------------------------------------------------------------

    @contextlib.contextmanager
    def sync_lock(self) -> Iterator[None]:
        """Hold the cache shared for a sync (pruning waits until no sync holds it)."""
        fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)

    def try_object_lock(self, sha256: str) -> int | None:
        """Take the download lock of one object without waiting; its fd, or None if held."""
        fd = os.open(
            self.root / "locks" / _check_sha(sha256), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644
        )
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return fd

    @staticmethod
    def release_lock(fd: int) -> None:
        """Release a lock taken by `try_object_lock`."""
        os.close(fd)

    # --- pruning -------------------------------------------------------------------

    def size(self) -> int:
        """The total size of the objects."""
        return sum(st.st_size for _, st in self._objects())

    def _objects(self) -> Iterator[tuple[Path, os.stat_result]]:
        for sub in (self.root / "objects").iterdir():
            with contextlib.suppress(FileNotFoundError), os.scandir(sub) as entries:
                for entry in entries:
                    with contextlib.suppress(FileNotFoundError):
                        yield Path(entry.path), entry.stat(follow_symlinks=False)

    def prune(self, *, max_bytes: int | None = None) -> PruneReport:
        """Remove least recently used objects until the cache fits its bound.

        Skips the pass (returns `ran=False`) when a sync holds the cache. Objects linked
        into a build's repository stay. Unfinished downloads in `tmp/` go too (no sync
        is running).

        Args:
            max_bytes: The bound; the cache's own by default.
        """
        bound = self.max_bytes if max_bytes is None else max_bytes
        fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return PruneReport(ran=False)
            for leftover in (self.root / "tmp").iterdir():
                leftover.unlink(missing_ok=True)
            objects = sorted(self._objects(), key=lambda item: item[1].st_mtime)
            total = sum(st.st_size for _, st in objects)
            removed = freed = 0
            for path, st in objects:
                if total <= bound:
                    break
                if st.st_nlink > 1:
                    continue
                sha = path.name
                path.unlink(missing_ok=True)
                for extra in (self.root / "sigs" / sha, self.root / "locks" / sha):
                    extra.unlink(missing_ok=True)
                for stamp in (self.root / "verified").iterdir():
                    (stamp / sha[:2] / sha).unlink(missing_ok=True)
                total -= st.st_size
                freed += st.st_size
                removed += 1
            return PruneReport(ran=True, removed=removed, freed_bytes=freed, kept_bytes=total)
        finally:
            os.close(fd)


def verify_stamp(gpgdir: Path, sig_level: str) -> str:
    """Name a keyring's state and a SigLevel: a verification mark is valid for both only.

    A keyring update (new or revoked keys, changed trust) changes the stamp, so every
    package is checked again under the new keyring.
    """
    digest = hashlib.sha256(sig_level.encode())
    for name in ("pubring.gpg", "pubring.kbx", "trustdb.gpg"):
        path = gpgdir / name
        digest.update(name.encode())
        with contextlib.suppress(FileNotFoundError):
            digest.update(path.read_bytes())
    return digest.hexdigest()[:24]


def db_key(url: str) -> str:
    """The cache's name for a database URL."""
    return hashlib.sha256(url.encode()).hexdigest()[:32]

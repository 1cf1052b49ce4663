"""Safe extraction of a forge's profile archive (`.tar.gz`) into a fresh directory.

Owns the rules a profile archive must follow before any of it reaches the build:
exactly one top-level directory (stripped), no absolute paths or `..`, no hard links,
devices or FIFOs, no duplicate entries, nothing written through a symbolic link, caps
on entries, depth and sizes, and sanitised modes. Symbolic links are kept as inert
links with their target text unchanged (archiso profiles ship absolute ones such as
`airootfs/etc/localtime`); they are never followed here.

Does I/O: reads the archive file and writes the destination tree. `extract_profile`
blocks; `extract_profile_async` runs it in a worker thread.

How the rules are enforced: the archive is read as a stream (`tarfile` mode `r|`, over
a gzip decoder that checks the gzip CRC and length, which tarfile's own `r|gz` does
not), and every member is written by hand, never with `extract`/`extractall`. Files
are created with `O_CREAT|O_EXCL|O_NOFOLLOW` relative to directory file descriptors
opened with `O_DIRECTORY|O_NOFOLLOW`, so even a symlink the bookkeeping missed could
not redirect a write. Sizes are counted from the bytes actually written.
"""

from __future__ import annotations

import errno
import functools
import os
import re
import shutil
import tarfile
import zlib
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, BinaryIO, Final, TypeVar

import anyio.to_thread

from runner.exceptions import ArchiveRejected
from runner.gzipstream import GzipStream
from webhooks.bounds import quoted

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

_T = TypeVar("_T")

# Read size for both the compressed input and the file copies: large enough that
# Python's per-call overhead vanishes, small enough that memory stays flat.
_CHUNK: Final = 1 << 20
# tarfile's read size; each short read copies what is left of its buffer, so keep it small.
_TAR_BUFFER: Final = 64 << 10
# Bytes allowed after the tar end-of-archive marker (tar pads to 10 KiB records).
_MAX_TRAILER: Final = 1 << 20
# Linux NAME_MAX: a longer component fails at creation, so refuse it up front.
_NAME_MAX: Final = 255
# GitHub tarballs carry the commit id in the pax global header's `comment` (like `git archive`).
_OBJECT_ID: Final = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")

_DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_DIR_MODE: Final = 0o755
_FILE_MODE: Final = 0o644
_EXEC_MODE: Final = 0o755
# From a creation call, these are the entry's fault: something is already at that name
# (the bookkeeping should have caught it), or a symlink target longer than PATH_MAX.
_ENTRY_ERRNOS: Final = frozenset({errno.EEXIST, errno.ELOOP, errno.ENOTDIR, errno.ENAMETOOLONG})


@dataclass(frozen=True, slots=True)
class ExtractLimits:
    """Caps that bound what one archive may put on disk.

    Attributes:
        max_entries: Members (files, directories, links) below the top-level directory.
        max_depth: Path components below the top-level directory.
        max_file_bytes: Bytes in any one regular file.
        max_total_bytes: Bytes in all regular files together.
    """

    max_entries: int = 50_000
    max_depth: int = 32
    max_file_bytes: int = 1 << 30
    max_total_bytes: int = 2 << 30


@dataclass(frozen=True, slots=True)
class ExtractReport:
    """What an extraction wrote.

    Attributes:
        commit: The commit id from the pax global header (GitHub tarballs), else None.
        files: Regular files written.
        directories: Directories created below the destination, implicit ones included.
        symlinks: Symbolic links created.
        total_bytes: Bytes written into regular files.
        newest_mtime: The newest entry time in the archive (Unix seconds), or None
            when no entry has a positive one. `git archive` — behind GitHub's
            tarballs and GitLab's archives — stamps every entry with the commit's
            time, so this is the commit time whichever event triggered the build.
    """

    commit: str | None
    files: int
    directories: int
    symlinks: int
    total_bytes: int
    newest_mtime: int | None = None


def _member_parts(name: str) -> tuple[str, ...]:
    """Split a member name into path components, refusing absolute paths and `..`."""
    if name.startswith("/"):
        raise ArchiveRejected("is an absolute path", entry=name)
    parts = tuple(part for part in name.split("/") if part not in ("", "."))
    if ".." in parts:
        raise ArchiveRejected("escapes the profile directory", entry=name)
    if not parts:
        raise ArchiveRejected("has an empty path", entry=name)
    for part in parts:
        # A UTF-8 character takes at most 4 bytes: only long parts need encoding.
        if len(part) > _NAME_MAX // 4 and len(os.fsencode(part)) > _NAME_MAX:
            raise ArchiveRejected(f"has a path component longer than {_NAME_MAX} bytes", entry=name)
    return parts


def _file_mode(mode: int) -> int:
    """Sanitise a regular file's mode: 0755 if the owner may execute it, else 0644."""
    return _EXEC_MODE if mode & 0o100 else _FILE_MODE


class _Tree:
    """The destination tree being written, and what each path in it is.

    Paths are tuples of components below the destination. The bookkeeping is what
    refuses duplicates and paths through symlinks with a clear message; the
    `O_NOFOLLOW`/`O_EXCL` flags are the backstop should it ever be wrong.
    """

    def __init__(self, root_fd: int, top: str, limits: ExtractLimits) -> None:
        self._root_fd = root_fd
        self._top = top
        self._limits = limits
        # What each path is: "dir" (explicit entry), "implicit" (created as a parent),
        # "file" or "symlink".
        self._kinds: dict[tuple[str, ...], str] = {(): "dir"}
        # The last parent directory opened: tar lists a directory's entries together.
        self._open_path: tuple[str, ...] = ()
        self._open_fd = root_fd
        self.files = 0
        self.directories = 0
        self.symlinks = 0
        self.total_bytes = 0

    def close(self) -> None:
        """Close the cached parent directory descriptor (never the root's)."""
        if self._open_fd != self._root_fd:
            os.close(self._open_fd)
        self._open_path, self._open_fd = (), self._root_fd

    def _parent_fd(self, path: tuple[str, ...], entry: str) -> int:
        """Open (creating as needed) the directory holding `path`; refuse links and files."""
        parent = path[:-1]
        if parent == self._open_path:
            return self._open_fd
        for depth in range(1, len(parent) + 1):
            kind = self._kinds.get(parent[:depth])
            if kind in ("symlink", "file"):
                where = "/".join((self._top, *parent[:depth]))
                raise ArchiveRejected(f"passes through {kind} {where!r}", entry=entry)
        self.close()
        fd = self._root_fd
        try:
            for depth in range(1, len(parent) + 1):
                prefix = parent[:depth]
                if prefix not in self._kinds:
                    self._mkdir(fd, prefix, entry)
                    self._kinds[prefix] = "implicit"
                next_fd = os.open(prefix[-1], _DIR_FLAGS, dir_fd=fd)
                if fd != self._root_fd:
                    os.close(fd)
                fd = next_fd
        except BaseException:
            if fd != self._root_fd:
                os.close(fd)
            raise
        self._open_path, self._open_fd = parent, fd
        return fd

    def _mkdir(self, parent_fd: int, path: tuple[str, ...], entry: str) -> None:
        """Create a directory with mode 0755 exactly (mkdir's mode passes through the umask)."""
        self._create(lambda at, name: os.mkdir(name, _DIR_MODE, dir_fd=at), parent_fd, path, entry)
        fd = os.open(path[-1], _DIR_FLAGS, dir_fd=parent_fd)
        try:
            os.fchmod(fd, _DIR_MODE)
        finally:
            os.close(fd)
        self.directories += 1

    def _create(
        self,
        make: Callable[[int, str], _T],
        parent_fd: int,
        path: tuple[str, ...],
        entry: str,
    ) -> _T:
        """Run a creation call, turning an error the entry caused into a rejection."""
        try:
            return make(parent_fd, path[-1])
        except OSError as exc:
            if exc.errno in _ENTRY_ERRNOS:
                raise ArchiveRejected(
                    f"cannot be created safely ({exc.strerror})", entry=entry
                ) from exc
            raise

    def _claim(self, path: tuple[str, ...], entry: str) -> None:
        """Refuse a second entry for a path already written."""
        if path in self._kinds:
            raise ArchiveRejected("duplicates an earlier entry", entry=entry)

    def add_dir(self, path: tuple[str, ...], entry: str) -> None:
        """Create a directory entry (mode 0755), or adopt a parent created for an earlier entry."""
        parent_fd = self._parent_fd(path, entry)
        if self._kinds.get(path) == "implicit":
            self._kinds[path] = "dir"
            return
        self._claim(path, entry)
        self._mkdir(parent_fd, path, entry)
        self._kinds[path] = "dir"

    def add_symlink(self, path: tuple[str, ...], target: str, entry: str) -> None:
        """Create an inert symbolic link whose target text is kept as it is."""
        if not target:
            raise ArchiveRejected("is a symbolic link with an empty target", entry=entry)
        parent_fd = self._parent_fd(path, entry)
        self._claim(path, entry)
        self._create(lambda at, name: os.symlink(target, name, dir_fd=at), parent_fd, path, entry)
        self._kinds[path] = "symlink"
        self.symlinks += 1

    def add_file(self, path: tuple[str, ...], member: tarfile.TarInfo, source: IO[bytes]) -> None:
        """Copy a regular file's data from `source`, enforcing the size caps as it goes."""
        entry = member.name
        parent_fd = self._parent_fd(path, entry)
        self._claim(path, entry)
        fd = self._create(
            lambda at, name: os.open(name, _FILE_FLAGS, 0o600, dir_fd=at), parent_fd, path, entry
        )
        self._kinds[path] = "file"
        self.files += 1
        try:
            self._copy(source, fd, entry)
            os.fchmod(fd, _file_mode(member.mode))
            mtime = int(member.mtime)
            if 0 <= mtime < 1 << 33:
                os.utime(fd, (mtime, mtime))
        finally:
            os.close(fd)

    def _copy(self, source: IO[bytes], fd: int, entry: str) -> None:
        limits = self._limits
        written = 0
        while chunk := source.read(_CHUNK):
            written += len(chunk)
            # Count the bytes actually produced, never the header's claim: sparse members
            # expand, and a header may lie.
            if written > limits.max_file_bytes:
                raise ArchiveRejected(
                    f"is larger than the limit of {limits.max_file_bytes} bytes", entry=entry
                )
            if self.total_bytes + written > limits.max_total_bytes:
                raise ArchiveRejected(
                    f"takes the archive over the limit of {limits.max_total_bytes} bytes",
                    entry=entry,
                )
            pending = memoryview(chunk)
            while pending:
                pending = pending[os.write(fd, pending) :]
        self.total_bytes += written


def _top_and_path(
    member: tarfile.TarInfo, top: str | None, limits: ExtractLimits
) -> tuple[str, tuple[str, ...]]:
    """Check a member's place in the archive; return the top-level name and the stripped path."""
    parts = _member_parts(member.name)
    if top is None:
        top = parts[0]
    elif parts[0] != top:
        raise ArchiveRejected(
            f"is outside the top-level directory {top!r}"
            " (the archive must hold exactly one top-level directory)",
            entry=member.name,
        )
    if len(parts) == 1 and not member.isdir():
        raise ArchiveRejected(
            "is not a directory (the archive must hold exactly one top-level directory)",
            entry=member.name,
        )
    if len(parts) - 1 > limits.max_depth:
        raise ArchiveRejected(f"is nested deeper than {limits.max_depth} levels", entry=member.name)
    return top, parts[1:]


def _refuse_type(member: tarfile.TarInfo) -> ArchiveRejected:
    if member.islnk():
        return ArchiveRejected("is a hard link (not allowed in a profile)", entry=member.name)
    if member.ischr() or member.isblk():
        return ArchiveRejected("is a device file (not allowed in a profile)", entry=member.name)
    if member.isfifo():
        return ArchiveRejected("is a FIFO (not allowed in a profile)", entry=member.name)
    return ArchiveRejected(f"has an unsupported type {member.type!r}", entry=member.name)


def _add_member(
    tar: tarfile.TarFile, tree: _Tree, member: tarfile.TarInfo, path: tuple[str, ...]
) -> None:
    """Write one member below the top-level directory, or refuse its type."""
    if member.isreg():
        source = tar.extractfile(member)
        if source is None:  # tarfile returns a file for every isreg() member
            raise _refuse_type(member)
        tree.add_file(path, member, source)
    elif member.isdir():
        tree.add_dir(path, member.name)
    elif member.issym():
        tree.add_symlink(path, member.linkname, member.name)
    else:
        raise _refuse_type(member)


_CORRUPT = (tarfile.TarError, zlib.error, EOFError)
"""What reading a truncated or corrupt archive raises (tarfile, zlib, `GzipStream`)."""


def _next_member(tar: tarfile.TarFile, last: str | None) -> tarfile.TarInfo | None:
    """The next member's header; a corrupt one is refused naming the entry before it."""
    try:
        return tar.next()
    except _CORRUPT as exc:
        where = f"after the entry {quoted(last)}" if last is not None else "at its start"
        raise ArchiveRejected(f"not a valid tar.gz archive: {exc}, {where}") from exc


def _read_member(
    tar: tarfile.TarFile, tree: _Tree, member: tarfile.TarInfo, path: tuple[str, ...]
) -> None:
    """`_add_member`, naming the member when its data ends early or is corrupt."""
    try:
        _add_member(tar, tree, member, path)
    except _CORRUPT as exc:
        raise ArchiveRejected(
            f"is cut short ({exc}): not a valid tar.gz archive; it is truncated or corrupt, "
            "or this entry's header claims more bytes than the archive holds",
            entry=member.name,
        ) from exc


def _extract_into(archive: BinaryIO, root_fd: int, limits: ExtractLimits) -> ExtractReport:
    stream = GzipStream(archive)
    try:
        return _extract_stream(stream, root_fd, limits)
    finally:
        stream.close()


def _extract_stream(stream: GzipStream, root_fd: int, limits: ExtractLimits) -> ExtractReport:
    tree: _Tree | None = None
    top: str | None = None
    top_seen = False
    entries = 0
    newest = 0
    with tarfile.open(mode="r|", fileobj=stream, bufsize=_TAR_BUFFER) as tar:
        members: list[tarfile.TarInfo] = tar.members  # type: ignore[attr-defined]  # not in typeshed
        last: str | None = None  # the entry read last, for a corrupt archive's message
        try:
            while (member := _next_member(tar, last)) is not None:
                # A stream is never revisited; stop tarfile from keeping every header.
                members.clear()
                top, path = _top_and_path(member, top, limits)
                if 0 < member.mtime < 1 << 33:
                    newest = max(newest, int(member.mtime))
                if tree is None:
                    tree = _Tree(root_fd, top, limits)
                if not path:
                    # The top-level directory itself: the destination stands in for it,
                    # but a second entry for it is still a duplicate.
                    if top_seen:
                        raise ArchiveRejected("duplicates an earlier entry", entry=member.name)
                    top_seen = True
                    continue
                entries += 1
                if entries > limits.max_entries:
                    raise ArchiveRejected(
                        f"goes over the limit of {limits.max_entries} entries",
                        entry=member.name,
                    )
                _read_member(tar, tree, member, path)
                last = member.name
            # Read to the end, so the gzip trailer (CRC, length) is checked too.
            trailer = 0
            while chunk := stream.read(_CHUNK):
                trailer += len(chunk)
                if trailer > _MAX_TRAILER:
                    raise ArchiveRejected("has unexpected data after the end of the tar archive")
        finally:
            if tree is not None:
                tree.close()
        commit = tar.pax_headers.get("comment")
    if tree is None:
        raise ArchiveRejected("is empty (it must hold exactly one top-level directory)")
    return ExtractReport(
        commit=commit if commit is not None and _OBJECT_ID.fullmatch(commit) else None,
        files=tree.files,
        directories=tree.directories,
        symlinks=tree.symlinks,
        total_bytes=tree.total_bytes,
        newest_mtime=newest or None,
    )


def extract_profile(
    archive: Path, dest: Path, *, limits: ExtractLimits = ExtractLimits()
) -> ExtractReport:
    """Extract a profile `.tar.gz` into `dest`, stripping its single top-level directory.

    Args:
        archive: The `.tar.gz` as downloaded from the forge.
        dest: Where the profile goes; must not exist yet (its parent must).
        limits: Caps on entries, depth and sizes.

    Returns:
        What was written, with the commit id when the archive carries one.

    Raises:
        ArchiveRejected: The archive breaks a rule or is corrupt; `dest` has been removed.
        FileExistsError: `dest` already exists (it is left alone).
        OSError: Reading the archive or writing `dest` failed; `dest` has been removed.
    """
    os.mkdir(dest, 0o700)
    try:
        root_fd = os.open(dest, _DIR_FLAGS)
        try:
            with open(archive, "rb") as source:
                report = _extract_into(source, root_fd, limits)
            os.fchmod(root_fd, _DIR_MODE)
        finally:
            os.close(root_fd)
    except (tarfile.TarError, zlib.error, EOFError) as exc:
        _remove(dest, exc)
        raise ArchiveRejected(f"not a valid tar.gz archive: {exc}") from exc
    except BaseException as exc:
        _remove(dest, exc)
        raise
    return report


def _remove(dest: Path, cause: BaseException) -> None:
    """Remove a partial extraction; a failure to do so is noted on `cause`, not hidden."""
    try:
        # rmtree uses fd-based traversal on Linux and never follows the symlinks inside.
        shutil.rmtree(dest)
    except OSError as exc:
        cause.add_note(f"removing the partial extraction {dest} failed too: {exc}")


async def extract_profile_async(
    archive: Path, dest: Path, *, limits: ExtractLimits = ExtractLimits()
) -> ExtractReport:
    """Run `extract_profile` in a worker thread so the event loop keeps serving.

    Args:
        archive: The `.tar.gz` as downloaded from the forge.
        dest: Where the profile goes; must not exist yet.
        limits: Caps on entries, depth and sizes.

    Returns:
        What was written.

    Raises:
        ArchiveRejected: As `extract_profile`.
    """
    return await anyio.to_thread.run_sync(
        functools.partial(extract_profile, archive, dest, limits=limits)
    )

"""A finished build's downloadable files: listing, checksums, and safe opening.

Does file I/O (blocking; callers run it in a worker thread, except `stream_file`, which
runs its reads in one itself). Files are only ever opened relative to the build's
artifact directory, by plain names, with `O_NOFOLLOW`: a symbolic link (planted in the
directory, or the directory itself being one) is never followed, and only regular
files are listed or served. `is_plain_name`, `parse_sums`, `download_path` and
`download_headers` are pure. Files of builds from forks (untrusted) are served under
their own path, `/builds/<id>/untrusted/<name>`, and saved as `untrusted-<name>`: they
never look like the project's own.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Final
from urllib.parse import quote

import anyio

from webhooks.build import (
    B2_SUMS,
    SHA256_SUMS,
    SUMS_FILES,
    TRUST_FILE,
    Artifact,
    ArtifactSource,
    BuildRecord,
    SigningKey,
    Trust,
)
from webhooks.exceptions import ArtifactNotFound

_MAX_SUMS_BYTES: Final = 1024 * 1024
_MAX_TRUST_BYTES: Final = 1024 * 1024
_MAX_DIFFERENCES: Final = 200
_REPRODUCIBILITY: Final = ("identical", "different", "not-checked")
_STREAM_BLOCK: Final = 1024 * 1024
_MAX_NAME_BYTES: Final = 255


def is_plain_name(name: str) -> bool:
    """Whether `name` is a plain file name: no directory part, not hidden, printable."""
    return (
        0 < len(name.encode("utf-8", "surrogateescape")) <= _MAX_NAME_BYTES
        and not name.startswith(".")
        and "/" not in name
        and "\\" not in name
        and name.isprintable()
    )


def parse_sums(text: str) -> dict[str, str]:
    """Parse a coreutils checksum file (`<hex>  <name>` or `<hex> *<name>` lines).

    Returns:
        The checksum of each plain file name listed; other lines are skipped.
    """
    sums: dict[str, str] = {}
    for line in text.splitlines():
        digest, sep, name = line.partition(" ")
        if not sep or not digest or any(c not in "0123456789abcdef" for c in digest.lower()):
            continue
        name = name[1:] if name[:1] in (" ", "*") else name
        if is_plain_name(name):
            sums[name] = digest.lower()
    return sums


@contextlib.contextmanager
def _directory(directory: Path) -> Iterator[int]:
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise ArtifactNotFound("this build has no artifacts") from exc
    try:
        yield fd
    finally:
        os.close(fd)


def _open_regular(dir_fd: int, name: str) -> tuple[int, int]:
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError as exc:
        raise ArtifactNotFound(f"this build has no artifact named {name!r}") from exc
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise ArtifactNotFound(f"this build has no artifact named {name!r}")
    return fd, info.st_size


def _read_sums(dir_fd: int, name: str) -> dict[str, str]:
    try:
        fd, _ = _open_regular(dir_fd, name)
    except ArtifactNotFound:
        return {}
    with os.fdopen(fd, "rb") as handle:
        return parse_sums(handle.read(_MAX_SUMS_BYTES).decode("utf-8", "replace"))


def _scan(dir_fd: int) -> list[Artifact]:
    sha256 = _read_sums(dir_fd, SHA256_SUMS)
    b2 = _read_sums(dir_fd, B2_SUMS)
    found = []
    with os.scandir(dir_fd) as entries:
        for entry in entries:
            if is_plain_name(entry.name) and entry.is_file(follow_symlinks=False):
                size = entry.stat(follow_symlinks=False).st_size
                name = entry.name
                found.append(Artifact(name, size, sha256.get(name, ""), b2.get(name, "")))
    return found


def parse_trust(data: bytes) -> Trust | None:
    """Read a trust file's JSON; None when it is not one (nothing is guessed).

    Pure. The file is the runner's own, but everything is still checked and bounded:
    the differing paths come from the builds.
    """
    try:
        document = json.loads(data)
    except ValueError:
        return None
    if not isinstance(document, dict):
        return None
    signed_by = document.get("signed_by")
    status = document.get("reproducibility")
    differences = document.get("differences")
    count = document.get("difference_count")
    if signed_by is not None and not (isinstance(signed_by, str) and signed_by.isalnum()):
        return None
    if status not in _REPRODUCIBILITY or not isinstance(differences, list):
        return None
    paths = tuple(str(d)[:400] for d in differences[:_MAX_DIFFERENCES] if isinstance(d, str))
    return Trust(
        signed_by=signed_by[:32] if signed_by else None,
        reproducibility=status,
        differences=paths,
        difference_count=count if isinstance(count, int) and count >= len(paths) else len(paths),
    )


def read_trust(directory: Path | None) -> Trust | None:
    """Read the build's trust file (`webhooks.build.TRUST_FILE`), or None if it has none."""
    if directory is None:
        return None
    try:
        with _directory(directory) as dir_fd:
            fd, _ = _open_regular(dir_fd, TRUST_FILE)
    except ArtifactNotFound:
        return None
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(_MAX_TRUST_BYTES + 1)
    return parse_trust(data) if len(data) <= _MAX_TRUST_BYTES else None


def record_trust(source: ArtifactSource | None, record: BuildRecord) -> Trust | None:
    """The trust file of a finished build, or None (still running, or none written)."""
    if source is None or not record.state.is_final:
        return None
    return read_trust(source.directory(record.id))


def public_key_text(key: SigningKey | None) -> str:
    """The public key file served at `/signing-key.pub`.

    Raises:
        ArtifactNotFound: No signing key is configured (404).
    """
    if key is None:
        raise ArtifactNotFound("this server signs nothing: no [signing] key_file is configured")
    return key.text


def list_artifacts(directory: Path | None) -> list[Artifact]:
    """List the regular files in a build's artifact directory, with their checksums.

    Args:
        directory: The directory, or None when the build has none.

    Returns:
        The files sorted by name, checksum files last; empty when there is no
        directory.
    """
    if directory is None:
        return []
    try:
        with _directory(directory) as dir_fd:
            found = _scan(dir_fd)
    except ArtifactNotFound:
        return []
    return sorted(found, key=lambda a: (a.name in SUMS_FILES, a.name))


def open_artifact(directory: Path | None, name: str) -> tuple[int, int]:
    """Open one artifact for reading, refusing anything but a plain regular file.

    Args:
        directory: The build's artifact directory, or None.
        name: The requested file name.

    Returns:
        An open file descriptor (the caller closes it) and the file's size.

    Raises:
        ArtifactNotFound: The name is not plain, or no regular file has it.
    """
    if not is_plain_name(name):
        raise ArtifactNotFound(f"{name[:100]!r} is not the name of an artifact")
    if directory is None:
        raise ArtifactNotFound("this build has no artifacts")
    with _directory(directory) as dir_fd:
        return _open_regular(dir_fd, name)


def read_block(fd: int, offset: int, size: int) -> bytes:
    """Read up to `size` bytes at `offset` of an open file."""
    return os.pread(fd, size, offset)


async def stream_file(fd: int, length: int) -> AsyncIterator[bytes]:
    """Yield the first `length` bytes of an open file in bounded blocks; close it at the end.

    Each block is read on a worker thread. The file is closed however the iteration
    ends (finished, or abandoned by a client that went away).
    """
    try:
        offset = 0
        while offset < length:
            block = await anyio.to_thread.run_sync(
                read_block, fd, offset, min(_STREAM_BLOCK, length - offset)
            )
            if not block:
                break
            offset += len(block)
            yield block
    finally:
        os.close(fd)


UNTRUSTED_PREFIX: Final = "untrusted-"
"""Starts the saved name of a file built from a fork, so that it says so on disk too."""


def download_path(build_id: int, name: str, *, trusted: bool) -> str:
    """Where a build's file is downloaded: `/artifacts/`, or `/untrusted/` for forks.

    Builds of the repository itself serve under `/artifacts/`; builds from forks (not
    official, never published) under `/untrusted/`, so a link says what it is.
    """
    folder = "artifacts" if trusted else "untrusted"
    return f"/builds/{build_id}/{folder}/{quote(name)}"


def download_headers(name: str, length: int, *, trusted: bool = True) -> dict[str, str]:
    """Return the headers of an artifact download: its length, file name, no sniffing.

    A file built from a fork is saved as `untrusted-<name>` and says what it is in
    `X-Isorunner-Trust`.
    """
    saved = name if trusted else f"{UNTRUSTED_PREFIX}{name}"
    headers = {
        "Content-Length": str(length),
        "Content-Disposition": f"attachment; filename*=UTF-8''{quote(saved)}",
        "X-Content-Type-Options": "nosniff",
    }
    if not trusted:
        headers["X-Isorunner-Trust"] = "untrusted: built from a fork, not an official artifact"
    return headers

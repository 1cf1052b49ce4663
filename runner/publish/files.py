"""A finished build's files to publish: which, in what order, with their SHA-256.

File I/O, blocking work on worker threads. Every regular file the build's artifact
directory lists (`webhooks.artifacts.list_artifacts`: plain names, no links) is
published, so signatures and provenance written beside the ISO go up with it.
`publish_order` is pure. `release_notes` reads the release body the build wrote beside
its files (`webhooks.build.RELEASE_NOTES_FILE`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import anyio

from runner.forges.releaseplan import LocalAsset
from webhooks.artifacts import list_artifacts
from webhooks.build import RELEASE_NOTES_FILE, SUMS_FILES

_CHUNK: Final = 1 << 20
#: The most of a stored release body that is read (GitHub takes 125,000 characters).
MAX_NOTES_BYTES: Final = 100_000
#: The endings of detached signatures (minisign, GnuPG), published after what they sign.
SIGNATURE_SUFFIXES: Final = (".minisig", ".sig", ".asc")


def publish_order(names: Sequence[str]) -> list[str]:
    """The order a build's files are published in: images, other files, the sums.

    The same in every attempt, so progress reads the same after a restart: ISO images
    first (by name), then every other file (provenance; by name), then the checksum
    files in `SUMS_FILES` order, last because they vouch for the rest. A signature
    (`.minisig`, `.sig`, `.asc`) follows the file it signs.
    """

    def rank(name: str) -> tuple[int, int, str, int]:
        signed = next((s for s in SIGNATURE_SUFFIXES if name.endswith(s)), "")
        base = name.removesuffix(signed) if signed else name
        if base in SUMS_FILES:
            return (2, SUMS_FILES.index(base), base, bool(signed))
        return (0 if base.endswith(".iso") else 1, 0, base, bool(signed))

    return sorted(names, key=rank)


def sha256_of(path: Path) -> str:
    """The SHA-256 of a file, lowercase hex, read 1 MiB at a time (blocking)."""
    digest = hashlib.sha256()
    with path.open("rb", buffering=0) as source:
        while chunk := source.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _scan(directory: Path) -> list[LocalAsset]:
    found = {artifact.name: artifact for artifact in list_artifacts(directory)}
    return [
        LocalAsset(
            directory / name,
            found[name].size,
            found[name].sha256 or sha256_of(directory / name),
        )
        for name in publish_order(list(found))
    ]


async def release_files(directory: Path) -> list[LocalAsset]:
    """Every file of a build's artifact directory, in publishing order, with its digest.

    An ISO's SHA-256 is taken from the build's `sha256sums`, which the pipeline wrote
    from the same bytes moments before (reading a 2 GiB image again costs seconds);
    every other file's is computed here. The forge's digest of what it stored is
    compared with these. Runs on a worker thread.

    Returns:
        The files; empty when the directory is missing or holds none.

    Raises:
        OSError: A listed file cannot be read.
    """
    return await anyio.to_thread.run_sync(_scan, directory)


def _read_notes(path: Path) -> str | None:
    try:
        with path.open("rb") as source:
            data = source.read(MAX_NOTES_BYTES + 1)
    except FileNotFoundError:
        return None
    if len(data) > MAX_NOTES_BYTES:
        return None
    return data.decode("utf-8", errors="replace").strip() or None


async def release_notes(directory: Path) -> str | None:
    """The release body the build wrote at build time, or None when it wrote none.

    The build's signatures, provenance and rebuild check are on disk before it succeeds;
    so is the body that states them (`runner.publish.sealer`). A body over
    `MAX_NOTES_BYTES` is not the runner's and is ignored. Runs on a worker thread.

    Raises:
        OSError: The file exists but cannot be read.
    """
    return await anyio.to_thread.run_sync(_read_notes, directory / RELEASE_NOTES_FILE)

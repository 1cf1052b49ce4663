"""A finished build's files: its ISOs and the `sha256sums`/`b2sums` that list them.

Does file I/O, off the event loop. Used by the pipeline (artifacts kept per build and
published for tags) and by `isorunner build` (artifacts written to `--out`).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio

from runner.checksums import Checksums, compute_checksums_async, format_sums_file
from webhooks.build import B2_SUMS, SHA256_SUMS, SUMS_FILES


@dataclass(frozen=True, slots=True)
class Artifacts:
    """The collected files of a build.

    Attributes:
        isos: Each ISO in the target directory, with its digests (BLAKE2b-512 is also
            the prehash of its minisign signature).
        sums: The `sha256sums` and `b2sums` files.
    """

    isos: tuple[tuple[Path, Checksums], ...]
    sums: tuple[Path, ...]

    @property
    def files(self) -> list[Path]:
        """The ISOs, then the sums files."""
        return [*(path for path, _ in self.isos), *self.sums]


async def collect_build(isos: Sequence[Path], target: Path) -> Artifacts:
    """Move `isos` into `target` and write their checksum files beside them.

    Args:
        isos: The ISO files, checked by the sandbox.
        target: The directory to put them in; created if missing. Files of the same
            names are replaced; other files are left alone.

    Returns:
        The ISOs with their digests, and the sums files. The ISOs belong to the user
        running isorunner, not to the container's user namespace.
    """
    await anyio.to_thread.run_sync(lambda: target.mkdir(parents=True, exist_ok=True))
    moved = []
    for iso in isos:
        dest = target / iso.name
        await anyio.to_thread.run_sync(shutil.move, iso, dest)
        await anyio.to_thread.run_sync(_own, dest)
        moved.append((dest, await compute_checksums_async(dest)))  # one read, both sums
    sha256 = [(sums.sha256, iso.name) for iso, sums in moved]
    b2 = [(sums.b2, iso.name) for iso, sums in moved]
    (target / SHA256_SUMS).write_text(format_sums_file(sha256))
    (target / B2_SUMS).write_text(format_sums_file(b2))
    return Artifacts(tuple(moved), tuple(target / name for name in SUMS_FILES))


async def collect_artifacts(isos: Sequence[Path], target: Path) -> list[Path]:
    """Like `collect_build`, returning the ISOs in `target`, then `sha256sums` and `b2sums`."""
    return (await collect_build(isos, target)).files


def _own(path: Path) -> None:
    """Give `path` to this process's user, readable by all (the container wrote it)."""
    os.chown(path, os.getuid(), os.getgid(), follow_symlinks=False)
    os.chmod(path, 0o644, follow_symlinks=False)

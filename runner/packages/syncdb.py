"""pacman sync databases: reading the entries of resolved packages, writing a build's own.

A sync database (`core.db`) is a compressed tar holding one `<name>-<version>/desc` file
per package, in the format `repo-add` writes (alpm-repo-desc(5)): `%FIELD%` lines each
followed by values and a blank line. pacman 6.0's `--print-format` cannot print a
package's sha256 or signature, so they are read here from the same database pacman
resolved against.

`parse_desc` and `check_entry` are pure. `read_entries` reads a database file (streamed,
bounded: a mirror's database is not trusted to be small) and `write_repository_db`
writes a new one; both do file I/O only (and run `zstd -dc` for zstd-compressed
databases). A build's database holds, byte for byte, the resolved packages' entries of
the databases they came from: what `repo-add` would write for the same files (their
sha256 matches), without reading 700 MB of packages again (repo-add takes ~50 s for 300
packages on the benchmark machine; see docs/benchmarks.md).
"""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from runner.packages.exceptions import DatabaseInvalid

#: The most bytes one entry file (`desc`) may have.
MAX_ENTRY_BYTES = 1 << 20
#: The most tar members a database may have (Arch's extra has ~30 000).
MAX_MEMBERS = 1_000_000
#: The most bytes of entry files read from one database, in total.
MAX_TOTAL_BYTES = 1 << 30
#: The name of the repository every build's packages are served as (tests/standin/CONTRACT.md).
BUILD_REPOSITORY = "isorunner"

_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_HEX = frozenset("0123456789abcdef")
_FILE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789@._+-:~")
# Entry files copied into a build's database (old databases split depends out of desc).
_ENTRY_FILES = ("desc", "depends")


@dataclass(frozen=True, slots=True)
class DbEntry:
    """One package's entry of a sync database.

    Attributes:
        name: pkgname.
        version: Full version (`[epoch:]pkgver-pkgrel`).
        filename: The package file's name on the mirror.
        sha256: The file's sha256, lower-case hex.
        size: The file's size in bytes (`%CSIZE%`).
        pgpsig: The detached signature (base64) when the database carries it.
        files: The entry's files (`desc`, and `depends` in old databases), verbatim.
    """

    name: str
    version: str
    filename: str
    sha256: str
    size: int
    pgpsig: str | None
    files: tuple[tuple[str, bytes], ...]

    @property
    def key(self) -> str:
        """The entry's directory name in the database: `<name>-<version>`."""
        return f"{self.name}-{self.version}"


def parse_desc(text: str) -> dict[str, list[str]]:
    """Parse an alpm-repo-desc text into `{"FILENAME": [...], ...}`.

    Args:
        text: The `desc` file's contents.

    Returns:
        Each `%FIELD%`'s values in order (the field name without the percent signs).
    """
    fields: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.split("\n"):
        if len(line) > 2 and line[0] == "%" and line[-1] == "%":
            current = fields.setdefault(line[1:-1], [])
        elif not line:
            current = None
        elif current is not None:
            current.append(line)
    return fields


def check_filename(name: str) -> bool:
    """Whether a package file name from a database is safe to use as a path component."""
    return (
        0 < len(name) <= 255
        and name[0] not in ".-"
        and ".pkg.tar" in name
        and all(c in _FILE_CHARS for c in name)
    )


def check_entry(key: str, files: Mapping[str, bytes]) -> DbEntry:
    """Build a `DbEntry` from the files of one database entry, checking every field used.

    Args:
        key: The entry's directory name.
        files: Its files by name (`desc` required).

    Returns:
        The entry.

    Raises:
        DatabaseInvalid: A field is missing or unsafe (a file name with a slash, a
            sha256 that is not hex, a size that is not a number).
    """
    try:
        desc = parse_desc(files["desc"].decode("utf-8"))
    except (KeyError, UnicodeDecodeError):
        raise DatabaseInvalid(f"database entry {key!r} has no readable desc file") from None

    def one(field: str) -> str:
        values = desc.get(field)
        if not values or len(values) != 1:
            raise DatabaseInvalid(f"database entry {key!r} lacks a single %{field}%")
        return values[0]

    name, version, filename = one("NAME"), one("VERSION"), one("FILENAME")
    sha256, size = one("SHA256SUM"), one("CSIZE")
    if f"{name}-{version}" != key:
        raise DatabaseInvalid(f"database entry {key!r} describes {name}-{version}")
    if not check_filename(filename):
        raise DatabaseInvalid(f"database entry {key!r} has an unusable file name {filename!r}")
    if len(sha256) != 64 or not set(sha256) <= _HEX:
        raise DatabaseInvalid(f"database entry {key!r} has a malformed %SHA256SUM%")
    if not size.isdigit() or len(size) > 15:
        raise DatabaseInvalid(f"database entry {key!r} has a malformed %CSIZE%")
    sig = desc.get("PGPSIG")
    return DbEntry(
        name=name,
        version=version,
        filename=filename,
        sha256=sha256,
        size=int(size),
        pgpsig=sig[0] if sig else None,
        files=tuple(sorted(files.items())),
    )


@contextmanager
def _open_tar(path: Path) -> Iterator[tarfile.TarFile]:
    with path.open("rb") as raw:
        magic = raw.read(4)
        if magic != _ZSTD_MAGIC:
            raw.seek(0)
            with tarfile.open(fileobj=raw, mode="r|*") as archive:
                yield archive
            return
    # Python 3.11 has no zstd: decompress with the zstd tool, streamed.
    with path.open("rb") as source:
        proc = subprocess.Popen(
            ["zstd", "-dcq"], stdin=source, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
    assert proc.stdout is not None
    try:
        with tarfile.open(fileobj=proc.stdout, mode="r|") as archive:
            yield archive
    finally:
        proc.stdout.close()
        proc.kill()
        proc.wait()


def read_entries(path: Path, keys: Iterable[str]) -> dict[str, DbEntry]:
    """Read the entries named `keys` (`<name>-<version>`) from a sync database.

    Args:
        path: The database file (gzip, bzip2, xz, zstd or uncompressed tar).
        keys: The entries wanted.

    Returns:
        The entries found, by key (missing keys are simply absent).

    Raises:
        DatabaseInvalid: The file is not a readable database, passes a size bound,
            or a wanted entry is malformed.
    """
    wanted = set(keys)
    found: dict[str, dict[str, bytes]] = {}
    members = total = 0
    try:
        with _open_tar(path) as archive:
            for member in archive:
                members += 1
                if members > MAX_MEMBERS:
                    raise DatabaseInvalid(f"{path.name} has more than {MAX_MEMBERS} entries")
                key, _, leaf = member.name.partition("/")
                if key not in wanted or leaf not in _ENTRY_FILES or not member.isfile():
                    continue
                if member.size > MAX_ENTRY_BYTES:
                    raise DatabaseInvalid(f"{path.name}: {member.name} is too large")
                total += member.size
                if total > MAX_TOTAL_BYTES:
                    raise DatabaseInvalid(f"{path.name} is too large")
                handle = archive.extractfile(member)
                assert handle is not None
                found.setdefault(key, {})[leaf] = handle.read(MAX_ENTRY_BYTES + 1)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DatabaseInvalid(f"{path.name} is not a readable package database: {exc}") from exc
    return {key: check_entry(key, files) for key, files in found.items()}


def _add(archive: tarfile.TarFile, name: str, data: bytes | None) -> None:
    info = tarfile.TarInfo(name)
    info.mtime = 0
    info.uname = info.gname = "root"
    if data is None:
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
        archive.addfile(info)
        return
    info.mode = 0o644
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


def write_repository_db(directory: Path, entries: Iterable[DbEntry]) -> Path:
    """Write `<directory>/isorunner.db.tar.gz` (and the `isorunner.db` link pacman fetches).

    Args:
        directory: The build's repository directory (holding the package files).
        entries: The entries to include, copied verbatim.

    Returns:
        The database file.
    """
    db = directory / f"{BUILD_REPOSITORY}.db.tar.gz"
    tmp = db.with_name(db.name + ".tmp")
    with tmp.open("wb") as raw, tarfile.open(fileobj=raw, mode="w:gz", compresslevel=6) as tar:
        for entry in sorted(entries, key=lambda e: e.key):
            _add(tar, f"{entry.key}/", None)
            for leaf, data in entry.files:
                _add(tar, f"{entry.key}/{leaf}", data)
    os.replace(tmp, db)
    link = directory / f"{BUILD_REPOSITORY}.db"
    link.unlink(missing_ok=True)
    link.symlink_to(db.name)
    return db

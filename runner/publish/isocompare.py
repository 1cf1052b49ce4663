"""The rebuild check's comparison: which paths inside two ISOs differ.

`parse_listing` and `compare` are pure; `compare_isos` is the I/O shell. The ISOs come
out of builds of untrusted profiles, so they are never opened on the host: `isodiff.sh`
lists them inside a container like a build's (`BuildSandbox.run_container`; xorriso and
unsquashfs of the base, the ISOs bound read-only), and only its listings come back,
checked like any build output and read with size limits. A listing names every path
of the ISO 9660 tree and of each squashfs image in it (type, mode, owner, size, mtime,
link target, SHA-256 of the content), and hashes the system area, partitions and El
Torito images outside the file system.

A difference reads `<path> (<what>)`, e.g. `/arch/version (mtime)` or
`/arch/x86_64/airootfs.sfs:/var/lib/pacman/local/foo-1-1/desc (content)` for a path
inside an image, or `(GPT partition 2) (content)` for the EFI system partition. Paths
are the builds' own and hostile: control characters are replaced and each is cut.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

import anyio.to_thread

from runner.publish.exceptions import CompareFailed
from sandbox import (
    Bind,
    CommandResult,
    ContainerSpec,
    LogSink,
    SandboxConfig,
    SandboxError,
    check_output,
)

ISODIFF: Final = Path(__file__).with_name("isodiff.sh")
#: Bounds on what the sandbox hands back.
MAX_LISTING_BYTES: Final = 256 << 20
MAX_RECORDS: Final = 4_000_000
MAX_PATH_CHARS: Final = 300
MAX_IMAGES: Final = 16
_TREE_FIELDS: Final = 8
_LABELS: Final = ("first", "second")
_WORK: Final = "/build/work"


@dataclass(frozen=True, slots=True)
class Entry:
    """One path of a listing.

    Attributes:
        kind: find's %y: f, d, l, b, c, p, s.
        mode: Octal permission bits.
        owner: "uid:gid".
        size: Bytes.
        mtime: Seconds since the epoch, as find printed them.
        link: A symbolic link's target ("" otherwise).
        sha256: A regular file's content digest ("" otherwise).
    """

    kind: str
    mode: str
    owner: str
    size: str
    mtime: str
    link: str
    sha256: str = ""


@dataclass(frozen=True, slots=True)
class Listing:
    """Everything `isodiff.sh` lists of one ISO.

    Attributes:
        areas: Name → SHA-256 of the regions outside the file system.
        volume: The primary volume descriptor's report lines.
        tree: ISO 9660 path (bytes, without leading "/") → entry.
        images: Image path in the ISO → its inner tree.
    """

    areas: Mapping[str, str]
    volume: tuple[str, ...]
    tree: Mapping[bytes, Entry]
    images: Mapping[bytes, Mapping[bytes, Entry]]


@dataclass(frozen=True, slots=True)
class Difference:
    """One path (or region) that differs between the two ISOs.

    Attributes:
        path: Where, for display (cleaned, bounded).
        aspects: What differs ("content", "mtime", "mode", …, "only in the first build").
    """

    path: str
    aspects: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.path} ({', '.join(self.aspects)})"


def display_path(raw: bytes) -> str:
    """A path from a listing, safe to show: decoded, no control characters, bounded."""
    text = raw.decode("utf-8", "replace")
    text = "".join("?" if ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 else c for c in text)
    return text if len(text) <= MAX_PATH_CHARS else text[: MAX_PATH_CHARS - 1] + "…"


def parse_tree(tree: bytes, sums: bytes) -> dict[bytes, Entry]:
    """Parse a `.tree` and its `.sums` (NUL-separated) into path → entry.

    Raises:
        CompareFailed: A listing is malformed or has too many records.
    """
    fields = tree.split(b"\0")
    if fields and fields[-1] == b"":
        fields.pop()
    if len(fields) % _TREE_FIELDS or len(fields) // _TREE_FIELDS > MAX_RECORDS:
        raise CompareFailed("the ISO listing is malformed or too long")
    digests: dict[bytes, str] = {}
    for record in sums.split(b"\0"):
        if not record:
            continue
        digest, separator, name = record.partition(b"  ")
        if not separator or len(digest) != 64 or not name.startswith(b"./"):
            raise CompareFailed("the ISO content listing is malformed")
        digests[name[2:]] = digest.decode("ascii", "replace")
    entries: dict[bytes, Entry] = {}
    for index in range(0, len(fields), _TREE_FIELDS):
        kind, mode, uid, gid, size, mtime, link, path = fields[index : index + _TREE_FIELDS]
        entries[path] = Entry(
            kind=kind.decode("ascii", "replace"),
            mode=mode.decode("ascii", "replace"),
            owner=f"{uid.decode('ascii', 'replace')}:{gid.decode('ascii', 'replace')}",
            size=size.decode("ascii", "replace"),
            mtime=mtime.decode("ascii", "replace"),
            link=link.decode("utf-8", "replace"),
            sha256=digests.get(path, ""),
        )
    return entries


def parse_listing(files: Mapping[str, bytes], label: str) -> Listing:
    """Assemble one ISO's listing from the files `isodiff.sh` wrote (name → bytes).

    Raises:
        CompareFailed: A file is missing or malformed.
    """

    def get(name: str) -> bytes:
        try:
            return files[f"{label}.{name}"]
        except KeyError:
            raise CompareFailed(f"the ISO listing lacks {label}.{name}") from None

    areas: dict[str, str] = {}
    for line in get("areas").decode("utf-8", "replace").splitlines():
        name, _, digest = line.partition("\t")
        areas[name[:64]] = digest[:64]
    volume = tuple(line[:200] for line in get("pvd").decode("utf-8", "replace").splitlines()[:64])
    parts = get("images").split(b"\0")
    pairs = list(zip(parts[0:-1:2], parts[1::2], strict=True)) if len(parts) > 1 else []
    if len(pairs) > MAX_IMAGES:
        raise CompareFailed("the ISO listing names too many images")
    images = {
        path: parse_tree(get(f"{number.decode('ascii', 'replace')}.tree"),
                         get(f"{number.decode('ascii', 'replace')}.sums"))
        for number, path in pairs
    }  # fmt: skip
    return Listing(areas, volume, parse_tree(get("tree"), get("sums")), images)


_ASPECTS: Final = (
    ("kind", "type"),
    ("sha256", "content"),
    ("size", "size"),
    ("mode", "mode"),
    ("owner", "owner"),
    ("mtime", "mtime"),
    ("link", "link target"),
)


def _compare_trees(
    first: Mapping[bytes, Entry], second: Mapping[bytes, Entry], prefix: str
) -> list[Difference]:
    differences = []
    for path in sorted(first.keys() | second.keys()):
        shown = f"{prefix}/{display_path(path)}"
        if path not in second:
            differences.append(Difference(shown, ("only in the first build",)))
        elif path not in first:
            differences.append(Difference(shown, ("only in the rebuild",)))
        else:
            a, b = first[path], second[path]
            aspects = tuple(
                name for field, name in _ASPECTS if getattr(a, field) != getattr(b, field)
            )
            if aspects:
                differences.append(Difference(shown, aspects))
    return differences


def compare(first: Listing, second: Listing) -> list[Difference]:
    """Every difference between two listings: regions, volume descriptor, trees, images.

    Returns:
        Differences in a stable order: regions, then paths (images after their file).
    """
    differences = []
    for name in sorted(first.areas.keys() | second.areas.keys()):
        if first.areas.get(name) != second.areas.get(name):
            both = name in first.areas and name in second.areas
            differences.append(
                Difference(f"({name})", ("content",) if both else ("in one build only",))
            )
    volume_a, volume_b = set(first.volume), set(second.volume)
    changed = sorted({line.partition(":")[0].strip() for line in volume_a ^ volume_b})
    differences += [Difference(f"(volume descriptor: {name})", ("value",)) for name in changed]
    differences += _compare_trees(first.tree, second.tree, "")
    for image in sorted(first.images.keys() | second.images.keys()):
        inside = f"/{display_path(image)}:"
        if image in first.images and image in second.images:
            differences += _compare_trees(
                first.images[image], second.images[image], inside[:-1] + ":"
            )
        else:
            differences.append(Difference(inside[:-1], ("image opened in one build only",)))
    return differences


class ContainerSandbox(Protocol):
    """What the comparison needs of `sandbox.BuildSandbox`: one container run, its config."""

    config: SandboxConfig

    async def run_container(
        self,
        run_id: str,
        spec: ContainerSpec,
        *,
        log_sink: LogSink,
        prepare: Callable[[Path], None] | None = None,
        collect: Callable[[Path], None] | None = None,
    ) -> CommandResult:
        """Run `spec` in a fresh container (see `BuildSandbox.run_container`)."""
        ...


def _read_outputs(directory: Path) -> dict[str, bytes]:
    """The listing files the container wrote, checked like any build output, bounded."""
    files: dict[str, bytes] = {}
    for checked in check_output(directory, max_bytes=MAX_LISTING_BYTES, require_iso=False):
        if checked.path.parent != directory:
            continue
        with checked.path.open("rb") as handle:
            files[checked.path.name] = handle.read(MAX_LISTING_BYTES + 1)
        if len(files[checked.path.name]) > MAX_LISTING_BYTES:
            raise CompareFailed(f"the ISO listing {checked.path.name} is too large")
    return files


async def compare_isos(
    sandbox: ContainerSandbox,
    first: Path,
    second: Path,
    *,
    run_id: str,
    log_sink: LogSink,
) -> list[Difference]:
    """List both ISOs inside a sandbox container and compare the listings.

    The ISOs and `isodiff.sh` are bound read-only into the container's /build/work;
    the script writes its listings to /build/work/out and extracts into
    /build/work/scratch, both made for the container's root before it starts.

    Args:
        sandbox: The build sandbox.
        first: The first build's ISO.
        second: The rebuild's ISO.
        run_id: The sandbox id of the comparison run.
        log_sink: Receives the container's output lines.

    Returns:
        The differences (empty when the listings agree).

    Raises:
        CompareFailed: The listing run failed or its output is unusable.
    """
    config = sandbox.config
    owner = config.uid_base if config.isolation == "userns" else 0
    files: dict[str, bytes] = {}

    def prepare(work: Path) -> None:
        for name in ("first.iso", "second.iso", "isodiff.sh"):
            (work / name).touch(mode=0o644)
        for name in ("out", "scratch"):
            (work / name).mkdir(mode=0o755)
            os.chown(work / name, owner, owner)

    problems: list[str] = []

    def collect(work: Path) -> None:
        try:
            files.update(_read_outputs(work / "out"))
        except (SandboxError, CompareFailed, OSError) as exc:
            problems.append(str(exc))

    spec = ContainerSpec(
        command=(
            "bash", f"{_WORK}/isodiff.sh", f"{_WORK}/out", f"{_WORK}/scratch",
            f"first={_WORK}/first.iso", f"second={_WORK}/second.iso",
        ),
        binds=(
            Bind(first, f"{_WORK}/first.iso", read_only=True),
            Bind(second, f"{_WORK}/second.iso", read_only=True),
            Bind(ISODIFF, f"{_WORK}/isodiff.sh", read_only=True),
        ),
    )  # fmt: skip
    try:
        result = await sandbox.run_container(
            run_id, spec, log_sink=log_sink, prepare=prepare, collect=collect
        )
    except SandboxError as exc:
        raise CompareFailed(f"listing the ISOs failed: {exc}") from exc
    if result.exit_code != 0:
        raise CompareFailed(f"listing the ISOs failed (exit {result.exit_code}); see the log")
    if problems:
        raise CompareFailed(f"the ISO listings are unusable: {problems[0]}")
    # Parsing and comparing a few hundred thousand records is CPU work: off the loop.
    return await anyio.to_thread.run_sync(
        lambda: compare(parse_listing(files, _LABELS[0]), parse_listing(files, _LABELS[1]))
    )

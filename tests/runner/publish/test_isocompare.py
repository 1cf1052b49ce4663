"""Tests for runner.publish.isocompare's pure core: listings in, differences out."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from runner.publish.exceptions import CompareFailed
from runner.publish.isocompare import (
    MAX_PATH_CHARS,
    Difference,
    compare,
    compare_isos,
    display_path,
    parse_listing,
    parse_tree,
)
from sandbox import Bind, CommandResult, ContainerSpec, LogSink, SandboxConfig

SHA_A = "a" * 64
SHA_B = "b" * 64


def tree(*records: tuple[str, str, str, str, str, str, str, bytes]) -> bytes:
    """A `.tree` file as isodiff.sh writes it (8 NUL-terminated fields a path)."""
    return b"".join(
        b"".join(field.encode() + b"\0" for field in record[:7]) + record[7] + b"\0"
        for record in records
    )


def sums(*pairs: tuple[str, bytes]) -> bytes:
    """A `.sums` file as `sha256sum -z` writes it."""
    return b"".join(digest.encode() + b"  ./" + path + b"\0" for digest, path in pairs)


def listing_files(
    label: str, *, version_mtime: str = "1700000000.0", desc: str = SHA_A, esp: str = SHA_A
) -> dict[str, bytes]:
    """The files of one ISO's listing: a tree with one squashfs image inside."""
    return {
        f"{label}.areas": f"system area\t{SHA_A}\nGPT partition 2\t{esp}\n".encode(),
        f"{label}.pvd": b"Volume Id    : ARCH\nCreation Time: 2023111422132000\n",
        f"{label}.tree": tree(
            ("d", "555", "0", "0", "4096", "1700000000.0", "", b"arch"),
            ("f", "444", "0", "0", "4", version_mtime, "", b"arch/version"),
            ("f", "444", "0", "0", "99", "1700000000.0", "", b"arch/airootfs.sfs"),
        ),
        f"{label}.sums": sums((SHA_A, b"arch/version"), (desc, b"arch/airootfs.sfs")),
        f"{label}.images": b"1\0arch/airootfs.sfs\0",
        f"{label}.1.tree": tree(
            ("l", "777", "0", "0", "7", "1700000000.0", "/dev/null", b"etc/localtime"),
            ("f", "644", "0", "0", "40", "1700000000.0", "", b"var/lib/pacman/local/x-1-1/desc"),
        ),
        f"{label}.1.sums": sums((desc, b"var/lib/pacman/local/x-1-1/desc")),
    }


def test_compare_finds_nothing_in_equal_listings() -> None:
    """Two listings of the same content have no difference."""
    files = listing_files("first") | listing_files("second")
    assert compare(parse_listing(files, "first"), parse_listing(files, "second")) == []


def test_compare_names_paths_inside_images_and_regions() -> None:
    """A changed mtime, a changed file inside the image and a changed ESP are each named."""
    files = listing_files("first") | listing_files(
        "second", version_mtime="1796637505.0", desc=SHA_B, esp=SHA_B
    )
    differences = compare(parse_listing(files, "first"), parse_listing(files, "second"))
    assert [str(d) for d in differences] == [
        "(GPT partition 2) (content)",
        "/arch/airootfs.sfs (content)",
        "/arch/version (mtime)",
        "/arch/airootfs.sfs:/var/lib/pacman/local/x-1-1/desc (content)",
    ]


def test_compare_reports_paths_in_one_build_only() -> None:
    """A path that only one ISO has is named with the build that has it."""
    first = listing_files("first")
    second = listing_files("second")
    second["second.tree"] += tree(("f", "644", "0", "0", "1", "1.0", "", b"extra"))
    differences = compare(parse_listing(first, "first"), parse_listing(second, "second"))
    assert differences == [Difference("/extra", ("only in the rebuild",))]


def test_display_path_cleans_hostile_names() -> None:
    """Control characters become '?', invalid UTF-8 is replaced, long names are cut."""
    assert display_path(b"etc/evil\nname\x1b[31m") == "etc/evil?name?[31m"
    assert display_path(b"caf\xe9") == "caf\ufffd"
    long = display_path(b"a" * 100_000)
    assert len(long) == MAX_PATH_CHARS
    assert long.endswith("…")


def test_parse_tree_keeps_any_bytes_in_paths() -> None:
    """A path holding a newline, tab or NUL-free odd bytes stays one entry."""
    name = b"odd\nname\twith\xffbytes"
    entries = parse_tree(tree(("f", "644", "0", "0", "1", "1.0", "", name)), sums((SHA_A, name)))
    assert list(entries) == [name]
    assert entries[name].sha256 == SHA_A


@pytest.mark.parametrize(
    ("tree_bytes", "sums_bytes"),
    [
        (b"f\0644\0", b""),
        (tree(("f", "644", "0", "0", "1", "1.0", "", b"x")), b"nothex  ./x\0"),
        (tree(("f", "644", "0", "0", "1", "1.0", "", b"x")), SHA_A.encode() + b"  x\0"),
    ],
)
def test_parse_tree_refuses_malformed_listings(tree_bytes: bytes, sums_bytes: bytes) -> None:
    """A record with missing fields or a sums line not of isodiff.sh's form is refused."""
    with pytest.raises(CompareFailed, match="malformed"):
        parse_tree(tree_bytes, sums_bytes)


def test_parse_listing_names_a_missing_file() -> None:
    """A listing without one of its files is refused naming it."""
    files = listing_files("first")
    del files["first.pvd"]
    with pytest.raises(CompareFailed, match=r"lacks first\.pvd"):
        parse_listing(files, "first")


class ListingSandbox:
    """A sandbox whose one container 'lists' by writing the given files into /build/work/out."""

    def __init__(self, tmp_path: Path, files: dict[str, bytes], *, exit_code: int = 0) -> None:
        self.config = SandboxConfig(base_dir=tmp_path / "base", sandbox_root=tmp_path)
        self.work = tmp_path / "work"
        self.files = files
        self.exit_code = exit_code
        self.specs: list[ContainerSpec] = []

    async def run_container(
        self,
        run_id: str,
        spec: ContainerSpec,
        *,
        log_sink: LogSink,
        prepare: Callable[[Path], None] | None = None,
        collect: Callable[[Path], None] | None = None,
    ) -> CommandResult:
        self.specs.append(spec)
        self.work.mkdir()
        assert prepare is not None
        assert collect is not None
        prepare(self.work)
        for name, data in self.files.items():
            (self.work / "out" / name).write_bytes(data)
        collect(self.work)
        return CommandResult(self.exit_code, 1.0, None, oom_killed=False, pids_limited=False)


async def _log(line: str) -> None:
    """Drop log lines."""


@pytest.mark.anyio
async def test_compare_isos_binds_the_isos_read_only_and_compares(tmp_path: Path) -> None:
    """The ISOs and the script are bound read-only; the listings come back compared."""
    files = listing_files("first") | listing_files("second", version_mtime="2.0")
    sandbox = ListingSandbox(tmp_path, files)
    first, second = tmp_path / "a.iso", tmp_path / "b.iso"
    differences = await compare_isos(
        sandbox, first, second, run_id="build-1-compare", log_sink=_log
    )
    assert [str(d) for d in differences] == ["/arch/version (mtime)"]
    (spec,) = sandbox.specs
    assert spec.binds[:2] == (
        Bind(first, "/build/work/first.iso", read_only=True),
        Bind(second, "/build/work/second.iso", read_only=True),
    )
    assert spec.command[:2] == ("bash", "/build/work/isodiff.sh")
    out = (sandbox.work / "out").stat()
    assert (out.st_uid, out.st_gid) == (sandbox.config.uid_base, sandbox.config.uid_base)


@pytest.mark.anyio
async def test_compare_isos_refuses_a_link_planted_in_the_listings(tmp_path: Path) -> None:
    """A symbolic link among the listings (to a host file) is refused, never read."""
    sandbox = ListingSandbox(tmp_path, listing_files("first") | listing_files("second"))
    original = sandbox.run_container

    secret = tmp_path / "host-secret"
    secret.write_text("do not read")

    async def plant(run_id: str, spec: ContainerSpec, **kwargs: Any) -> CommandResult:
        prepare = kwargs["prepare"]

        def prepare_and_plant(work: Path) -> None:
            prepare(work)
            (work / "out" / "first.pvd").symlink_to(secret)

        kwargs["prepare"] = prepare_and_plant
        return await original(run_id, spec, **kwargs)

    sandbox.files.pop("first.pvd")
    with pytest.raises(CompareFailed, match=r"unusable: .*symbolic link"):
        await compare_isos(
            ListingProxy(sandbox, plant), tmp_path / "a", tmp_path / "b", run_id="x", log_sink=_log
        )


@pytest.mark.anyio
async def test_compare_isos_reports_a_failed_listing(tmp_path: Path) -> None:
    """A listing container that exits non-zero fails the comparison, saying so."""
    sandbox = ListingSandbox(tmp_path, {}, exit_code=1)
    with pytest.raises(CompareFailed, match="exit 1"):
        await compare_isos(sandbox, tmp_path / "a", tmp_path / "b", run_id="x", log_sink=_log)


class ListingProxy:
    """A `ListingSandbox` whose container run goes through `run`."""

    def __init__(self, sandbox: ListingSandbox, run: Any) -> None:
        self.config = sandbox.config
        self.run_container = run

"""Tests for runner.publish.isocompare's pure core: listings in, differences out."""

from __future__ import annotations

import pytest

from runner.publish.exceptions import CompareFailed
from runner.publish.isocompare import (
    MAX_PATH_CHARS,
    Difference,
    compare,
    display_path,
    parse_listing,
    parse_tree,
)

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

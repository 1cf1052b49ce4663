"""Tests of runner.packages.profile: package names and repository names read as data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runner.packages.exceptions import ProfilePackagesInvalid
from runner.packages.profile import (
    MAX_FILE_BYTES,
    MAX_NAME_LENGTH,
    MAX_PACKAGES,
    MAX_REPOSITORIES,
    check_package_name,
    parse_package_list,
    parse_repository_names,
    read_profile_packages,
)


def test_parse_package_list_drops_comments_and_blank_lines() -> None:
    """Whole-line, indented and trailing comments and blank lines go, as mkarchiso drops them."""
    text = "# base\nbase\n\n   # indented\nlinux# the kernel\n\t\nmkinitcpio-archiso\n#x\n"
    assert parse_package_list(text, path="packages.x86_64") == [
        "base",
        "linux",
        "mkinitcpio-archiso",
    ]


@pytest.mark.parametrize("line", ["  linux", "linux  # the kernel", "linux\t"])
def test_parse_package_list_refuses_blanks_around_a_name(line: str) -> None:
    """Blanks around a name are refused: mkarchiso would hand them to pacman unchanged."""
    with pytest.raises(ProfilePackagesInvalid, match="has blanks around the name"):
        parse_package_list(f"base\n{line}\n", path="packages.x86_64")


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("-foo", "starts with a hyphen"),
        (".foo", "starts with a hyphen or a dot"),
        ("foo$(id)", "holds '$'"),
        ("foo/bar", "holds '/'"),
        ("a" * (MAX_NAME_LENGTH + 1), "longer than"),
    ],
)
def test_parse_package_list_refuses_bad_names(line: str, reason: str) -> None:
    """A name pacman cannot take is refused with the file, the line and the reason."""
    with pytest.raises(ProfilePackagesInvalid) as info:
        parse_package_list(f"base\n{line}\n", path="packages.x86_64")
    assert "packages.x86_64 line 2" in info.value.message
    assert reason in info.value.message
    assert info.value.path == "packages.x86_64"


def test_parse_package_list_refuses_two_names_on_a_line() -> None:
    """Two words on one line are refused: mkarchiso would pass them as one name."""
    with pytest.raises(ProfilePackagesInvalid, match="more than one word"):
        parse_package_list("base linux\n", path="packages.x86_64")


def test_parse_package_list_bounds_the_count() -> None:
    """More than MAX_PACKAGES names are refused."""
    text = "".join(f"p{i}\n" for i in range(MAX_PACKAGES + 1))
    with pytest.raises(ProfilePackagesInvalid, match=f"more than {MAX_PACKAGES}"):
        parse_package_list(text, path="packages")


def test_check_package_name_is_linear_on_a_long_hostile_name() -> None:
    """A megabyte-long name of allowed characters is refused by length, at once."""
    assert check_package_name("a-" * 500_000) == f"is longer than {MAX_NAME_LENGTH} characters"
    assert check_package_name("a@b.c_d+e-f") is None


@given(st.text(min_size=1, max_size=40))
def test_check_package_name_accepts_only_makepkg_names(name: str) -> None:
    """A name is accepted exactly when it follows makepkg's pkgname rule."""
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789@._+-")
    expected = name[0] not in "-." and set(name) <= allowed
    assert (check_package_name(name) is None) == expected


def test_parse_repository_names_reads_sections_in_order() -> None:
    """Section names come in order, once each; options, Include and Server are ignored."""
    text = (
        "[options]\nInclude = /etc/passwd\n[core]\nInclude = /etc/pacman.d/mirrorlist\n"
        "[extra]\nServer = http://evil.invalid/$repo\n[core]\n# [commented]\n  [multilib]  \n"
    )
    assert parse_repository_names(text) == ("core", "extra", "multilib")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[core\n", "is not a [section] header"),
        ("[co re]\n", "holds ' '"),
        ("[../etc]\n", "starts with a hyphen or a dot"),
        ("[]\n", "must be 1 to"),
    ],
)
def test_parse_repository_names_refuses_malformed_sections(text: str, message: str) -> None:
    """A malformed header or repository name is refused with the line."""
    with pytest.raises(ProfilePackagesInvalid, match="line 1") as info:
        parse_repository_names(text)
    assert message in info.value.message


def test_parse_repository_names_bounds_the_count() -> None:
    """More than MAX_REPOSITORIES repositories are refused."""
    text = "".join(f"[r{i}]\n" for i in range(MAX_REPOSITORIES + 1))
    with pytest.raises(ProfilePackagesInvalid, match="more than"):
        parse_repository_names(text)


def test_parse_repository_names_is_fast_on_a_long_hostile_line() -> None:
    """A megabyte-long unterminated header is refused without backtracking."""
    with pytest.raises(ProfilePackagesInvalid, match="is not a \\[section\\] header"):
        parse_repository_names("[" + "a" * 1_000_000 + "\n")


def _profile(tmp_path: Path, files: dict[str, str]) -> Path:
    profile = tmp_path / "profile"
    profile.mkdir()
    for name, text in files.items():
        (profile / name).write_text(text)
    return profile


def test_read_profile_packages_prefers_arch_lists_and_reads_bootstrap(tmp_path: Path) -> None:
    """packages.<arch> wins over packages; bootstrap lists join; duplicates go once."""
    profile = _profile(
        tmp_path,
        {
            "packages.x86_64": "base\nlinux\n",
            "packages": "ignored\n",
            "bootstrap_packages": "base\narch-install-scripts\n",
            "packages.i686": "other\n",
            "pacman.conf": "[core]\n[extra]\n",
        },
    )
    read = read_profile_packages(profile, arch="x86_64")
    assert read.targets == ("base", "linux", "arch-install-scripts")
    assert read.lists == ("packages.x86_64", "bootstrap_packages")
    assert read.repositories == ("core", "extra")
    assert read_profile_packages(profile, arch="i686").targets == (
        "other",
        "base",
        "arch-install-scripts",
    )


def test_read_profile_packages_without_pacman_conf(tmp_path: Path) -> None:
    """A profile without pacman.conf has no repository names (the config's are used)."""
    read = read_profile_packages(_profile(tmp_path, {"packages": "base\n"}), arch="x86_64")
    assert read.targets == ("base",)
    assert read.repositories is None


def test_read_profile_packages_refuses_an_empty_profile(tmp_path: Path) -> None:
    """A profile naming no package at all is refused, saying which file to add."""
    with pytest.raises(ProfilePackagesInvalid, match=r"add packages\.x86_64"):
        read_profile_packages(_profile(tmp_path, {"packages.x86_64": "# none\n"}), arch="x86_64")


def test_read_profile_packages_refuses_a_link(tmp_path: Path) -> None:
    """A package list that is a symbolic link is refused, never followed."""
    profile = _profile(tmp_path, {})
    (profile / "packages.x86_64").symlink_to("/etc/passwd")
    with pytest.raises(ProfilePackagesInvalid, match="symbolic link") as info:
        read_profile_packages(profile, arch="x86_64")
    assert info.value.path == "packages.x86_64"


def test_read_profile_packages_refuses_a_fifo_and_big_files(tmp_path: Path) -> None:
    """A FIFO is not read (it would block); an oversized list is refused unread."""
    profile = _profile(tmp_path, {"packages.x86_64": "base\n"})
    os.mkfifo(profile / "pacman.conf")
    with pytest.raises(ProfilePackagesInvalid, match="not a regular file"):
        read_profile_packages(profile, arch="x86_64")
    (profile / "pacman.conf").unlink()
    (profile / "packages.x86_64").write_text("a\n" * (MAX_FILE_BYTES // 2 + 1))
    with pytest.raises(ProfilePackagesInvalid, match="over"):
        read_profile_packages(profile, arch="x86_64")


def test_read_profile_packages_refuses_binary(tmp_path: Path) -> None:
    """A list that is not UTF-8 is refused."""
    profile = _profile(tmp_path, {})
    (profile / "packages.x86_64").write_bytes(b"\xff\xfe\n")
    with pytest.raises(ProfilePackagesInvalid, match="not UTF-8"):
        read_profile_packages(profile, arch="x86_64")

"""Tests for sandbox.profile: the checks on a profile before a build."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sandbox.exceptions import ProfileInvalid
from sandbox.profile import check_profile


def _profile(tmp_path: Path) -> Path:
    profile = tmp_path / "profile"
    (profile / "airootfs" / "etc").mkdir(parents=True)
    (profile / "profiledef.sh").write_text("iso_name=x\n")
    (profile / "packages.x86_64").write_text("base\n")
    return profile


def test_check_profile_accepts_a_minimal_profile_and_keeps_its_links(tmp_path: Path) -> None:
    """A profile with profiledef.sh and packages.x86_64 passes; other links stay links."""
    profile = _profile(tmp_path)
    link = profile / "airootfs" / "etc" / "localtime"
    link.symlink_to("/usr/share/zoneinfo/UTC")
    found = check_profile(profile, max_file_bytes=1000)
    assert found.packages == ("packages.x86_64",)
    assert link.is_symlink()


@pytest.mark.parametrize("name", ["profiledef.sh", "packages.x86_64"])
def test_check_profile_rejects_a_missing_required_file(tmp_path: Path, name: str) -> None:
    """A missing profiledef.sh or package list is an error naming that file."""
    profile = _profile(tmp_path)
    (profile / name).unlink()
    with pytest.raises(ProfileInvalid) as info:
        check_profile(profile, max_file_bytes=1000)
    assert info.value.path == name
    assert name in str(info.value)


@pytest.mark.parametrize("name", ["profiledef.sh", "packages.x86_64"])
def test_check_profile_rejects_a_linked_required_file(tmp_path: Path, name: str) -> None:
    """profiledef.sh or a package list that is a link (e.g. to a host secret) is refused."""
    profile = _profile(tmp_path)
    (profile / name).unlink()
    (profile / name).symlink_to("/etc/shadow")
    with pytest.raises(ProfileInvalid, match="symbolic link") as info:
        check_profile(profile, max_file_bytes=1000)
    assert info.value.path == name


def test_check_profile_rejects_a_fifo_without_blocking(tmp_path: Path) -> None:
    """A FIFO in place of profiledef.sh is rejected by lstat, never opened."""
    profile = _profile(tmp_path)
    (profile / "profiledef.sh").unlink()
    os.mkfifo(profile / "profiledef.sh")
    with pytest.raises(ProfileInvalid, match="not a regular file"):
        check_profile(profile, max_file_bytes=1000)


def test_check_profile_rejects_oversized_files(tmp_path: Path) -> None:
    """A file over the size cap is refused with its size and the limit."""
    profile = _profile(tmp_path)
    (profile / "packages.x86_64").write_text("x" * 2000)
    with pytest.raises(ProfileInvalid, match="2000 bytes, over the limit of 1000"):
        check_profile(profile, max_file_bytes=1000)


def test_check_profile_accepts_other_architectures_lists(tmp_path: Path) -> None:
    """A packages.<arch> or plain packages file counts as a package list."""
    profile = _profile(tmp_path)
    (profile / "packages.x86_64").unlink()
    (profile / "packages.aarch64").write_text("base\n")
    (profile / "packages").write_text("base\n")
    assert check_profile(profile, max_file_bytes=1000).packages == ("packages", "packages.aarch64")


def test_check_profile_rejects_a_profile_that_is_a_link(tmp_path: Path) -> None:
    """The profile directory itself must not be a link."""
    profile = _profile(tmp_path)
    (tmp_path / "link").symlink_to(profile)
    with pytest.raises(ProfileInvalid, match="not a directory"):
        check_profile(tmp_path / "link", max_file_bytes=1000)
    with pytest.raises(ProfileInvalid, match="does not exist"):
        check_profile(tmp_path / "nope", max_file_bytes=1000)

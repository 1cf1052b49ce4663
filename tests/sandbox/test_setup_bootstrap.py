"""setup-sandbox.sh's path for hosts other than Arch, run for real against a fake mirror.

On a Debian host the script downloads Arch's bootstrap tarball and its signature,
checks the signature against the pinned release key, unpacks it, and runs pacman-key
and `pacman -Syu base archiso grub` inside it with systemd-nspawn, then fills the
base's mirror with `pacman -Syw` there. No Arch mirror is reachable here, so
tests/sandbox/fakearch.py serves one on 127.0.0.1, signed with a key of its own that the
script is told to pin instead (ISORUNNER_RELEASE_KEY_FILE/_FPR). Everything past the
download is the real path: gpg, tar, nspawn, pacman-key, pacman's signature checks,
repo-add, the ownership shift; the base is then used for a real stand-in build.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import require, require_root, require_tool
from tests.sandbox import fakearch
from tests.sandbox.test_setup_sandbox import (
    SMALL_UID_BASE,
    STANDIN_DIR,
    run_script,
    run_standin_build,
)

pytestmark = pytest.mark.integration


@dataclass(frozen=True, slots=True)
class Mirror:
    """The fake mirror: its URL, its release key, and where its files are."""

    url: str
    key: fakearch.ReleaseKey
    www: Path
    work: Path


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mirror]:
    """The fake Arch mirror on 127.0.0.1, built once for this module."""
    require_root()
    for tool in ("gpg", "gpgconf", "makepkg", "repo-add", "tar", "zstd", "systemd-nspawn"):
        require_tool(tool)
    rootfs = STANDIN_DIR / "debootstrap" / "rootfs"
    require(
        (rootfs / "usr" / "bin" / "pacman-key").is_file(), f"the stand-in built at {STANDIN_DIR}"
    )
    tmp = tmp_path_factory.mktemp("fakearch")
    www = tmp / "www"
    with fakearch.release_key(tmp / "gnupg", "isorunner fake release") as key:
        fakearch.make_mirror(
            www, tmp / "work", rootfs=rootfs, standin_packages=STANDIN_DIR / "packages", key=key
        )
        with fakearch.serve(www) as url:
            yield Mirror(url, key, www, tmp / "work")


def script_env(mirror: Mirror, key_file: Path) -> dict[str, str]:
    """Point setup-sandbox.sh at the fake mirror and its key, as if on a Debian host."""
    return {
        "ISORUNNER_SETUP_HOST": "other",
        "ISORUNNER_ARCH_MIRROR": mirror.url,
        "ISORUNNER_RELEASE_KEY_FILE": str(key_file),
        "ISORUNNER_RELEASE_KEY_FPR": mirror.key.fingerprint,
    }


def test_bootstrap_path_makes_a_base_that_builds(mirror: Mirror, tmp_path: Path) -> None:
    """Download, verify, unpack, pacman in nspawn, mirror, shift: the base builds an ISO."""
    key_file = mirror.key.export(tmp_path / "release.asc", armor=True)
    base = tmp_path / "base"
    packages = STANDIN_DIR / "profiles" / "minimal" / "packages.x86_64"
    # The keyring and cache are the test's own: never the host's /var/lib/isorunner.
    result = run_script(
        "--base", base, "--uid-base", str(SMALL_UID_BASE), "--packages", packages,
        "--keyring-dir", tmp_path / "keyring", "--cache-dir", tmp_path / "cache",
        env=script_env(mirror, key_file),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "downloading " + mirror.url + "/" + fakearch.BOOTSTRAP in result.stdout

    manifest = json.loads((base / "etc" / "isorunner" / "manifest.json").read_text())
    assert manifest["source"] == "bootstrap"
    assert manifest["uid_base"] == SMALL_UID_BASE
    assert set(manifest["packages"]) == {
        "isorunner-base",
        "isorunner-setuid",
        "isorunner-fcap",
        "isorunner-sysuser",
        "mkinitcpio",
        "mkinitcpio-archiso",
    }
    installed = {entry.name for entry in (base / "var" / "lib" / "pacman" / "local").iterdir()}
    assert {"base-3-2", "archiso-88-1", "grub-2.12-1"} <= installed
    mirrorlist = (base / "etc" / "pacman.d" / "mirrorlist").read_text()
    assert mirrorlist == f"Server = {mirror.url}/$repo/os/$arch\n"
    assert (base / "usr" / "bin" / "mkarchiso").stat().st_uid == SMALL_UID_BASE
    assert base.stat().st_uid == SMALL_UID_BASE
    assert not Path(f"{base}.new").exists()

    built, out = run_standin_build(tmp_path / "build", base=base, uid_base=SMALL_UID_BASE)
    assert built.returncode == 0, built.stdout + built.stderr
    assert [p.name for p in out.iterdir()] == ["isorunner-minimal-1.0-x86_64.iso"]


def package_list(tmp_path: Path) -> Path:
    """A one-package list for runs that must stop before any download."""
    path = tmp_path / "packages.x86_64"
    path.write_text("isorunner-base\n")
    return path


def tampered_copy(mirror: Mirror, tmp_path: Path) -> Path:
    """A copy of the mirror whose bootstrap tarball has one byte changed after signing."""
    www = tmp_path / "www"
    (www / "iso" / "latest").mkdir(parents=True)
    tarball = mirror.www / fakearch.BOOTSTRAP
    shutil.copy2(tarball.with_name(tarball.name + ".sig"), www / (fakearch.BOOTSTRAP + ".sig"))
    data = bytearray(tarball.read_bytes())
    data[len(data) // 2] ^= 0xFF
    (www / fakearch.BOOTSTRAP).write_bytes(bytes(data))
    return www


def test_bootstrap_refuses_a_tarball_changed_after_signing(mirror: Mirror, tmp_path: Path) -> None:
    """A bad signature stops the script before anything is unpacked."""
    key_file = mirror.key.export(tmp_path / "release.asc", armor=True)
    with fakearch.serve(tampered_copy(mirror, tmp_path)) as url:
        env = script_env(mirror, key_file) | {"ISORUNNER_ARCH_MIRROR": url}
        result = run_script(
            "--base", tmp_path / "base", "--packages", package_list(tmp_path),
            "--keyring-dir", tmp_path / "keyring", "--cache-dir", tmp_path / "cache", env=env,
        )  # fmt: skip
    assert result.returncode == 1
    assert "does not verify; refusing to use it" in result.stderr
    assert not (tmp_path / "base").exists()
    assert not (tmp_path / "base.new").exists()


def test_bootstrap_refuses_a_good_signature_by_another_key(mirror: Mirror, tmp_path: Path) -> None:
    """A valid signature by a key other than the pinned one is refused by fingerprint."""
    with fakearch.release_key(tmp_path / "gnupg", "someone else") as other:
        key_file = tmp_path / "both.asc"
        key_file.write_text(
            mirror.key.export(tmp_path / "a.asc", armor=True).read_text()
            + other.export(tmp_path / "b.asc", armor=True).read_text()
        )
        env = script_env(mirror, key_file) | {"ISORUNNER_RELEASE_KEY_FPR": other.fingerprint}
        result = run_script(
            "--base", tmp_path / "base", "--packages", package_list(tmp_path),
            "--keyring-dir", tmp_path / "keyring", "--cache-dir", tmp_path / "cache", env=env,
        )  # fmt: skip
    assert result.returncode == 1
    assert f"is not signed by the Arch Linux release key {other.fingerprint}" in result.stderr
    assert not (tmp_path / "base").exists()

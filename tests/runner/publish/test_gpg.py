"""Tests for runner.publish.gpg with the real gpg, in a throwaway keyring."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from runner.publish.exceptions import SigningFailed
from runner.publish.gpg import GpgSigner, gpg_argv
from tests.conftest import require_tool

PASSPHRASE = "gpg test passphrase"


def gpg(home: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """Run the real gpg on the throwaway keyring."""
    return subprocess.run(
        [require_tool("gpg"), "--batch", "--homedir", str(home), *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


@pytest.fixture
def keyring(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A keyring with one passphrase-protected Ed25519 signing key; its agent is stopped after."""
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    made = gpg(
        home, "--pinentry-mode", "loopback", "--passphrase", PASSPHRASE,
        "--quick-gen-key", "isorunner test <test@example.invalid>", "ed25519", "sign", "never",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    listed = gpg(home, "--with-colons", "--list-secret-keys")
    fingerprint = next(
        line.split(":")[9] for line in listed.stdout.splitlines() if line.startswith("fpr:")
    )
    yield home, fingerprint
    subprocess.run(
        ["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"], check=False, timeout=30
    )


@pytest.mark.anyio
async def test_gpg_signer_writes_a_signature_gpg_verifies(
    keyring: tuple[Path, str], tmp_path: Path
) -> None:
    """`gpg --verify iso.sig iso` accepts the signature made with the passphrase."""
    home, fingerprint = keyring
    iso = tmp_path / "archlive.iso"
    iso.write_bytes(b"iso bytes" * 1000)
    signer = GpgSigner(fingerprint, homedir=home, passphrase=SecretStr(PASSPHRASE))
    signature = await signer.sign(iso)
    assert signature == tmp_path / "archlive.iso.sig"
    checked = gpg(home, "--status-fd", "1", "--verify", str(signature), str(iso))
    assert checked.returncode == 0, checked.stderr
    assert f"VALIDSIG {fingerprint}" in checked.stdout
    iso.write_bytes(b"changed")
    assert gpg(home, "--verify", str(signature), str(iso)).returncode != 0


@pytest.mark.anyio
async def test_gpg_signer_reports_a_wrong_passphrase(
    keyring: tuple[Path, str], tmp_path: Path
) -> None:
    """A wrong passphrase fails with the key named and gpg's reason, and no .sig is left."""
    home, fingerprint = keyring
    iso = tmp_path / "archlive.iso"
    iso.write_bytes(b"x")
    signer = GpgSigner(fingerprint, homedir=home, passphrase=SecretStr("not it"))
    with pytest.raises(SigningFailed, match=f"with key {fingerprint}") as caught:
        await signer.sign(iso)
    assert "not it" not in str(caught.value)
    assert not (tmp_path / "archlive.iso.sig").exists()


def test_gpg_argv_keeps_the_passphrase_out() -> None:
    """The passphrase is read from stdin: argv only says so."""
    argv = gpg_argv(
        "gpg",
        key="ABCDEF0123456789",
        homedir=Path("/h"),
        path=Path("/o/a.iso"),
        with_passphrase=True,
    )
    assert argv == [
        "gpg", "--batch", "--yes", "--no-tty", "--quiet", "--homedir", "/h",
        "--pinentry-mode", "loopback", "--passphrase-fd", "0",
        "--local-user", "ABCDEF0123456789", "--detach-sign", "--output", "/o/a.iso.sig",
        "--", "/o/a.iso",
    ]  # fmt: skip

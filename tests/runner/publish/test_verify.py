"""Tests for `isorunner verify` and `isorunner keygen` (runner.publish.verify, commands).

A release directory is made the way the pipeline makes one (collect_build, then
write_signed_files); the real `minisign -Vm` and `sha256sum -c` accept it as README
says, and `isorunner verify` accepts it and refuses each kind of tampering.
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import os
import stat
import subprocess
from pathlib import Path

import anyio
import pytest

from runner.__main__ import main
from runner.artifacts import collect_build
from runner.publish.commands import ask_password, keygen
from runner.publish.exceptions import KeyFileError, VerificationFailed
from runner.publish.keys import load_secret_key, write_secret_key
from runner.publish.minisign import SecretKey, generate_secret_key
from runner.publish.provenance import Artifact, Reproducibility, statement
from runner.publish.signedfiles import write_signed_files
from runner.publish.signing import Signer, signature_path
from runner.publish.verify import check_sums, report_lines, verify_release
from tests.conftest import require_tool
from tests.runner.publish.test_provenance import check_slsa_provenance, facts

ISO_NAME = "archlive-1.0-x86_64.iso"
FIELDS = (("repo", "github:octo/archlive"), ("commit", "c" * 40), ("tag", "v1.0"))


async def make_release(directory: Path, key: SecretKey, **fact_overrides: object) -> list[Path]:
    """A signed release of a 2 MiB ISO in `directory`, as the pipeline writes one."""
    built = directory.parent / "built"
    built.mkdir(exist_ok=True)
    (built / ISO_NAME).write_bytes(os.urandom(2 << 20))
    artifacts = await collect_build([built / ISO_NAME], directory)
    subjects = [Artifact(p.name, s.sha256, s.b2) for p, s in artifacts.isos]
    document = statement(subjects, facts(**fact_overrides))
    return await write_signed_files(
        artifacts, signer=Signer(key), fields=FIELDS, provenance=document
    )


@pytest.fixture
def key() -> SecretKey:
    """The publisher's key."""
    return generate_secret_key()


def release_in(directory: Path, key: SecretKey, **fact_overrides: object) -> list[Path]:
    """`make_release`, run to completion from synchronous code."""
    return anyio.run(functools.partial(make_release, directory, key, **fact_overrides))


@pytest.fixture
def release(tmp_path: Path, key: SecretKey) -> Path:
    """A release directory; returns the ISO in it."""
    release_in(tmp_path / "release", key)
    return tmp_path / "release" / ISO_NAME


def test_release_holds_every_file_in_order(tmp_path: Path, key: SecretKey) -> None:
    """ISO, sums, the ISO's .minisig, provenance.json and its .minisig, in publishing order."""
    files = release_in(tmp_path / "release", key)
    assert [f.name for f in files] == [
        ISO_NAME,
        "sha256sums",
        "b2sums",
        f"{ISO_NAME}.minisig",
        "provenance.json",
        "provenance.json.minisig",
    ]
    check_slsa_provenance(json.loads((tmp_path / "release" / "provenance.json").read_text()))


def test_release_checks_with_minisign_and_sha256sum(release: Path, key: SecretKey) -> None:
    """A user without isorunner verifies with `minisign -Vm` and `sha256sum -c` (README)."""
    directory = release.parent
    (directory / "signing-key.pub").write_text(key.public_key().file_text())
    for target in (ISO_NAME, "provenance.json"):
        result = subprocess.run(
            [require_tool("minisign"), "-Vm", target, "-p", "signing-key.pub"],
            cwd=directory, capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
    for tool, sums in (("sha256sum", "sha256sums"), ("b2sum", "b2sums")):
        checked = subprocess.run(
            [require_tool(tool), "-c", sums],
            cwd=directory, capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert checked.stdout == f"{ISO_NAME}: OK\n"


def test_verify_release_reports_what_was_built_from_what(release: Path, key: SecretKey) -> None:
    """A good release verifies; the report names repo, ref, commit, builder and the check."""
    result = verify_release(release, key.public_key())
    assert result.sums == ("sha256sums", "b2sums")
    assert result.notes == ()
    lines = report_lines(result)
    assert lines[0].startswith(f"OK {ISO_NAME} ({2 << 20} bytes, sha256 ")
    assert f"  signature: good, key {key.public_key().id_text}, timestamp " in lines[1]
    assert "repo github:octo/archlive" in lines[2]
    assert (
        f"  provenance: built from github:octo/archlive refs/tags/v1.0 at commit {'c' * 40}"
        in lines
    )
    assert "  reproducibility: rebuild check not run" in lines


def test_verify_release_refuses_a_changed_iso(release: Path, key: SecretKey) -> None:
    """One changed byte in the ISO fails the signature check."""
    with release.open("r+b") as handle:
        handle.seek(1000)
        handle.write(b"\x00\xff")
    with pytest.raises(VerificationFailed, match=r"signature .*: .*the file was changed"):
        verify_release(release, key.public_key())


def test_verify_release_refuses_another_key(release: Path) -> None:
    """A release checked against another publisher's key fails, naming both ids."""
    with pytest.raises(VerificationFailed, match="not with the given key"):
        verify_release(release, generate_secret_key().public_key())


def test_verify_release_refuses_wrong_sums(release: Path, key: SecretKey) -> None:
    """A sums file listing another digest for the ISO fails, naming the sums file."""
    sums = release.with_name("sha256sums")
    sums.write_text(f"{'0' * 64}  {ISO_NAME}\n")
    with pytest.raises(VerificationFailed, match="sha256sums lists another digest"):
        verify_release(release, key.public_key())
    sums.write_text(f"{'0' * 64}  other.iso\n")
    with pytest.raises(VerificationFailed, match="sha256sums does not list"):
        verify_release(release, key.public_key())


def test_verify_release_refuses_a_changed_provenance(release: Path, key: SecretKey) -> None:
    """Editing provenance.json breaks its signature; an unsigned one is refused too."""
    path = release.with_name("provenance.json")
    path.write_text(path.read_text().replace("octo/archlive", "evil/archlive"))
    with pytest.raises(VerificationFailed, match=r"provenance signature .*the file was changed"):
        verify_release(release, key.public_key())
    signature_path(path).unlink()
    with pytest.raises(
        VerificationFailed, match=r"signature .*provenance\.json\.minisig is missing"
    ):
        verify_release(release, key.public_key())


def test_verify_release_refuses_provenance_of_another_iso(
    tmp_path: Path, release: Path, key: SecretKey
) -> None:
    """A validly signed provenance from another release does not vouch for this ISO."""
    other = tmp_path / "other"
    release_in(other, key)
    with pytest.raises(
        VerificationFailed, match=r"names archlive-1\.0-x86_64\.iso with other digests"
    ):
        verify_release(release, key.public_key(), provenance=other / "provenance.json")


def test_verify_release_notes_what_is_missing(release: Path, key: SecretKey) -> None:
    """Without sums or provenance beside it, the ISO verifies by signature, with notes."""
    for name in ("sha256sums", "b2sums", "provenance.json"):
        release.with_name(name).unlink()
    result = verify_release(release, key.public_key())
    assert result.sums == ()
    assert result.provenance is None
    assert result.notes == (
        "no sha256sums beside the ISO; not checked",
        "no b2sums beside the ISO; not checked",
        "no provenance.json beside the ISO; give --provenance FILE to check one",
    )


def test_verify_release_refuses_an_oversized_provenance(release: Path, key: SecretKey) -> None:
    """A 17 MiB provenance.json is refused before it is parsed."""
    path = release.with_name("provenance.json")
    with path.open("wb") as handle:
        handle.truncate(17 << 20)
    with pytest.raises(VerificationFailed, match="larger than"):
        verify_release(release, key.public_key())


def test_check_sums_handles_a_long_adversarial_file() -> None:
    """A megabyte of one line with many spaces is scanned once and does not list the ISO."""
    assert not check_sums("a" + " " * 1_000_000 + "b", ISO_NAME, "0" * 64, "sha256sums")
    assert check_sums(f"{'ab' * 32} *{ISO_NAME}\n", ISO_NAME, "ab" * 32, "sha256sums")


def test_verify_reports_a_different_rebuild(tmp_path: Path, key: SecretKey) -> None:
    """A release marked not reproducible says so, with the number of differing paths."""
    result = Reproducibility("different", None, ("/arch/version (mtime)", "/x (content)"))
    release_in(tmp_path / "release", key, reproducibility=result)
    lines = report_lines(verify_release(tmp_path / "release" / ISO_NAME, key.public_key()))
    assert "  reproducibility: NOT reproducible: the rebuild differed in 2 path(s)" in lines


# --- the command line ------------------------------------------------------------------------


def test_cli_verify_exit_codes(
    release: Path, key: SecretKey, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`isorunner verify` exits 0 with the report, 1 with the reason when a check fails."""
    pub = tmp_path / "signing-key.pub"
    pub.write_text(key.public_key().file_text())
    assert main(["verify", str(release), "--pubkey", str(pub)]) == 0
    assert capsys.readouterr().out.startswith(f"OK {ISO_NAME}")
    release.with_name("b2sums").write_text(f"{'0' * 128}  {ISO_NAME}\n")
    assert main(["verify", str(release), "--pubkey", key.public_key().encode()]) == 1
    assert capsys.readouterr().out == (
        f"isorunner: verification FAILED for {ISO_NAME}: "
        f"b2sums lists another digest for {ISO_NAME}: not this ISO\n"
    )


def test_cli_verify_without_a_key_asks_for_one(
    release: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --pubkey and without a configured key, exit 2 naming --pubkey."""
    assert main(["verify", str(release), "--config", str(write_config(tmp_path, ""))]) == 2
    assert "give --pubkey KEY" in capsys.readouterr().err


def test_cli_verify_uses_the_configured_key(release: Path, key: SecretKey, tmp_path: Path) -> None:
    """On the build host the [signing] key_file's public half is the default key."""
    secret = tmp_path / "signing.key"
    write_secret_key(secret, key, password=None)
    config = write_config(tmp_path, f'[signing]\nkey_file = "{secret}"\n')
    assert main(["verify", str(release), "--config", str(config)]) == 0


def write_config(directory: Path, text: str) -> Path:
    """A config file with `text`."""
    path = directory / "isorunner.toml"
    path.write_text(text)
    return path


def test_cli_keygen_writes_a_private_key_and_prints_the_public_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`keygen --no-password` writes a 0600 key and prints its public key file."""
    secret, public = tmp_path / "isorunner.key", tmp_path / "isorunner.pub"
    assert (
        main(["keygen", "--secret-key", str(secret), "--public-key", str(public), "--no-password"])
        == 0
    )
    printed = capsys.readouterr()
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert printed.out == public.read_text()
    assert printed.out == load_secret_key(secret, None).public_key().file_text()
    assert "NOT encrypted" in printed.err
    assert main(["keygen", "--secret-key", str(secret), "--no-password"]) == 2
    assert "exists; pass --force" in capsys.readouterr().err


def test_cli_keygen_takes_the_password_from_a_file(tmp_path: Path) -> None:
    """--password-file encrypts the key; only that password opens it."""
    password = tmp_path / "pw"
    password.write_text("file password\n")
    secret = tmp_path / "k.key"
    assert main(["keygen", "--secret-key", str(secret), "--password-file", str(password)]) == 0
    load_secret_key(secret, b"file password")
    with pytest.raises(KeyFileError, match="wrong password"):
        load_secret_key(secret, b"file password\n")


def test_keygen_prompts_twice_on_a_terminal(tmp_path: Path) -> None:
    """Without a password option the terminal is asked twice; differing answers are refused."""
    answers = iter(["typed", "typed"])
    args = argparse.Namespace(
        secret_key=tmp_path / "k.key", public_key=None, password_file=None,
        no_password=False, force=False,
    )  # fmt: skip
    assert keygen(args, out=io.StringIO(), prompt=lambda _: next(answers), interactive=True) == 0
    load_secret_key(tmp_path / "k.key", b"typed")
    mismatched = iter(["one", "two"])
    with pytest.raises(KeyFileError, match="differ"):
        ask_password(lambda _: next(mismatched))
    args.secret_key = tmp_path / "never.key"
    with pytest.raises(KeyFileError, match="no terminal"):
        keygen(args, out=io.StringIO(), interactive=False)
    assert not args.secret_key.exists()

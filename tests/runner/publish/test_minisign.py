"""Tests for runner.publish.minisign, keys and signing, against the real `minisign` (0.11).

Every signature made here is checked by `minisign -Vm`, which must also refuse a changed
file, a changed trusted comment and another key; keys go both ways between isorunner and
minisign (encrypted with scrypt, or plain). Pure parsing is also checked on hostile text.
"""

from __future__ import annotations

import base64
import hashlib
import os
import stat
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runner.publish.exceptions import KeyFileError, SignatureInvalid
from runner.publish.keys import (
    load_public_key,
    load_secret_key,
    read_password_file,
    write_secret_key,
)
from runner.publish.minisign import (
    MAX_TRUSTED_COMMENT,
    KdfLimits,
    SecretKey,
    decode_secret_key,
    generate_secret_key,
    key_id_text,
    parse_public_key,
    parse_signature,
    verify_digest,
)
from runner.publish.signing import (
    Signer,
    blake2b_file,
    parse_trusted_comment,
    signature_path,
    trusted_comment,
)
from tests.conftest import require_tool

#: Cheap KDF limits for keys the tests encrypt (libsodium's minimum memory, 16 MiB).
TEST_LIMITS = KdfLimits(opslimit=524288, memlimit=16777216)
FIELDS = (("repo", "github:octo/archlive"), ("commit", "a" * 40), ("tag", "v1.0"))


def minisign(*args: str | Path, stdin: str = "", cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the real minisign with `args`, feeding `stdin` (its password prompt reads it)."""
    executable = require_tool("minisign")
    return subprocess.run(
        [executable, *map(str, args)],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd,
        check=False,
        timeout=120,
    )


@pytest.fixture
def iso(tmp_path: Path) -> Path:
    """A 3 MiB file standing in for an ISO."""
    path = tmp_path / "archlive-2025.01.02-x86_64.iso"
    path.write_bytes(os.urandom(3 << 20))
    return path


@pytest.fixture
def key() -> SecretKey:
    """A fresh key pair."""
    return generate_secret_key()


def write_public_key(key: SecretKey, directory: Path, name: str = "key.pub") -> Path:
    """Write the key's public half as a minisign .pub file."""
    path = directory / name
    path.write_text(key.public_key().file_text())
    return path


def test_signer_signature_verifies_with_real_minisign(
    iso: Path, key: SecretKey, tmp_path: Path
) -> None:
    """`minisign -Vm` accepts the .minisig and prints the trusted comment we signed."""
    signature = Signer(key, clock=lambda: 1735787045.0).sign(iso, fields=FIELDS)
    result = minisign("-Vm", iso, "-p", write_public_key(key, tmp_path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert signature == signature_path(iso)
    assert result.stdout == (
        "Signature and comment signature verified\n"
        f"Trusted comment: timestamp:1735787045\tfile:{iso.name}\thashed\t"
        f"repo:github:octo/archlive\tcommit:{'a' * 40}\ttag:v1.0\n"
    )


def test_real_minisign_refuses_a_changed_iso(iso: Path, key: SecretKey, tmp_path: Path) -> None:
    """One flipped byte in the ISO makes minisign and verify_digest refuse the signature."""
    Signer(key).sign(iso)
    data = bytearray(iso.read_bytes())
    data[len(data) // 2] ^= 1
    iso.write_bytes(data)
    result = minisign("-Vm", iso, "-p", write_public_key(key, tmp_path), cwd=tmp_path)
    assert result.returncode == 1
    assert "Signature verification failed" in result.stderr
    signature = parse_signature(signature_path(iso).read_text())
    with pytest.raises(SignatureInvalid, match="the file was changed"):
        verify_digest(key.public_key(), blake2b_file(iso), signature)


def test_real_minisign_refuses_a_changed_trusted_comment(
    iso: Path, key: SecretKey, tmp_path: Path
) -> None:
    """Editing the trusted comment (tag v1.0 → v9.9) breaks the global signature."""
    path = Signer(key).sign(iso, fields=FIELDS)
    path.write_text(path.read_text().replace("tag:v1.0", "tag:v9.9"))
    result = minisign("-Vm", iso, "-p", write_public_key(key, tmp_path), cwd=tmp_path)
    assert result.returncode == 1
    assert "Comment signature verification failed" in result.stderr
    with pytest.raises(SignatureInvalid, match="trusted comment was changed"):
        verify_digest(key.public_key(), blake2b_file(iso), parse_signature(path.read_text()))


def test_real_minisign_refuses_another_key(iso: Path, key: SecretKey, tmp_path: Path) -> None:
    """A signature checked against another key is refused, naming both key ids."""
    Signer(key).sign(iso)
    other = generate_secret_key()
    result = minisign("-Vm", iso, "-p", write_public_key(other, tmp_path), cwd=tmp_path)
    assert result.returncode == 1
    assert f"is {key_id_text(key.key_id)}" in result.stderr
    with pytest.raises(
        SignatureInvalid, match=f"not with the given key {other.public_key().id_text}"
    ):
        verify_digest(
            other.public_key(), blake2b_file(iso), parse_signature(signature_path(iso).read_text())
        )


def test_verify_digest_accepts_real_minisign_signatures(
    iso: Path, key: SecretKey, tmp_path: Path
) -> None:
    """A signature `minisign -S` makes with our unencrypted key file passes verify_digest."""
    secret = tmp_path / "plain.key"
    write_secret_key(secret, key, password=None)
    result = minisign("-S", "-s", secret, "-m", iso, "-t", "made by minisign", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    signature = parse_signature(signature_path(iso).read_text())
    verify_digest(key.public_key(), blake2b_file(iso), signature)
    assert signature.trusted_comment == "made by minisign"


def test_encrypted_key_written_by_isorunner_signs_in_real_minisign(
    iso: Path, key: SecretKey, tmp_path: Path
) -> None:
    """The real minisign decrypts our scrypt-encrypted key with the password and signs with it."""
    secret = tmp_path / "enc.key"
    write_secret_key(secret, key, password=b"correct horse", limits=TEST_LIMITS)
    result = minisign("-S", "-s", secret, "-m", iso, stdin="correct horse\n", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    verify_digest(
        key.public_key(), blake2b_file(iso), parse_signature(signature_path(iso).read_text())
    )
    wrong = minisign("-S", "-s", secret, "-m", iso, stdin="wrong horse\n", cwd=tmp_path)
    assert wrong.returncode != 0
    assert "Wrong password for that key" in wrong.stderr


def test_load_secret_key_reads_real_minisign_keys(iso: Path, tmp_path: Path) -> None:
    """Keys made by `minisign -G` (scrypt, minisign's own limits) and `-G -W` load and sign."""
    minisign("-G", "-p", "enc.pub", "-s", "enc.key", stdin="pw\npw\n", cwd=tmp_path)
    minisign("-G", "-W", "-p", "plain.pub", "-s", "plain.key", cwd=tmp_path)
    for name, password in (("enc", b"pw"), ("plain", None)):
        key = load_secret_key(tmp_path / f"{name}.key", password)
        public = tmp_path / f"{name}.pub"
        assert key.public_key() == load_public_key(str(public))
        Signer(key).sign(iso)
        assert minisign("-Vm", iso, "-p", public, cwd=tmp_path).returncode == 0
    with pytest.raises(KeyFileError, match="wrong password"):
        load_secret_key(tmp_path / "enc.key", b"not it")
    with pytest.raises(KeyFileError, match="encrypted: give its password"):
        load_secret_key(tmp_path / "enc.key", None)


def test_public_key_file_is_what_minisign_recreates(key: SecretKey, tmp_path: Path) -> None:
    """Our .pub file is byte-equal to `minisign -R` run on the same secret key."""
    secret = tmp_path / "k.key"
    write_secret_key(secret, key, password=None)
    assert minisign("-R", "-s", secret, "-p", "r.pub", cwd=tmp_path).returncode == 0
    assert (tmp_path / "r.pub").read_text() == key.public_key().file_text()


def test_key_id_text_is_printed_like_minisign() -> None:
    """The id is the little-endian u64 in upper-case hex, without leading zeros."""
    assert key_id_text(bytes([0x24, 0x44, 0x43, 0x6E, 0xB0, 0x44, 0x01, 0x96])) == (
        "960144B06E434424"
    )
    assert key_id_text(bytes([0xAB, 0, 0, 0, 0, 0, 0, 0])) == "AB"


def test_write_secret_key_is_private_and_never_overwrites(key: SecretKey, tmp_path: Path) -> None:
    """The file is mode 0600; an existing file is kept unless force is given."""
    path = tmp_path / "isorunner.key"
    write_secret_key(path, key, password=None)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    other = generate_secret_key()
    with pytest.raises(KeyFileError, match="exists; pass --force"):
        write_secret_key(path, other, password=None)
    assert load_secret_key(path, None).key_id == key.key_id
    write_secret_key(path, other, password=None, force=True)
    assert load_secret_key(path, None).key_id == other.key_id
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["isorunner.key"]


def test_load_secret_key_names_the_file_and_never_its_content(tmp_path: Path) -> None:
    """Missing, oversized and malformed files are refused with the path, not the content."""
    with pytest.raises(KeyFileError, match="does not exist"):
        load_secret_key(tmp_path / "absent.key", None)
    big = tmp_path / "big.key"
    big.write_bytes(b"x" * 5000)
    with pytest.raises(KeyFileError, match="larger than"):
        load_secret_key(big, None)
    bad = tmp_path / "bad.key"
    bad.write_text("untrusted comment: x\nc2VjcmV0LXNlY3JldA==\n")
    with pytest.raises(KeyFileError, match=r"bad\.key: .*not a minisign secret key") as caught:
        load_secret_key(bad, None)
    assert "c2VjcmV0" not in str(caught.value)


def test_load_secret_key_refuses_a_corrupt_key(key: SecretKey, tmp_path: Path) -> None:
    """A changed byte in an unencrypted key fails its checksum."""
    path = tmp_path / "k.key"
    write_secret_key(path, key, password=None)
    comment, blob = path.read_text().splitlines()
    data = bytearray(base64.b64decode(blob))
    data[100] ^= 0xFF
    path.write_text(f"{comment}\n{base64.b64encode(bytes(data)).decode()}\n")
    with pytest.raises(KeyFileError, match="corrupt"):
        load_secret_key(path, None)


def test_read_password_file_drops_one_line_end(tmp_path: Path) -> None:
    """A trailing newline is not part of the password; an empty file is refused."""
    path = tmp_path / "pw"
    path.write_bytes(b"s3cret \n")
    assert read_password_file(path) == b"s3cret "
    path.write_bytes(b"\n")
    with pytest.raises(KeyFileError, match="is empty"):
        read_password_file(path)


def test_load_public_key_takes_a_file_or_the_inline_key(key: SecretKey, tmp_path: Path) -> None:
    """A .pub path and the bare base64 line give the same key; other text is refused."""
    path = write_public_key(key, tmp_path)
    assert load_public_key(str(path)) == load_public_key(key.public_key().encode())
    with pytest.raises(KeyFileError, match="neither a public key file"):
        load_public_key(str(tmp_path / "missing.pub"))


@pytest.mark.parametrize("size", [0, 1, (1 << 20) - 1, 1 << 20, (3 << 20) + 5])
def test_blake2b_file_is_b2sums_digest(tmp_path: Path, size: int) -> None:
    """The streamed prehash equals hashlib's BLAKE2b-512 around the chunk size."""
    data = os.urandom(size)
    path = tmp_path / "f"
    path.write_bytes(data)
    assert blake2b_file(path) == hashlib.blake2b(data).digest()


def test_signer_uses_a_given_digest_without_reading(key: SecretKey, tmp_path: Path) -> None:
    """With the digest known (from b2sums) the file itself is never opened."""
    data = b"iso bytes"
    absent = tmp_path / "not-written.iso"
    Signer(key).sign(absent, digest=hashlib.blake2b(data).digest())
    signature = parse_signature(signature_path(absent).read_text())
    verify_digest(key.public_key(), hashlib.blake2b(data).digest(), signature)
    assert not absent.exists()


def test_trusted_comment_cleans_hostile_values() -> None:
    """Control characters and tabs become spaces and long values are cut, keeping fields apart."""
    text = trusted_comment(
        timestamp=7,
        file_name="a\tb.iso",
        fields=(("tag", "v1\nforged:yes\tx"), ("commit", "c" * 1000)),
    )
    fields = parse_trusted_comment(text)
    assert fields["file"] == "a b.iso"
    assert fields["tag"] == "v1 forged:yes x"
    assert "forged" not in fields
    assert len(fields["commit"]) == 256
    assert fields["commit"].endswith("…")


def test_trusted_comment_stays_within_minisigns_limit() -> None:
    """Many long fields are dropped from the end until the comment fits minisign's buffer."""
    text = trusted_comment(timestamp=1, file_name="x", fields=[("k", "v" * 300)] * 100)
    assert len(text.encode()) <= MAX_TRUSTED_COMMENT
    assert text.startswith("timestamp:1\tfile:x\thashed\tk:")


def test_trusted_comment_refuses_odd_keys() -> None:
    """A field key outside [a-z0-9_-] is a programming error."""
    with pytest.raises(ValueError, match="must be"):
        trusted_comment(timestamp=1, file_name="x", fields=[("Bad Key", "v")])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "needs 4 non-empty lines"),
        ("untrusted comment: x\nAAAA\ntrusted comment: y\nAAAA\n", "not valid minisign base64"),
        ("comment: x\nAAAA\ntrusted comment: y\nAAAA\n", "first line must start"),
        ("untrusted comment: x\nAAAA\ncomment: y\nAAAA\n", "third line must start"),
    ],
)
def test_parse_signature_refuses_malformed_files(text: str, message: str) -> None:
    """Each malformed signature file is refused with what is wrong."""
    with pytest.raises(SignatureInvalid, match=message):
        parse_signature(text)


@given(st.text(max_size=400))
def test_parse_signature_raises_only_signature_invalid(text: str) -> None:
    """Arbitrary text either parses or raises SignatureInvalid, never anything else."""
    try:
        parse_signature(text)
        parse_public_key(text)
    except SignatureInvalid:
        pass


def test_parse_public_key_handles_a_long_adversarial_line() -> None:
    """A megabyte of base64-looking text is refused quickly as not a key."""
    with pytest.raises(SignatureInvalid, match="not valid minisign base64"):
        parse_public_key("RW" + "A" * 1_000_000)


def test_secret_key_round_trips_through_its_file_text(key: SecretKey) -> None:
    """Encoding with a password and decoding with it gives the same key back."""
    text = key.encode(password=b"pw", limits=TEST_LIMITS)
    assert decode_secret_key(text, b"pw").public_key() == key.public_key()
    assert repr(key) == f"SecretKey(id={key.public_key().id_text})"

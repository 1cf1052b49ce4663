"""The minisign formats: public keys, secret keys and prehashed Ed25519 signatures.

Pure: no file or network I/O (`generate_secret_key` reads the OS random generator; the
secret key's password KDF is CPU work). Files written here verify with the real
`minisign -Vm` and keys load in it (tests/runner/publish/test_minisign.py), following
minisign 0.11's `src/minisign.h` and `src/minisign.c`:

- public key: `untrusted comment: minisign public key <KEYID>` then base64 of
  `"Ed" ‖ key id (8 bytes) ‖ Ed25519 public key (32)`; `<KEYID>` is the key id read as a
  little-endian integer, upper-case hex without leading zeros (`%PRIX64`);
- secret key: a comment line, then base64 of `"Ed" ‖ kdf ("Sc" scrypt, or two zero bytes for none) ‖
  "B2" ‖ salt (32) ‖ opslimit (u64 LE) ‖ memlimit (u64 LE) ‖ [key id (8) ‖ libsodium
  secret key (seed ‖ public key, 64) ‖ checksum (32)]`; the bracket is XORed with 104
  bytes of libsodium's `crypto_pwhash_scryptsalsa208sha256(password, salt, opslimit,
  memlimit)` when encrypted; the checksum is BLAKE2b-256 of `"Ed" ‖ key id ‖ secret key`;
- signature (`.minisig`): `untrusted comment: …`, base64 of `"ED" ‖ key id ‖
  Ed25519(BLAKE2b-512(file))`, `trusted comment: …`, base64 of the global signature
  `Ed25519(signature ‖ trusted comment)`. "ED" is the prehashed algorithm: the file is
  hashed once, streamed, so memory stays flat for a 2 GiB ISO.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from dataclasses import dataclass
from typing import Final

import nacl.exceptions
import nacl.pwhash.scrypt
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from runner.publish.exceptions import KeyFileError, SignatureInvalid

KEY_ALGORITHM: Final = b"Ed"
PREHASHED_ALGORITHM: Final = b"ED"
LEGACY_ALGORITHM: Final = b"Ed"
KDF_SCRYPT: Final = b"Sc"
KDF_NONE: Final = b"\0\0"
CHECKSUM_ALGORITHM: Final = b"B2"
UNTRUSTED_PREFIX: Final = "untrusted comment: "
TRUSTED_PREFIX: Final = "trusted comment: "
#: minisign reads comment lines with fixed buffers (COMMENTMAXBYTES, TRUSTEDCOMMENTMAXBYTES).
MAX_UNTRUSTED_COMMENT: Final = 1024 - len(UNTRUSTED_PREFIX) - 2
MAX_TRUSTED_COMMENT: Final = 8192 - len(TRUSTED_PREFIX) - 2
#: BLAKE2b-512, the prehash of "ED" signatures.
DIGEST_BYTES: Final = 64

_KEY_ID_BYTES: Final = 8
_SALT_BYTES: Final = 32
_KEYNUM_SK_BYTES: Final = _KEY_ID_BYTES + 64 + 32
_SECRET_KEY_BYTES: Final = 2 + 2 + 2 + _SALT_BYTES + 8 + 8 + _KEYNUM_SK_BYTES
_PUBLIC_KEY_BYTES: Final = 2 + _KEY_ID_BYTES + 32
_SIGNATURE_BYTES: Final = 2 + _KEY_ID_BYTES + 64
#: What a key file may ask of the KDF before it is refused (minisign's default is 1 GiB).
_MAX_MEMLIMIT: Final = 4 << 30
_MAX_OPSLIMIT: Final = 1 << 34


@dataclass(frozen=True, slots=True)
class KdfLimits:
    """libsodium's scryptsalsa208sha256 cost parameters, as a secret key file stores them.

    Attributes:
        opslimit: The operations limit.
        memlimit: The memory limit in bytes.
    """

    opslimit: int
    memlimit: int

    def derive(self, password: bytes, salt: bytes, length: int) -> bytes:
        """Run minisign's KDF: libsodium's `crypto_pwhash_scryptsalsa208sha256`.

        libsodium turns the limits into scrypt's N, r and p itself (`pickparams`), so the
        same call as minisign's gives the same bytes.

        Args:
            password: The password's bytes.
            salt: The 32-byte salt.
            length: How many bytes to derive.

        Returns:
            The derived bytes.

        Raises:
            KeyFileError: libsodium refuses the limits (outside its range).
        """
        try:
            return nacl.pwhash.scrypt.kdf(
                length, password, salt, opslimit=self.opslimit, memlimit=self.memlimit
            )
        except nacl.exceptions.CryptoError as exc:
            raise KeyFileError(f"the key derivation refused its limits: {exc}") from None


#: minisign's defaults: crypto_pwhash_scryptsalsa208sha256_OPSLIMIT/MEMLIMIT_SENSITIVE.
SENSITIVE_LIMITS: Final = KdfLimits(opslimit=33554432, memlimit=1073741824)


def key_id_text(key_id: bytes) -> str:
    """The key id as minisign prints it: little-endian u64, upper-case hex, no padding."""
    return f"{int.from_bytes(key_id, 'little'):X}"


@dataclass(frozen=True, slots=True)
class PublicKey:
    """A minisign public key.

    Attributes:
        key_id: The 8-byte key id.
        key: The raw 32-byte Ed25519 public key.
    """

    key_id: bytes
    key: bytes

    @property
    def id_text(self) -> str:
        """The key id as minisign prints it."""
        return key_id_text(self.key_id)

    def encode(self) -> str:
        """The base64 form `minisign -P` takes."""
        return base64.b64encode(KEY_ALGORITHM + self.key_id + self.key).decode("ascii")

    def file_text(self) -> str:
        """The public key file, as `minisign -G` writes it."""
        return f"{UNTRUSTED_PREFIX}minisign public key {self.id_text}\n{self.encode()}\n"


@dataclass(frozen=True, slots=True)
class Signature:
    """A parsed `.minisig` file.

    Attributes:
        algorithm: b"ED" (prehashed) or b"Ed" (legacy, the whole file signed).
        key_id: The signing key's id.
        signature: The 64-byte Ed25519 signature of the file (or its BLAKE2b-512).
        untrusted_comment: The first line's text (not signed).
        trusted_comment: The third line's text (signed by the global signature).
        global_signature: Ed25519 of `signature ‖ trusted comment`.
    """

    algorithm: bytes
    key_id: bytes
    signature: bytes
    untrusted_comment: str
    trusted_comment: str
    global_signature: bytes

    def file_text(self) -> str:
        """The `.minisig` file."""
        blob = base64.b64encode(self.algorithm + self.key_id + self.signature).decode("ascii")
        global_sig = base64.b64encode(self.global_signature).decode("ascii")
        return (
            f"{UNTRUSTED_PREFIX}{self.untrusted_comment}\n{blob}\n"
            f"{TRUSTED_PREFIX}{self.trusted_comment}\n{global_sig}\n"
        )


class SecretKey:
    """A minisign secret key, decrypted and ready to sign.

    Args:
        key_id: The 8-byte key id.
        seed: The 32-byte Ed25519 seed (the first half of libsodium's secret key).
    """

    __slots__ = ("_private", "_seed", "key_id")

    def __init__(self, key_id: bytes, seed: bytes) -> None:
        if len(key_id) != _KEY_ID_BYTES or len(seed) != 32:
            raise ValueError("a key id is 8 bytes and an Ed25519 seed 32")
        self.key_id = key_id
        self._seed = seed
        self._private = Ed25519PrivateKey.from_private_bytes(seed)

    def __repr__(self) -> str:
        return f"SecretKey(id={key_id_text(self.key_id)})"

    def public_key(self) -> PublicKey:
        """The matching public key."""
        return PublicKey(self.key_id, self._private.public_key().public_bytes_raw())

    def sign_digest(
        self, digest: bytes, *, trusted_comment: str, untrusted_comment: str
    ) -> Signature:
        """Sign a file's BLAKE2b-512 digest, minisign's prehashed ("ED") way.

        Args:
            digest: BLAKE2b-512 of the file (64 bytes).
            trusted_comment: Signed text (see `check_comment`).
            untrusted_comment: Unsigned text for the first line.

        Returns:
            The signature, ready for `Signature.file_text`.

        Raises:
            ValueError: The digest is not 64 bytes or a comment is not allowed.
        """
        if len(digest) != DIGEST_BYTES:
            raise ValueError("the prehash is BLAKE2b-512: 64 bytes")
        check_comment(trusted_comment, limit=MAX_TRUSTED_COMMENT)
        check_comment(untrusted_comment, limit=MAX_UNTRUSTED_COMMENT)
        signature = self._private.sign(digest)
        global_signature = self._private.sign(signature + trusted_comment.encode("utf-8"))
        return Signature(
            PREHASHED_ALGORITHM,
            self.key_id,
            signature,
            untrusted_comment,
            trusted_comment,
            global_signature,
        )

    def encode(
        self,
        *,
        password: bytes | None,
        comment: str = "isorunner signing key (minisign format)",
        limits: KdfLimits = SENSITIVE_LIMITS,
        salt: bytes | None = None,
    ) -> str:
        """The secret key file, encrypted with `password` unless it is None.

        Args:
            password: Encrypts the key (scrypt, as minisign does); None stores it plain,
                like `minisign -G -W`.
            comment: The untrusted first line's text.
            limits: The KDF cost when encrypted (default: minisign's).
            salt: The 32-byte KDF salt; random when None.

        Returns:
            The two-line file text.
        """
        check_comment(comment, limit=MAX_UNTRUSTED_COMMENT)
        public = self._private.public_key().public_bytes_raw()
        sk = self._seed + public
        checksum = _checksum(self.key_id, sk)
        keynum_sk = self.key_id + sk + checksum
        if password is None:
            header = KDF_NONE + CHECKSUM_ALGORITHM + bytes(_SALT_BYTES) + bytes(16)
        else:
            salt = os.urandom(_SALT_BYTES) if salt is None else salt
            stream = limits.derive(password, salt, _KEYNUM_SK_BYTES)
            keynum_sk = bytes(a ^ b for a, b in zip(keynum_sk, stream, strict=True))
            header = (
                KDF_SCRYPT
                + CHECKSUM_ALGORITHM
                + salt
                + limits.opslimit.to_bytes(8, "little")
                + limits.memlimit.to_bytes(8, "little")
            )
        blob = base64.b64encode(KEY_ALGORITHM + header + keynum_sk).decode("ascii")
        return f"{UNTRUSTED_PREFIX}{comment}\n{blob}\n"


def generate_secret_key() -> SecretKey:
    """A new random key pair with a random key id, as `minisign -G` makes one."""
    return SecretKey(os.urandom(_KEY_ID_BYTES), os.urandom(32))


def check_comment(text: str, *, limit: int) -> None:
    """Refuse a comment minisign could not read back: control characters or too long.

    Tabs are allowed: minisign's own trusted comments separate their fields with them.

    Raises:
        ValueError: The text holds a control character other than a tab (line breaks
            included), or is longer than `limit` UTF-8 bytes.
    """
    if any((ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F for c in text):
        raise ValueError("a minisign comment cannot hold control characters or line breaks")
    if len(text.encode("utf-8")) > limit:
        raise ValueError(f"a minisign comment is at most {limit} bytes")


def _checksum(key_id: bytes, sk: bytes) -> bytes:
    return hashlib.blake2b(KEY_ALGORITHM + key_id + sk, digest_size=32).digest()


def _b64(text: str, size: int, what: str) -> bytes:
    try:
        data = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        data = b""
    if len(data) != size:
        raise SignatureInvalid(f"{what} is not valid minisign base64 of {size} bytes")
    return data


def _lines(text: str, count: int, what: str) -> list[str]:
    # minisign reads each line with fgets and drops the line end; "\r" ends a line too.
    lines = [line.partition("\r")[0] for line in text.split("\n")]
    if len(lines) < count or any(not line for line in lines[:count]):
        raise SignatureInvalid(f"{what} needs {count} non-empty lines")
    return lines[:count]


def parse_public_key(text: str) -> PublicKey:
    """Read a public key: a minisign `.pub` file, or its base64 line alone (`-P`).

    Raises:
        SignatureInvalid: Not a minisign Ed25519 public key.
    """
    lines = [line.strip() for line in text.strip().splitlines()]
    if len(lines) == 2 and lines[0].startswith(UNTRUSTED_PREFIX):
        encoded = lines[1]
    elif len(lines) == 1:
        encoded = lines[0]
    else:
        raise SignatureInvalid("a public key is a minisign .pub file or its base64 line")
    data = _b64(encoded, _PUBLIC_KEY_BYTES, "the public key")
    if data[:2] != KEY_ALGORITHM:
        raise SignatureInvalid("the public key is not an Ed25519 minisign key")
    return PublicKey(data[2:10], data[10:])


def parse_signature(text: str) -> Signature:
    """Read a `.minisig` file.

    Raises:
        SignatureInvalid: It is not a minisign signature file.
    """
    first, blob, trusted, global_line = _lines(text, 4, "a signature file")
    if not first.startswith(UNTRUSTED_PREFIX):
        raise SignatureInvalid(f"the signature's first line must start with {UNTRUSTED_PREFIX!r}")
    if not trusted.startswith(TRUSTED_PREFIX):
        raise SignatureInvalid(f"the signature's third line must start with {TRUSTED_PREFIX!r}")
    data = _b64(blob, _SIGNATURE_BYTES, "the signature")
    if data[:2] not in (PREHASHED_ALGORITHM, LEGACY_ALGORITHM):
        raise SignatureInvalid("the signature uses an algorithm minisign does not know")
    return Signature(
        algorithm=data[:2],
        key_id=data[2:10],
        signature=data[10:],
        untrusted_comment=first.removeprefix(UNTRUSTED_PREFIX),
        trusted_comment=trusted.removeprefix(TRUSTED_PREFIX),
        global_signature=_b64(global_line, 64, "the global signature"),
    )


def verify_digest(public_key: PublicKey, digest: bytes, signature: Signature) -> None:
    """Check a prehashed signature and its trusted comment, as `minisign -V` does.

    Args:
        public_key: The key the signature must be made with.
        digest: BLAKE2b-512 of the file.
        signature: The parsed `.minisig`.

    Raises:
        SignatureInvalid: Legacy algorithm, another key, a file that was changed, or a
            trusted comment that was changed.
    """
    if signature.algorithm != PREHASHED_ALGORITHM:
        raise SignatureInvalid("legacy (non-prehashed) signature; isorunner makes and checks ED")
    if not hmac.compare_digest(signature.key_id, public_key.key_id):
        raise SignatureInvalid(
            f"signed with key {key_id_text(signature.key_id)}, "
            f"not with the given key {public_key.id_text}"
        )
    verifier = Ed25519PublicKey.from_public_bytes(public_key.key)
    try:
        verifier.verify(signature.signature, digest)
    except InvalidSignature:
        raise SignatureInvalid("signature verification failed: the file was changed") from None
    try:
        verifier.verify(
            signature.global_signature,
            signature.signature + signature.trusted_comment.encode("utf-8"),
        )
    except InvalidSignature:
        raise SignatureInvalid(
            "comment signature verification failed: the trusted comment was changed"
        ) from None


def decode_secret_key(text: str, password: bytes | None) -> SecretKey:
    """Read a secret key file, decrypting it with `password` when it is encrypted.

    Args:
        text: The file's text.
        password: The password; needed only for an encrypted key.

    Returns:
        The key.

    Raises:
        KeyFileError: Malformed, an unknown algorithm, unreasonable KDF limits, a missing
            or wrong password, or a corrupt key.
    """
    lines = text.splitlines()
    if len(lines) < 2:
        raise KeyFileError("the secret key file needs a comment line and a key line")
    try:
        data = base64.b64decode(lines[1].strip(), validate=True)
    except (binascii.Error, ValueError):
        data = b""
    if len(data) != _SECRET_KEY_BYTES:
        raise KeyFileError("the secret key file's second line is not a minisign secret key")
    if data[:2] != KEY_ALGORITHM or data[4:6] != CHECKSUM_ALGORITHM:
        raise KeyFileError("the secret key uses an algorithm minisign does not know")
    kdf, salt = data[2:4], data[6:38]
    limits = KdfLimits(int.from_bytes(data[38:46], "little"), int.from_bytes(data[46:54], "little"))
    keynum_sk = data[54:]
    if kdf == KDF_SCRYPT:
        if password is None:
            raise KeyFileError("the secret key is encrypted: give its password")
        if limits.memlimit > _MAX_MEMLIMIT or limits.opslimit > _MAX_OPSLIMIT:
            raise KeyFileError("the secret key asks for more KDF memory or work than allowed")
        stream = limits.derive(password, salt, _KEYNUM_SK_BYTES)
        keynum_sk = bytes(a ^ b for a, b in zip(keynum_sk, stream, strict=True))
    elif kdf != KDF_NONE:
        raise KeyFileError("the secret key uses a key derivation minisign does not know")
    key_id, sk, checksum = keynum_sk[:8], keynum_sk[8:72], keynum_sk[72:]
    # `minisign -G -W` leaves the checksum of an unencrypted key zeroed.
    unchecked = kdf == KDF_NONE and checksum == bytes(32)
    if not unchecked and not hmac.compare_digest(checksum, _checksum(key_id, sk)):
        if kdf == KDF_SCRYPT:
            raise KeyFileError("wrong password for the secret key")
        raise KeyFileError("the secret key is corrupt (checksum mismatch)")
    key = SecretKey(key_id, sk[:32])
    if not hmac.compare_digest(key.public_key().key, sk[32:]):
        raise KeyFileError("the secret key is corrupt (its two halves do not match)")
    return key

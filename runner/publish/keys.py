"""Signing key files on disk: create one (`isorunner keygen`), load one, read a public key.

I/O shell around `runner.publish.minisign`: reads and writes key files and password
files. A secret key file is created with mode 0600 and never replaced unless asked; a
password comes from a file or a prompt, never from the command line. Errors name the
file and what to do, never its contents or the password.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

from runner.publish.exceptions import KeyFileError, SignatureInvalid
from runner.publish.minisign import (
    SENSITIVE_LIMITS,
    KdfLimits,
    PublicKey,
    SecretKey,
    decode_secret_key,
    parse_public_key,
)

#: A minisign key file is two short lines; anything larger is not one.
MAX_KEY_FILE_BYTES: Final = 4096
MAX_PASSWORD_BYTES: Final = 1024


def _read_small(path: Path, what: str) -> str:
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_KEY_FILE_BYTES + 1)
    except FileNotFoundError:
        raise KeyFileError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise KeyFileError(f"cannot read {what} {path}: {exc.strerror}") from None
    if len(data) > MAX_KEY_FILE_BYTES:
        raise KeyFileError(f"{what} {path} is larger than a minisign key file can be")
    try:
        return data.decode("ascii")
    except UnicodeDecodeError:
        raise KeyFileError(f"{what} {path} is not a minisign key file (not ASCII)") from None


def load_secret_key(path: Path, password: bytes | None) -> SecretKey:
    """Load and decrypt the secret key at `path`.

    CPU-heavy for an encrypted key (minisign's KDF takes about 1 GiB and seconds): call
    it once, off the event loop.

    Args:
        path: The minisign secret key file (`isorunner keygen` or `minisign -G`).
        password: Its password, or None for an unencrypted key.

    Returns:
        The key.

    Raises:
        KeyFileError: Missing, unreadable, malformed, or the password is missing or wrong;
            the message names the file.
    """
    text = _read_small(path, "secret key file")
    try:
        return decode_secret_key(text, password)
    except KeyFileError as exc:
        raise KeyFileError(f"secret key file {path}: {exc}") from None


def write_secret_key(
    path: Path,
    key: SecretKey,
    *,
    password: bytes | None,
    limits: KdfLimits = SENSITIVE_LIMITS,
    force: bool = False,
) -> None:
    """Write `key` to `path` with mode 0600, encrypted with `password` unless None.

    Args:
        path: Where to write; its directory must exist.
        key: The key.
        password: Encrypts the file (minisign's scrypt); None writes it unencrypted.
        limits: The KDF cost (default: minisign's own).
        force: Replace an existing file; without it an existing file is an error.

    Raises:
        KeyFileError: The file exists (without `force`) or cannot be written.
    """
    text = key.encode(password=password, limits=limits)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
    try:
        if not force and path.exists():
            raise KeyFileError(f"{path} exists; pass --force to replace it (the old key is lost)")
        fd = os.open(temporary, flags, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        if force:
            os.replace(temporary, path)
        else:
            # link() refuses to replace a file that appeared meanwhile.
            os.link(temporary, path)
    except FileExistsError:
        raise KeyFileError(f"{path} exists; pass --force to replace it") from None
    except OSError as exc:
        raise KeyFileError(f"cannot write the secret key to {path}: {exc.strerror}") from None
    finally:
        temporary.unlink(missing_ok=True)


def read_password_file(path: Path) -> bytes:
    """Read a password from a file; one trailing line end is dropped.

    Raises:
        KeyFileError: The file cannot be read, is empty or too long.
    """
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_PASSWORD_BYTES + 2)
    except OSError as exc:
        raise KeyFileError(f"cannot read the password file {path}: {exc.strerror}") from None
    data = data.removesuffix(b"\n").removesuffix(b"\r")
    if not data:
        raise KeyFileError(f"the password file {path} is empty")
    if len(data) > MAX_PASSWORD_BYTES:
        raise KeyFileError(f"the password in {path} is longer than {MAX_PASSWORD_BYTES} bytes")
    return data


def load_public_key(spec: str) -> PublicKey:
    """A public key from a `.pub` file path, or from its base64 line given inline.

    Args:
        spec: A path to a minisign public key file, or the key's base64 (as `minisign -P`).

    Raises:
        KeyFileError: Neither an existing file nor a valid inline key; or the file is not
            a minisign public key.
    """
    path = Path(spec)
    if path.is_file():
        text = _read_small(path, "public key file")
        where = str(path)
    elif spec.startswith("RW") and len(spec) == 56:
        text, where = spec, "the given public key"
    else:
        raise KeyFileError(f"{spec!r} is neither a public key file nor a minisign public key")
    try:
        return parse_public_key(text)
    except SignatureInvalid as exc:
        raise KeyFileError(f"{where}: {exc}") from None

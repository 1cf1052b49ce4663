"""Minisign signatures of release files: the trusted comment, the streamed prehash, `.minisig`.

`trusted_comment` and `parse_trusted_comment` are pure. `blake2b_file` reads a file in
1 MiB chunks (libsodium's BLAKE2b, GIL released), so memory stays flat whatever the
size; `Signer` writes `<file>.minisig` beside a file, atomically. When the caller already
has the file's BLAKE2b-512 (the `b2sums` pass computes it), signing reads nothing again.

The trusted comment starts as minisign's own (`timestamp:<unix>`, `file:<name>`,
`hashed`, tab-separated) and adds the build's facts as more `key:value` fields, e.g.
`repo:github:octo/archlive`, `commit:<sha>`, `tag:v1.0`. Values come from webhooks, so
control characters and tabs become spaces and each value is cut to 256 characters.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

import anyio.to_thread
import nacl.hashlib

from runner.publish.minisign import (
    DIGEST_BYTES,
    MAX_TRUSTED_COMMENT,
    PublicKey,
    SecretKey,
    Signature,
)

SIGNATURE_SUFFIX: Final = ".minisig"
MAX_FIELD_CHARS: Final = 256
_CHUNK: Final = 1 << 20
_READ_AHEAD: Final = 4
_KEY_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_-")


def blake2b_file(path: Path) -> bytes:
    """BLAKE2b-512 of a file (the "ED" prehash, and `b2sum`'s digest), streamed.

    A reader thread keeps up to `_READ_AHEAD` chunks of 1 MiB ahead of the hashing, so
    reading and hashing overlap (both release the GIL) and memory stays a few MiB.

    Raises:
        OSError: The file cannot be read.
    """
    digest = nacl.hashlib.blake2b(digest_size=DIGEST_BYTES)
    with open(path, "rb", buffering=0) as source:
        chunks: queue.Queue[bytes | BaseException] = queue.Queue(maxsize=_READ_AHEAD)
        stop = threading.Event()

        def read() -> None:
            try:
                while not stop.is_set():
                    chunk = source.read(_CHUNK)
                    chunks.put(chunk)
                    if not chunk:
                        return
            except OSError as exc:
                chunks.put(exc)

        reader = threading.Thread(target=read, name="blake2b-read", daemon=True)
        reader.start()
        try:
            while True:
                chunk = chunks.get()
                if isinstance(chunk, BaseException):
                    raise chunk
                if not chunk:
                    break
                digest.update(chunk)
        finally:
            stop.set()
            while reader.is_alive():  # unblock a reader waiting on a full queue
                with contextlib.suppress(queue.Empty):
                    chunks.get_nowait()
                reader.join(0.01)
    return digest.digest()


def _clean(value: str) -> str:
    text = "".join(" " if ord(c) < 0x20 or ord(c) == 0x7F else c for c in value)
    return text if len(text) <= MAX_FIELD_CHARS else text[: MAX_FIELD_CHARS - 1] + "…"


def trusted_comment(
    *, timestamp: int, file_name: str, fields: Sequence[tuple[str, str]] = ()
) -> str:
    """The signed comment for one file.

    Args:
        timestamp: When it was signed (Unix seconds).
        file_name: The signed file's name.
        fields: More `(key, value)` facts, in order; keys are `[a-z0-9_-]+`.

    Returns:
        Tab-separated `key:value` fields, minisign's three first.

    Raises:
        ValueError: A key is not `[a-z0-9_-]+`.
    """
    parts = [f"timestamp:{int(timestamp)}", f"file:{_clean(file_name)}", "hashed"]
    for key, value in fields:
        if not key or not set(key) <= _KEY_CHARS:
            raise ValueError(f"trusted comment key {key!r} must be [a-z0-9_-]+")
        parts.append(f"{key}:{_clean(value)}")
    text = "\t".join(parts)
    # Bounded fields keep this far below minisign's limit; a long list is cut whole.
    while len(text.encode("utf-8")) > MAX_TRUSTED_COMMENT:
        parts.pop()
        text = "\t".join(parts)
    return text


def parse_trusted_comment(text: str) -> dict[str, str]:
    """The `key:value` fields of a trusted comment (the first of a repeated key wins).

    A field without a colon (minisign's `hashed`) maps to "".
    """
    fields: dict[str, str] = {}
    for part in text.split("\t")[:64]:
        key, _, value = part.partition(":")
        fields.setdefault(key, value)
    return fields


def signature_path(path: Path) -> Path:
    """Where the signature of `path` goes: `<path>.minisig`."""
    return path.with_name(path.name + SIGNATURE_SUFFIX)


def write_atomically(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file and a rename."""
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


class Signer:
    """Signs release files with one minisign key, kept decrypted in memory.

    Args:
        key: The secret key (`runner.publish.keys.load_secret_key`).
        clock: Seconds since the epoch, for the trusted comment's timestamp.
    """

    def __init__(self, key: SecretKey, *, clock: Callable[[], float] = time.time) -> None:
        self._key = key
        self._clock = clock

    @property
    def public_key(self) -> PublicKey:
        """The public half, as users verify with it."""
        return self._key.public_key()

    def signature(
        self, file_name: str, digest: bytes, fields: Sequence[tuple[str, str]] = ()
    ) -> Signature:
        """The signature of a file whose BLAKE2b-512 is `digest` (pure apart from the clock)."""
        comment = trusted_comment(timestamp=int(self._clock()), file_name=file_name, fields=fields)
        return self._key.sign_digest(
            digest,
            trusted_comment=comment,
            untrusted_comment=f"signature from isorunner secret key {self.public_key.id_text}",
        )

    def sign(
        self,
        path: Path,
        *,
        fields: Sequence[tuple[str, str]] = (),
        digest: bytes | None = None,
    ) -> Path:
        """Write `<path>.minisig`, hashing `path` unless its BLAKE2b-512 is given.

        Args:
            path: The file to sign.
            fields: Facts for the trusted comment (see `trusted_comment`).
            digest: The file's BLAKE2b-512 if already known (e.g. from `b2sums`).

        Returns:
            The signature file.

        Raises:
            OSError: The file cannot be read or the signature written.
        """
        if digest is None:
            digest = blake2b_file(path)
        target = signature_path(path)
        write_atomically(target, self.signature(path.name, digest, fields).file_text())
        return target

    async def sign_async(
        self,
        path: Path,
        *,
        fields: Sequence[tuple[str, str]] = (),
        digest: bytes | None = None,
    ) -> Path:
        """`sign` in a worker thread, so a 2 GiB ISO never blocks the event loop."""
        return await anyio.to_thread.run_sync(lambda: self.sign(path, fields=fields, digest=digest))

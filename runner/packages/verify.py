"""Checking package signatures the way pacman does, with the gpg pacman itself uses.

The verdict is pure (`signature_verdict`: gpg's `--status-fd` lines in, pacman's
decision out); `Verifier` is the I/O shell: one `gpg --verify` per package against a
private copy of the keyring, the cached file in place.

pacman (libalpm `_alpm_check_pgp_helper`, through gpgme, which runs this same gpg)
accepts a signature when its status is valid or "key expired" and the key's validity
is full (ultimate counts as full), or marginal or unknown where the SigLevel says
`TrustAll`; it refuses a bad signature, an expired signature, an unknown key, a
disabled key, and a key never to be trusted. A package without signature is refused
where the SigLevel requires one and accepted where it is optional; `Never` checks
nothing. The signature is the database's (`%PGPSIG%`) or else the `.sig` the mirror
served. The sha256 half of pacman's check is done by the downloader against the same
database, as the bytes arrive.

Why not `pacman -Sw` over the cached files: it spends three gpg runs per package
(keyring check, verify, key lookup) where one does, and it checks only after its last
download; on the benchmark machine that made the cold sync slower than plain `pacman
-Sw` (docs/benchmarks.md). tests/runner/packages/test_sync.py compares the verdicts
with pacman's own on the same files.

A check passed is recorded in the cache under the keyring's state and the SigLevel
(`cache.verify_stamp`): later builds of the same file skip it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import shutil
from dataclasses import dataclass
from pathlib import Path

import anyio

from runner.packages.cache import PackageCache
from runner.packages.exceptions import PackageSetupError, SignatureInvalid
from runner.packages.pacman import Resolved
from runner.packages.sources import Repository, package_signatures
from runner.packages.syncdb import DbEntry

#: The files of a GnuPG home that gpg reads; the rest (sockets, agent state) is not copied.
KEYRING_FILES = ("pubring.gpg", "pubring.kbx", "trustdb.gpg", "gpg.conf", "tofu.db")
#: The largest signature accepted from a database entry or a mirror.
MAX_SIGNATURE_BYTES = 16 << 10
#: How much of gpg's status output is read.
MAX_STATUS_BYTES = 64 << 10
_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LC_ALL": "C"}


@dataclass(frozen=True, slots=True)
class Candidate:
    """One resolved package: pacman's choice, its database entry, where it comes from.

    Attributes:
        resolved: Repository, name and version pacman chose.
        entry: The database entry (file name, sha256, signature).
        repository: The repository's config (servers, SigLevel).
        stamp: The verification stamp for its SigLevel and the keyring.
    """

    resolved: Resolved
    entry: DbEntry
    repository: Repository
    stamp: str

    @property
    def label(self) -> str:
        """`repo/name-version`, for messages."""
        return f"{self.resolved.repo}/{self.resolved.key}"


def copy_keyring(source: Path, dest: Path) -> None:
    """Copy the files gpg needs from a GnuPG home into a new private one.

    Raises:
        PackageSetupError: `source` holds no keyring.
    """
    if not (source / "pubring.gpg").is_file() and not (source / "pubring.kbx").is_file():
        raise PackageSetupError(
            f"no pacman keyring at {source}: run scripts/setup-sandbox.sh (it installs "
            "archlinux-keyring and initialises this keyring) or set packages.keyring"
        )
    dest.mkdir(mode=0o700, parents=True)
    for name in KEYRING_FILES:
        path = source / name
        if path.is_file():
            shutil.copyfile(path, dest / name)


def signature_bytes(entry: DbEntry) -> bytes | None:
    """The detached signature a database entry carries (`%PGPSIG%`), decoded."""
    if entry.pgpsig is None:
        return None
    try:
        data = base64.b64decode(entry.pgpsig, validate=True)
    except (binascii.Error, ValueError):
        return None
    return data if 0 < len(data) <= MAX_SIGNATURE_BYTES else None


def disabled_keys(colons: str) -> frozenset[str]:
    """The fingerprints of disabled keys, from `gpg --with-colons --list-keys`."""
    disabled: set[str] = set()
    primary_disabled = False
    for line in colons.splitlines():
        fields = line.split(":")
        if fields[0] == "pub":
            primary_disabled = len(fields) > 11 and "D" in fields[11]
        elif fields[0] == "fpr" and primary_disabled and len(fields) > 9:
            disabled.add(fields[9])
            primary_disabled = False
    return frozenset(disabled)


# gpg status keywords that end a signature check, in the order they are decided, with
# pacman's status for them (libalpm signing.c maps gpgme's the same way).
_FAILED = (
    ("BADSIG", "invalid"),
    ("ERRSIG", "key unknown"),
    ("NO_PUBKEY", "key unknown"),
    ("REVKEYSIG", "revoked"),
    ("EXPSIG", "expired"),
)
_REASONS = {
    "invalid": 'signature from "{who}" is invalid',
    "key unknown": 'key "{key}" is unknown: it is not in the keyring',
    "revoked": 'signature from "{who}" is invalid: the key is revoked',
    "expired": 'signature from "{who}" is expired',
    "disabled": 'signature from "{who}" is from a disabled key',
    "missing": "no valid signature",
    "never": 'signature from "{who}" should never be trusted',
    "marginal": 'signature from "{who}" is marginal trust',
    "unknown": 'signature from "{who}" is unknown trust',
}


def _status(words: dict[str, list[str]], disabled: frozenset[str]) -> str:
    for word, status in _FAILED:
        if word in words:
            return status
    valid = words.get("VALIDSIG")
    if not valid or ("GOODSIG" not in words and "EXPKEYSIG" not in words):
        return "missing"
    # A key that expired after signing still counts, as in pacman (ALPM_SIGSTATUS_KEY_EXPIRED).
    return "disabled" if valid[0] in disabled or valid[-1] in disabled else "valid"


def _validity(words: dict[str, list[str]]) -> str:
    if "TRUST_ULTIMATE" in words or "TRUST_FULLY" in words:
        return "full"
    if "TRUST_NEVER" in words:
        return "never"
    return "marginal" if "TRUST_MARGINAL" in words else "unknown"


def signature_verdict(status: str, *, trust_all: bool, disabled: frozenset[str]) -> str | None:
    """Decide as pacman does on one `gpg --verify --status-fd` output.

    Args:
        status: gpg's status lines (`[GNUPG:] KEYWORD args`).
        trust_all: The SigLevel says TrustAll (marginal and unknown validity accepted).
        disabled: Fingerprints of the keyring's disabled keys.

    Returns:
        None when pacman would accept the signature, else why not (in pacman's words).
    """
    words: dict[str, list[str]] = {}
    for line in status.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "[GNUPG:]":
            words.setdefault(parts[1], parts[2:])
    signer = next((words[w] for w in ("GOODSIG", "EXPKEYSIG", "BADSIG", "REVKEYSIG", "EXPSIG")
                   if w in words), [])  # fmt: skip
    who = " ".join(signer[1:]) or "the key"
    key = (words.get("ERRSIG") or words.get("NO_PUBKEY") or ["?"])[0]
    verdict = _status(words, disabled)
    if verdict == "valid":
        verdict = _validity(words)
        if verdict == "full" or (trust_all and verdict != "never"):
            return None
    return _REASONS[verdict].format(who=who, key=key)


def _write_file(path: Path, data: bytes) -> None:
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(data)


class Verifier:
    """Checks cached packages' signatures (see the module docstring).

    Args:
        cache: Where the files are, and where passed checks are recorded.
        keyring: The GnuPG home to check against (copied per sync, never written).
        gpg: The gpg executable.
        timeout: Seconds one gpg run may take.
    """

    def __init__(
        self, cache: PackageCache, *, keyring: Path, gpg: str = "gpg", timeout: float = 300.0
    ) -> None:
        self.cache = cache
        self.keyring = keyring
        self.gpg = gpg
        self.timeout = timeout

    async def prepare(self, work: Path) -> Path:
        """Copy the keyring into `work/gnupg` for this sync; return that directory."""
        home = work / "gnupg"
        await anyio.to_thread.run_sync(copy_keyring, self.keyring, home)
        return home

    async def verify(self, item: Candidate, *, home: Path, disabled: frozenset[str]) -> None:
        """Check one cached package's signature; record the pass; raise on failure.

        Args:
            item: The package (its file is in the cache).
            home: The sync's keyring copy (`prepare`).
            disabled: The keyring's disabled keys (`list_disabled`).

        Raises:
            SignatureInvalid: A signature is missing where required, or pacman's rules
                refuse it.
        """
        mode = package_signatures(item.repository.sig_level)
        if mode == "never":
            return
        signature = signature_bytes(item.entry)
        if signature is None:
            kept = self.cache.signature(item.entry.sha256)
            if kept is not None:
                signature = await anyio.Path(kept).read_bytes()
        if signature is None and mode == "required":
            raise SignatureInvalid(
                f"{item.label} has no signature, and the SigLevel of [{item.repository.name}] "
                f"({item.repository.sig_level}) requires one; sign the package, or set "
                "its repository's sig_level explicitly in extra_repos",
                package=item.label,
            )
        if signature is not None:
            # A file, not stdin: gpg may exit before reading a pipe (a bad packet).
            sig_file = home.parent / "signatures" / f"{item.entry.sha256}.sig"
            await anyio.to_thread.run_sync(_write_file, sig_file, signature)
            status = await self._gpg(
                [
                    "--homedir", str(home), "--batch", "--no-tty", "--status-fd", "1",
                    "--no-auto-key-retrieve", "--no-auto-check-trustdb",
                    "--verify", str(sig_file), str(self.cache.object_path(item.entry.sha256)),
                ]
            )  # fmt: skip
            trust_all = "TrustAll" in item.repository.sig_level.split()
            reason = signature_verdict(status, trust_all=trust_all, disabled=disabled)
            if reason is not None:
                raise SignatureInvalid(
                    f"the signature of {item.label} did not verify: {reason}; the package "
                    "may have been tampered with, or the keyring lacks or distrusts its "
                    f"packager's key: update the keyring (pacman-key --gpgdir {self.keyring} "
                    "--refresh-keys, or a newer archlinux-keyring) and retry",
                    package=item.label,
                )
        self.cache.mark_verified(item.stamp, item.entry.sha256)

    async def list_disabled(self, home: Path) -> frozenset[str]:
        """The disabled keys of the keyring copy (pacman refuses their signatures)."""
        colons = await self._gpg(
            ["--homedir", str(home), "--batch", "--with-colons", "--fixed-list-mode",
             "--with-fingerprint", "--list-keys"]
        )  # fmt: skip
        return disabled_keys(colons)

    async def _gpg(self, args: list[str]) -> str:
        try:
            proc = await asyncio.create_subprocess_exec(
                self.gpg,
                *args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
                env=_ENV,
            )
        except FileNotFoundError as exc:
            raise PackageSetupError(
                f"{self.gpg} is not installed; install gnupg (scripts/install does it)"
            ) from exc
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), timeout=self.timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise PackageSetupError(
                f"gpg did not finish within {self.timeout:g} s; is the host overloaded?"
            ) from None
        except BaseException:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            raise
        return out[:MAX_STATUS_BYTES].decode("utf-8", "replace")

"""Checking downloaded packages the way pacman checks its own downloads, with pacman.

I/O shell: lays out a private pacman run (its database copy, a keyring copy, and the
files to check hard-linked from the cache) and runs `pacman -Sw -dd` over it, which
checks each file's sha256 against the database and its signature against the keyring
under the repository's SigLevel, and downloads nothing (runner.packages.pacman).

pacman 6.0 wants a `<file>.sig` beside each cached package whenever its SigLevel checks
packages, even when the database carries the signature (`%PGPSIG%`, which it then
uses): the signature is written there from the database, or from the `.sig` the mirror
served. A package without any signature is refused where its SigLevel requires one and
accepted where it is optional, as pacman does; `Never` skips the check.

A check passed is recorded in the cache under the keyring's state and the SigLevel
(`cache.verify_stamp`): later builds of the same file skip it.
"""

from __future__ import annotations

import base64
import binascii
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio

from runner.packages.cache import PackageCache
from runner.packages.exceptions import (
    CorruptedPackage,
    PackageSetupError,
    SignatureInvalid,
)
from runner.packages.pacman import (
    PacmanPaths,
    Resolved,
    pacman_conf,
    run_pacman,
    verify_argv,
    verify_failures,
)
from runner.packages.sources import Repository, package_signatures
from runner.packages.syncdb import DbEntry

#: The files of a GnuPG home that pacman reads; the rest (sockets, agent state) is not copied.
KEYRING_FILES = ("pubring.gpg", "pubring.kbx", "trustdb.gpg", "gpg.conf", "tofu.db")
#: The largest signature accepted from a database entry (base64-decoded).
MAX_SIGNATURE_BYTES = 16 << 10


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
    """Copy the files pacman needs from a GnuPG home into a new private one.

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


class Verifier:
    """Runs pacman's package checks over batches of cached files.

    Args:
        cache: Where the files are, and where passed checks are recorded.
        keyring: The GnuPG home to check against (copied per run, never written).
        pacman: The pacman executable.
        timeout: Seconds one pacman run may take.
    """

    def __init__(self, cache: PackageCache, *, keyring: Path, pacman: str, timeout: float) -> None:
        self.cache = cache
        self.keyring = keyring
        self.pacman = pacman
        self.timeout = timeout

    async def verify(
        self,
        batch: Sequence[Candidate],
        *,
        repositories: Sequence[Repository],
        arch: str,
        sync_dbs: Path,
        work: Path,
    ) -> None:
        """Check `batch`; record each passed check; raise for the first failure.

        Args:
            batch: The packages, all in the cache.
            repositories: Every repository of the build (pacman loads their databases).
            arch: The build's architecture.
            sync_dbs: The directory holding the build's `<repo>.db` (+ `.sig`) files.
            work: A directory to create for this run (removed after a pass).

        Raises:
            SignatureInvalid: A signature is missing where required, or pacman refused it.
            CorruptedPackage: pacman found a file that does not match its database.
            PackageSetupError: pacman failed without naming a package.
        """
        checked: list[Candidate] = []
        for item in batch:
            mode = package_signatures(item.repository.sig_level)
            if mode == "never":
                continue
            has_sig = item.entry.pgpsig is not None or self.cache.signature(item.entry.sha256)
            if has_sig:
                checked.append(item)
            elif mode == "required":
                raise SignatureInvalid(
                    f"{item.label} has no signature, and the SigLevel of [{item.repository.name}] "
                    f"({item.repository.sig_level}) requires one; sign the package, or set "
                    "its repository's sig_level explicitly in extra_repos",
                    package=item.label,
                )
        if checked:
            await self._run(checked, repositories, arch, sync_dbs, work)
        for item in batch:
            if package_signatures(item.repository.sig_level) != "never":
                self.cache.mark_verified(item.stamp, item.entry.sha256)

    async def _run(
        self,
        batch: Sequence[Candidate],
        repositories: Sequence[Repository],
        arch: str,
        sync_dbs: Path,
        work: Path,
    ) -> None:
        paths = await anyio.to_thread.run_sync(
            self._lay_out, batch, repositories, arch, sync_dbs, work
        )
        resolved = [i.resolved for i in batch]
        run = await run_pacman(
            verify_argv(self.pacman, paths, resolved), home=work, seconds=self.timeout
        )
        if run.returncode == 0:
            await anyio.to_thread.run_sync(shutil.rmtree, work)
            return
        failed = verify_failures(run.output, resolved)
        if not failed and len(batch) > 1:
            # pacman named no package (a key missing from the keyring, for one): check
            # them one by one; the run that fails names its package.
            for index, item in enumerate(batch):
                alone = work.with_name(f"{work.name}-{index}")
                await self._run([item], repositories, arch, sync_dbs, alone)
            raise PackageSetupError(
                "pacman refused a batch of packages it accepts one by one: "
                + _pacman_reason(run.output)
            )
        name, reason = next(
            iter(failed.items()), (batch[0].resolved.name, _pacman_reason(run.output))
        )
        item = next(i for i in batch if i.resolved.name == name)
        if "corrupted" in reason and "PGP" not in reason:
            raise CorruptedPackage(
                f"pacman found {item.label} corrupted ({reason}); retry the build, and "
                "check the mirror if it happens again",
                package=item.label,
                url="",
            )
        raise SignatureInvalid(
            f"the signature of {item.label} did not verify ({reason}); the package may "
            "have been tampered with, or the keyring lacks its packager's key: update the "
            f"keyring (pacman-key --gpgdir {self.keyring} --refresh-keys, or a newer "
            "archlinux-keyring) and retry",
            package=item.label,
        )

    def _lay_out(
        self,
        batch: Sequence[Candidate],
        repositories: Sequence[Repository],
        arch: str,
        sync_dbs: Path,
        work: Path,
    ) -> PacmanPaths:
        paths = PacmanPaths.under(work, gpgdir=work / "gnupg")
        for path in (paths.root, paths.cachedir, paths.dbpath / "local", paths.dbpath / "sync"):
            path.mkdir(parents=True)
        for db in sync_dbs.iterdir():
            os.link(db, paths.dbpath / "sync" / db.name)
        copy_keyring(self.keyring, paths.gpgdir)
        for item in batch:
            self.cache.link_into(item.entry.sha256, paths.cachedir / item.entry.filename)
            sig_file = paths.cachedir / f"{item.entry.filename}.sig"
            kept = self.cache.signature(item.entry.sha256)
            from_db = signature_bytes(item.entry)
            if from_db is not None:
                sig_file.write_bytes(from_db)
            elif kept is not None:
                shutil.copyfile(kept, sig_file)
        paths.config.write_text(pacman_conf(paths, arch=arch, repositories=repositories))
        return paths


def _pacman_reason(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.startswith("error:")]
    return "; ".join(lines[:3]) or "pacman refused it"

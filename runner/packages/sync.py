"""`PackageSync`: make one build's packages ready on the host, before its container starts.

I/O shell: it reads the profile's lists (as data), fetches the repository databases,
runs the host's pacman to resolve, downloads what the cache lacks, checks signatures as
pacman does, and lays out the build's repository: the resolved files hard-linked from
the cache and a database of exactly their entries (`runner.packages.syncdb`). The sandbox binds that
directory read-only at the base's mirror path, so the build stays offline.

One sync, in order:

1. the profile's package names and pacman.conf repository names (`profile`), and the
   repositories this build may use (`sources.choose_repositories`);
2. each repository's database and its signature, fetched with a conditional request
   (an unchanged database costs one 304), kept in the cache;
3. `pacman -Sp` against a private dbpath: the full set, dependencies included;
4. each resolved file looked up in the cache by the sha256 its database records; the
   missing ones downloaded, several at once (sha256 checked as the bytes arrive),
   while those already downloaded have their signatures checked under the
   repository's SigLevel by pacman's rules, against a private copy of the keyring
   (`verify`). A checked file is marked for that keyring state, so the next build does
   not check it again;
5. the build's repository; the cache's last-use times; a pruning pass.

The result is a frozen `ResolvedPackages`: name, version, repository and sha256 of each
file, what was cached, what was downloaded and how long it took.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.abc

from runner.packages.cache import PackageCache, db_key, verify_stamp
from runner.packages.download import Downloader, Fetched
from runner.packages.exceptions import DatabaseInvalid, PackageError
from runner.packages.pacman import (
    PacmanPaths,
    Resolved,
    pacman_conf,
    parse_resolved,
    resolve_argv,
    resolve_error,
    run_pacman,
)
from runner.packages.profile import read_profile_packages
from runner.packages.sources import PackageSources, Repository, choose_repositories
from runner.packages.syncdb import read_entries, write_repository_db
from runner.packages.transfer import MAX_SIG_BYTES, LogLine, Transfer, size_text
from runner.packages.verify import Candidate, Verifier, copy_keyring

#: The most bytes a repository database may have (Arch's extra.db is ~8 MB).
MAX_DB_BYTES = 256 << 20


@dataclass(frozen=True, slots=True)
class ResolvedPackage:
    """One package of a build, as its repository database describes the file used.

    Attributes:
        name: pkgname.
        version: Full version.
        repo: The repository it came from.
        sha256: The file's sha256.
        size: The file's size in bytes.
        filename: The file's name.
    """

    name: str
    version: str
    repo: str
    sha256: str
    size: int
    filename: str


@dataclass(frozen=True, slots=True)
class ResolvedPackages:
    """What one sync made ready.

    Attributes:
        packages: Every package the build installs, sorted by name.
        repository: The build's repository directory (bind it at the mirror path).
        repositories: The repositories searched, in order.
        cached: How many files were in the cache already.
        downloaded: How many files were downloaded.
        downloaded_bytes: How many bytes that took (databases included).
        seconds: Wall time of the sync.
    """

    packages: tuple[ResolvedPackage, ...]
    repository: Path
    repositories: tuple[str, ...]
    cached: int
    downloaded: int
    downloaded_bytes: int
    seconds: float

    @property
    def total_bytes(self) -> int:
        """The size of all the build's package files."""
        return sum(p.size for p in self.packages)


@dataclass(frozen=True, slots=True)
class SyncRequest:
    """What one build needs synced.

    Attributes:
        profile_dir: The extracted profile.
        sources: The repositories its forge repository may use.
        trusted: False for pull/merge requests from forks.
        arch: The architecture to resolve for.
    """

    profile_dir: Path
    sources: PackageSources
    trusted: bool
    arch: str = "x86_64"


@dataclass(frozen=True, slots=True)
class SyncConfig:
    """How package sync runs on this host.

    Attributes:
        keyring: pacman's GnuPG directory to check signatures against (copied per run,
            never written).
        pacman: The pacman executable.
        verify_workers: Signature checks (gpg) run at once.
        pacman_timeout: Seconds one pacman run may take.
        progress_seconds: How often a long download logs its progress.
    """

    keyring: Path
    pacman: str = "pacman"
    verify_workers: int = 2
    pacman_timeout: float = 900.0
    progress_seconds: float = 5.0


class PackageSync:
    """Makes builds' packages ready (see the module docstring).

    Args:
        config: pacman, keyring, parallelism.
        cache: The shared package cache.
        downloader: The mirror downloader (its client belongs to the caller).
    """

    def __init__(self, config: SyncConfig, *, cache: PackageCache, downloader: Downloader) -> None:
        self.config = config
        self.cache = cache
        self.downloader = downloader
        verifier = Verifier(cache, keyring=config.keyring, timeout=config.pacman_timeout)
        self.transfer = Transfer(
            cache,
            downloader,
            verifier,
            verify_workers=config.verify_workers,
            progress_seconds=config.progress_seconds,
        )

    async def sync(
        self, request: SyncRequest, *, repo_dir: Path, work_dir: Path, log: LogLine
    ) -> ResolvedPackages:
        """Resolve, fetch, check and lay out one build's packages.

        Args:
            request: The profile and what it may use.
            repo_dir: The build's repository directory to create (must not exist).
            work_dir: A private scratch directory to create (the caller removes it).
            log: Receives the lines of the build log's "packages" step.

        Returns:
            The resolved packages and what the sync did.

        Raises:
            PackageError: a subclass saying what is wrong (see `runner.packages.exceptions`).
        """
        started = time.monotonic()
        wanted = await anyio.to_thread.run_sync(
            lambda: read_profile_packages(request.profile_dir, arch=request.arch)
        )
        repositories = choose_repositories(
            wanted.repositories, request.sources, trusted=request.trusted
        )
        names = tuple(r.name for r in repositories)
        log(
            f"packages: {len(wanted.targets)} names from {', '.join(wanted.lists)}; "
            f"repositories {', '.join(names)}"
        )
        await anyio.to_thread.run_sync(lambda: work_dir.mkdir(parents=True))
        try:
            async with _SharedCache(self.cache):
                db_bytes = await self._fetch_databases(repositories, request.arch, work_dir)
                items = await self._resolve(wanted.targets, repositories, request.arch, work_dir)
                counters = await self.transfer.run(items, repositories, request.arch, work_dir, log)
                await anyio.to_thread.run_sync(self._lay_out, items, repo_dir)
        except BaseExceptionGroup as group:
            # Concurrent downloads and checks fail in a task group: report the first
            # package error as itself, not wrapped.
            raise _first_package_error(group) from None
        report = await anyio.to_thread.run_sync(self.cache.prune)
        if report.ran and report.removed:
            log(
                f"packages: cache pruned: {report.removed} files, {size_text(report.freed_bytes)} "
                f"freed, {size_text(report.kept_bytes)} kept"
            )
        packages = tuple(
            sorted(
                (
                    ResolvedPackage(
                        name=i.entry.name,
                        version=i.entry.version,
                        repo=i.resolved.repo,
                        sha256=i.entry.sha256,
                        size=i.entry.size,
                        filename=i.entry.filename,
                    )
                    for i in items
                ),
                key=lambda p: p.name,
            )
        )
        result = ResolvedPackages(
            packages=packages,
            repository=repo_dir,
            repositories=names,
            cached=len(items) - counters.files,
            downloaded=counters.files,
            downloaded_bytes=counters.bytes_done + db_bytes,
            seconds=time.monotonic() - started,
        )
        log(
            f"packages: {len(packages)} ready ({size_text(result.total_bytes)}): "
            f"{result.cached} cached, {result.downloaded} downloaded "
            f"({size_text(result.downloaded_bytes)}), in {result.seconds:.1f} s"
        )
        return result

    # --- databases -----------------------------------------------------------------

    async def _fetch_databases(
        self, repositories: Sequence[Repository], arch: str, work: Path
    ) -> int:
        sync_dir = work / "db" / "sync"
        await anyio.to_thread.run_sync(lambda: sync_dir.mkdir(parents=True))
        downloaded = 0
        for repo in repositories:
            downloaded += await self._fetch_database(repo, arch, sync_dir)
        return downloaded

    async def _fetch_database(self, repo: Repository, arch: str, sync_dir: Path) -> int:
        urls = [f"{base}/{repo.name}.db" for base in repo.urls(arch)]
        key = db_key("\n".join(urls))
        state = self.cache.db_state(key) or {}
        db_sha = state.get("db")
        have = db_sha is not None and self.cache.has(db_sha)
        tmp = self.cache.temp_path(f"{repo.name}.db")
        result = await self.downloader.fetch_if_changed(
            urls,
            tmp,
            what=f"the [{repo.name}] database",
            max_bytes=MAX_DB_BYTES,
            etag=state.get("etag") if have else None,
            last_modified=state.get("last_modified") if have else None,
        )
        downloaded = 0
        if isinstance(result, Fetched):
            downloaded = result.size
            await anyio.to_thread.run_sync(self.cache.add, tmp, result.sha256)
            sig = await self.downloader.fetch_optional(result.url + ".sig", max_bytes=MAX_SIG_BYTES)
            if sig is not None:
                downloaded += len(sig)
                await anyio.to_thread.run_sync(self.cache.add_signature, result.sha256, sig)
            db_sha = result.sha256
            self.cache.set_db_state(
                key,
                {
                    "db": db_sha,
                    "etag": result.etag,
                    "last_modified": result.last_modified,
                    "url": result.url,
                },
            )
        assert db_sha is not None
        target = sync_dir / f"{repo.name}.db"
        await anyio.to_thread.run_sync(self.cache.link_into, db_sha, target)
        self.cache.touch(db_sha)
        sig_path = self.cache.signature(db_sha)
        if sig_path is not None:
            await anyio.to_thread.run_sync(
                shutil.copyfile, sig_path, sync_dir / f"{repo.name}.db.sig"
            )
        return downloaded

    # --- resolution ----------------------------------------------------------------

    def _paths(self, work: Path) -> PacmanPaths:
        paths = PacmanPaths.under(work, gpgdir=work / "gnupg")
        for path in (paths.root, paths.cachedir, paths.dbpath / "local"):
            path.mkdir(parents=True, exist_ok=True)
        if not paths.gpgdir.exists():
            copy_keyring(self.config.keyring, paths.gpgdir)
        return paths

    async def _resolve(
        self,
        targets: Sequence[str],
        repositories: Sequence[Repository],
        arch: str,
        work: Path,
    ) -> list[Candidate]:
        paths = await anyio.to_thread.run_sync(self._paths, work)
        text = pacman_conf(paths, arch=arch, repositories=repositories)
        await anyio.to_thread.run_sync(paths.config.write_text, text)
        names = [r.name for r in repositories]
        run = await run_pacman(
            resolve_argv(self.config.pacman, paths, targets),
            home=work,
            seconds=self.config.pacman_timeout,
        )
        if run.returncode != 0:
            raise resolve_error(run.output, names)
        resolved = parse_resolved(run.stdout, names)
        if not resolved:
            raise resolve_error(run.output, names)
        by_repo: dict[str, list[Resolved]] = {}
        for item in resolved:
            by_repo.setdefault(item.repo, []).append(item)
        repos = {r.name: r for r in repositories}
        keyring_stamps: dict[str, str] = {}
        items: list[Candidate] = []
        for repo_name, group in by_repo.items():
            db = paths.dbpath / "sync" / f"{repo_name}.db"
            entries = await anyio.to_thread.run_sync(read_entries, db, [r.key for r in group])
            repo = repos[repo_name]
            stamp = keyring_stamps.get(repo.sig_level)
            if stamp is None:
                stamp = await anyio.to_thread.run_sync(
                    verify_stamp, self.config.keyring, repo.sig_level
                )
                keyring_stamps[repo.sig_level] = stamp
            for res in group:
                entry = entries.get(res.key)
                if entry is None:
                    raise DatabaseInvalid(
                        f"pacman chose {res.repo}/{res.key} but the [{res.repo}] database has "
                        "no such entry; the mirror's database may be changing: retry"
                    )
                items.append(Candidate(res, entry, repo, stamp))
        return items

    # --- the build's repository ----------------------------------------------------

    def _lay_out(self, items: Sequence[Candidate], repo_dir: Path) -> None:
        repo_dir.mkdir(mode=0o755)
        for item in items:
            self.cache.link_into(item.entry.sha256, repo_dir / item.entry.filename)
            self.cache.touch(item.entry.sha256)
        write_repository_db(repo_dir, (i.entry for i in items))


def _first_package_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    matched, _ = group.split(PackageError)
    if matched is None:
        return group
    first: BaseException = matched
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    return first


class _SharedCache:
    """Holds the cache's shared lock (taken in a thread: flock blocks while pruning)."""

    def __init__(self, cache: PackageCache) -> None:
        self._cache = cache
        self._stack = contextlib.ExitStack()

    async def __aenter__(self) -> None:
        await anyio.to_thread.run_sync(self._stack.enter_context, self._cache.sync_lock())

    async def __aexit__(self, *exc: object) -> None:
        self._stack.close()

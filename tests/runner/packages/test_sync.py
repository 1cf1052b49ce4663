"""Integration tests of PackageSync: real pacman, a real signed upstream on 127.0.0.1.

The upstream and its keyring are built once per machine by tests/standin/build-standin.sh
(`<standin>/upstream`); tests/runner/packages/upstream.py serves it, with faults.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest

from runner.packages import (
    Downloader,
    DownloadPolicy,
    PackageCache,
    PackageSources,
    PackageSync,
    Repository,
    ResolvedPackages,
    SyncConfig,
    SyncRequest,
    archive_repositories,
    mirror_repositories,
)
from runner.packages.exceptions import (
    CorruptedPackage,
    DownloadFailed,
    PackageNotFound,
    RepositoryNotAllowed,
    SignatureInvalid,
)
from runner.packages.pacman import Resolved
from runner.packages.syncdb import DbEntry, read_entries
from runner.packages.verify import Candidate, Verifier, copy_keyring, signature_bytes
from tests.conftest import require, require_tool
from tests.runner.packages.upstream import UPSTREAM, Served, UpstreamServer, serve_upstream

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def upstream() -> Iterator[UpstreamServer]:
    """The stand-in's upstream, served on 127.0.0.1."""
    require_tool("pacman")
    require(
        (UPSTREAM / "stamp").is_file(),
        f"the test upstream in {UPSTREAM} (run tests/standin/build-standin.sh as root)",
    )
    with serve_upstream(UPSTREAM / "www") as server:
        yield server


class Env:
    """One test's cache, work area and log; `sync` runs a sync against the upstream."""

    def __init__(self, root: Path, server: UpstreamServer) -> None:
        self.root = root
        self.server = server
        self.cache = PackageCache(root / "cache", max_bytes=1 << 30)
        self.lines: list[str] = []
        self.runs = 0
        self.start = len(server.requests)

    def served(self) -> list[Served]:
        """What the upstream answered since this test began."""
        return self.server.since(self.start)

    def package_bytes(self) -> int:
        """Package bytes the upstream sent since this test began."""
        return self.server.package_bytes(self.start)

    def profile(self, packages: str, conf: str | None = "[core]\n[extra]\n") -> Path:
        path = self.root / f"profile-{self.runs}"
        path.mkdir()
        (path / "packages.x86_64").write_text(packages)
        if conf is not None:
            (path / "pacman.conf").write_text(conf)
        return path

    def mirror(self, *prefixes: str) -> PackageSources:
        servers = tuple(f"{self.server.url}{p}/mirror/$repo/os/$arch" for p in prefixes or ("",))
        return PackageSources(
            mirror_repositories(("core", "extra", "baddb"), servers),
            extra_repos=(
                Repository(
                    "custom", (f"{self.server.url}/custom/$repo/os/$arch",), "Optional TrustAll"
                ),
            ),
        )

    async def sync(
        self,
        profile: Path,
        sources: PackageSources,
        *,
        trusted: bool = True,
        policy: DownloadPolicy | None = None,
    ) -> ResolvedPackages:
        self.runs += 1
        async with httpx.AsyncClient() as client:
            sync = PackageSync(
                SyncConfig(keyring=UPSTREAM / "keyring"),
                cache=self.cache,
                downloader=Downloader(client, policy or DownloadPolicy(backoff_base=0.01)),
            )
            return await sync.sync(
                SyncRequest(profile, sources, trusted=trusted),
                repo_dir=self.root / f"repo-{self.runs}",
                work_dir=self.root / f"work-{self.runs}",
                log=self.lines.append,
            )


@pytest.fixture
def env(tmp_path: Path, upstream: UpstreamServer) -> Env:
    """A fresh cache and work area."""
    return Env(tmp_path, upstream)


STANDIN = "mkinitcpio\nmkinitcpio-archiso\nisorunner-base\nisorunner-setuid\n"


def _pacman_reads(repo: Path, tmp: Path, targets: list[str]) -> list[str]:
    """Resolve `targets` with pacman against a build repository, as the container does."""
    (tmp / "db").mkdir()
    conf = tmp / "pacman.conf"
    conf.write_text(
        f"[options]\nDBPath = {tmp}/db/\nCacheDir = {tmp}/cache/\nArchitecture = x86_64\n"
        f"SigLevel = Never\n\n[isorunner]\nServer = file://{repo}\n"
    )
    subprocess.run(["pacman", "--config", str(conf), "-Sy"], check=True, capture_output=True)
    out = subprocess.run(
        ["pacman", "--config", str(conf), "-Sp", "--print-format", "%n %v", *targets],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return sorted(out.splitlines())


@pytest.mark.anyio
async def test_sync_lays_out_a_repository_pacman_reads(env: Env, tmp_path: Path) -> None:
    """Targets and their dependencies are resolved, fetched, linked and indexed for pacman."""
    result = await env.sync(env.profile(STANDIN + "isorunner-hello\n"), env.mirror())
    names = {p.name: p for p in result.packages}
    assert set(names) == {
        "mkinitcpio", "mkinitcpio-archiso", "isorunner-base", "isorunner-setuid",
        "isorunner-hello", "isorunner-libhello",
    }  # fmt: skip
    hello = names["isorunner-hello"]
    assert (hello.version, hello.repo, hello.filename) == (
        "1.0-1",
        "extra",
        "isorunner-hello-1.0-1-any.pkg.tar.zst",
    )
    assert (result.cached, result.downloaded) == (0, 6)
    linked = result.repository / hello.filename
    assert linked.stat().st_ino == env.cache.object_path(hello.sha256).stat().st_ino
    work = tmp_path / "pacman-check"
    work.mkdir()
    assert _pacman_reads(result.repository, work, ["isorunner-hello", "isorunner-setuid"]) == [
        "isorunner-hello 1.0-1",
        "isorunner-libhello 1.0-1",
        "isorunner-setuid 1.0-1",
    ]
    assert env.lines[0] == "packages: 5 names from packages.x86_64; repositories core, extra"
    assert env.lines[-1].startswith("packages: 6 ready (")


@pytest.mark.anyio
async def test_sync_second_build_downloads_nothing(env: Env) -> None:
    """The second sync of the same profile downloads 0 bytes: databases answer 304."""
    profile = env.profile(STANDIN + "isorunner-hello\n")
    await env.sync(profile, env.mirror())
    before = len(env.server.requests)
    again = await env.sync(profile, env.mirror())
    assert (again.downloaded, again.downloaded_bytes, again.cached) == (0, 0, 6)
    assert env.server.body_bytes(before) == 0
    assert {r.status for r in env.server.since(before)} == {304}
    assert "6 cached and checked, 0 cached to check, 0 to download" in env.lines[-2]


@pytest.mark.anyio
async def test_sync_archive_date_pins_the_version(env: Env) -> None:
    """Each archive date resolves the version that day held."""
    archive = f"{env.server.url}/archive"
    versions = []
    for date in ("2024/01/15", "2024/02/15"):
        sources = PackageSources(archive_repositories(("core", "extra"), date, archive_url=archive))
        result = await env.sync(env.profile("isorunner-pinned\n"), sources)
        versions.append([p.version for p in result.packages if p.name == "isorunner-pinned"])
    assert versions == [["1.0-1"], ["2.0-1"]]


@pytest.mark.anyio
async def test_sync_names_a_missing_package_and_the_repositories(env: Env) -> None:
    """A package that exists nowhere fails before any download, naming it and the repos."""
    with pytest.raises(PackageNotFound) as info:
        await env.sync(env.profile("isorunner-hello\nno-such-package\n"), env.mirror())
    assert info.value.message.startswith(
        "package not found: no-such-package (searched core, extra)"
    )
    assert env.package_bytes() == 0


@pytest.mark.anyio
async def test_sync_refuses_a_corrupted_file(env: Env) -> None:
    """A mirror serving a file unlike its database's sha256 fails, naming file and mirror."""
    with pytest.raises(CorruptedPackage) as info:
        await env.sync(env.profile("isorunner-libhello\n"), env.mirror("/corrupt"))
    message = info.value.message
    assert message.startswith("extra/isorunner-libhello-1.0-1-any.pkg.tar.zst is corrupted")
    assert f"{env.server.url}/corrupt/mirror/extra/os/x86_64 served" in message
    assert list((env.cache.root / "objects").rglob("*.pkg*")) == []


@pytest.mark.anyio
async def test_sync_refuses_an_untrusted_signature(env: Env) -> None:
    """A package signed by a key the keyring does not trust fails, naming it."""
    with pytest.raises(SignatureInvalid) as info:
        await env.sync(env.profile("isorunner-untrusted\n"), env.mirror())
    assert info.value.package == "extra/isorunner-untrusted-1.0-1"
    assert "the signature of extra/isorunner-untrusted-1.0-1 did not verify" in (info.value.message)
    assert "unknown trust" in info.value.message


@pytest.mark.anyio
async def test_sync_refuses_a_database_with_a_bad_signature(env: Env) -> None:
    """A repository database signed by an untrusted key fails resolution, naming it."""
    with pytest.raises(SignatureInvalid) as info:
        await env.sync(env.profile("isorunner-libhello\n", "[baddb]\n"), env.mirror())
    assert info.value.package == "baddb database"


@pytest.mark.anyio
async def test_sync_names_a_mirror_that_answers_500(env: Env) -> None:
    """A mirror answering 500 fails after its attempts, and the error names it."""
    with pytest.raises(DownloadFailed) as info:
        await env.sync(env.profile("isorunner-hello\n"), env.mirror("/fail500"))
    assert (
        f"{env.server.url}/fail500/mirror/core/os/x86_64: answered 500 Internal Server Error "
        "(3 attempts)" in info.value.message
    )


@pytest.mark.anyio
async def test_sync_falls_back_to_the_next_mirror(env: Env) -> None:
    """With a failing first mirror, the second one delivers."""
    result = await env.sync(env.profile("isorunner-hello\n"), env.mirror("/fail500", ""))
    assert result.downloaded == 2


@pytest.mark.anyio
async def test_sync_names_a_mirror_that_times_out(env: Env) -> None:
    """A mirror that never answers times out, and the error says so."""
    policy = DownloadPolicy(attempts=1, read_timeout=0.5, connect_timeout=0.5)
    with pytest.raises(DownloadFailed) as info:
        await env.sync(env.profile("isorunner-hello\n"), env.mirror("/hang"), policy=policy)
    assert f"{env.server.url}/hang/mirror/core/os/x86_64: timed out (ReadTimeout)" in (
        info.value.message
    )


@pytest.mark.anyio
async def test_sync_resumes_dropped_downloads(env: Env) -> None:
    """Downloads cut off halfway are resumed with Range and end up whole and checked."""
    result = await env.sync(env.profile("isorunner-hello\n"), env.mirror("/drop"))
    assert result.downloaded == 2
    assert any(r.status == 206 for r in env.served())


@pytest.mark.anyio
async def test_sync_refuses_a_fork_adding_a_repository(env: Env) -> None:
    """A fork's profile adding a repository fails before anything is fetched."""
    with pytest.raises(RepositoryNotAllowed) as info:
        await env.sync(
            env.profile("isorunner-custom\n", "[core]\n[custom]\n"), env.mirror(), trusted=False
        )
    assert info.value.config_key == "packages.extra_repos"
    assert env.served() == []


@pytest.mark.anyio
async def test_sync_uses_an_explicitly_unsigned_extra_repo(env: Env) -> None:
    """A trusted build uses an extra repository whose SigLevel says Optional TrustAll."""
    result = await env.sync(env.profile("isorunner-custom\n", "[core]\n[custom]\n"), env.mirror())
    assert [(p.name, p.repo) for p in result.packages] == [("isorunner-custom", "custom")]


@pytest.mark.anyio
async def test_sync_requires_signatures_by_default(env: Env) -> None:
    """The same unsigned repository with the default SigLevel is refused."""
    sources = PackageSources(
        mirror_repositories(("core",), (f"{env.server.url}/mirror/$repo/os/$arch",)),
        extra_repos=(Repository("custom", (f"{env.server.url}/custom/$repo/os/$arch",)),),
    )
    with pytest.raises(SignatureInvalid, match="has no signature"):
        await env.sync(env.profile("isorunner-custom\n", "[custom]\n"), sources)


@pytest.mark.anyio
async def test_two_concurrent_syncs_share_the_cache(env: Env) -> None:
    """Two syncs at once download each file once, and both get every package."""
    profile = env.profile(STANDIN + "isorunner-hello\n")
    results: list[ResolvedPackages] = []

    async def one() -> None:
        results.append(await env.sync(profile, env.mirror()))

    async with anyio.create_task_group() as group:
        group.start_soon(one)
        group.start_soon(one)
    assert [len(r.packages) for r in results] == [6, 6]
    assert sum(r.downloaded for r in results) == 6
    fetched = [r.path for r in env.served() if r.path.endswith(".pkg.tar.zst")]
    assert len(fetched) == len(set(fetched)) == 6
    objects = [p for p in (env.cache.root / "objects").rglob("*") if p.is_file()]
    assert len(objects) == 6 + 2  # the packages and the two databases, once each
    for result in results:
        for package in result.packages:
            assert (result.repository / package.filename).is_file()


@pytest.mark.anyio
async def test_sync_adopts_a_prewarmed_file(env: Env) -> None:
    """A file left in incoming/ by setup-sandbox.sh --packages is used, not downloaded."""
    name = "isorunner-libhello-1.0-1-any.pkg.tar.zst"
    source = UPSTREAM / "www" / "mirror" / "extra" / "os" / "x86_64" / name
    (env.cache.root / "incoming" / name).write_bytes(source.read_bytes())
    result = await env.sync(env.profile("isorunner-libhello\n"), env.mirror())
    assert (result.downloaded, result.cached) == (0, 1)
    assert env.package_bytes() == 0
    assert not (env.cache.root / "incoming" / name).exists()


def _pacman_accepts(work: Path, repo: str, entry: DbEntry, package: Path) -> bool:
    """Whether the real pacman -Sw accepts this cached file (its own checks, no download)."""
    for sub in ("db/sync", "db/local", "cache", "root"):
        (work / sub).mkdir(parents=True)
    upstream_db = UPSTREAM / "www" / "mirror" / repo / "os" / "x86_64" / f"{repo}.db"
    shutil.copyfile(upstream_db, work / "db" / "sync" / f"{repo}.db")
    shutil.copyfile(package, work / "cache" / entry.filename)
    sig = signature_bytes(entry)
    assert sig is not None
    (work / "cache" / f"{entry.filename}.sig").write_bytes(sig)
    copy_keyring(UPSTREAM / "keyring", work / "gnupg")
    conf = work / "pacman.conf"
    conf.write_text(
        f"[options]\nRootDir = {work}/root\nDBPath = {work}/db/\nCacheDir = {work}/cache/\n"
        f"GPGDir = {work}/gnupg/\nLogFile = {work}/log\nArchitecture = x86_64\n"
        f"SigLevel = Required DatabaseOptional\n[{repo}]\nServer = file:///nonexistent\n"
    )
    run = subprocess.run(
        ["pacman", "--config", str(conf), "--noconfirm", "-Sw", "-dd", f"{repo}/{entry.name}"],
        capture_output=True,
        check=False,
    )
    return run.returncode == 0


@pytest.mark.anyio
@pytest.mark.parametrize("name", ["isorunner-hello", "isorunner-untrusted"])
async def test_signature_checks_agree_with_pacman(env: Env, tmp_path: Path, name: str) -> None:
    """For the same file, signature and keyring, isorunner decides exactly as pacman -Sw."""
    db = UPSTREAM / "www" / "mirror" / "extra" / "os" / "x86_64" / "extra.db"
    (entry,) = read_entries(db, [f"{name}-1.0-1"]).values()
    package = db.parent / entry.filename
    tmp = env.cache.temp_path("x")
    shutil.copyfile(package, tmp)
    env.cache.add(tmp, entry.sha256)
    repository = Repository("extra", ("http://unused/$repo",))
    candidate = Candidate(Resolved("extra", name, "1.0-1"), entry, repository, "parity")
    verifier = Verifier(env.cache, keyring=UPSTREAM / "keyring")
    home = tmp_path / "gnupg"
    copy_keyring(UPSTREAM / "keyring", home)
    try:
        await verifier.verify(candidate, home=home, disabled=await verifier.list_disabled(home))
    except SignatureInvalid:
        ours = False
    else:
        ours = True
    assert ours == _pacman_accepts(tmp_path / "pacman", "extra", entry, package)
    assert ours == (name == "isorunner-hello")

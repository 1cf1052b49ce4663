"""Host-side package sync: every build gets exactly the packages its profile asks for.

Before a build's container starts, its profile's package lists are resolved with the
host's real pacman against the repositories the build may use, the missing files are
downloaded into a cache shared by all builds, checked by pacman (sha256 and signature
against the keyring), and laid out as the build's own repository, which the sandbox
binds read-only at the base's mirror path. The container stays without network.

What is where:

- `profile.py`: pure; the profile's package names and pacman.conf repository names.
- `sources.py`: pure; `Repository`, `PackageSources`, which repositories a build may use.
- `syncdb.py`: sync databases: the entries of resolved packages; a build's database.
- `pacman.py`: pacman's config, argv and output (pure), and running it.
- `download.py`: `Downloader`: streamed downloads with retries, resume and failover.
- `cache.py`: `PackageCache`: content-addressed, shared, LRU-pruned.
- `verify.py`: `Verifier`: pacman's checks of downloaded files.
- `transfer.py`: `Transfer`: downloads and checks, several at once.
- `sync.py`: `PackageSync.sync(request) -> ResolvedPackages`, the whole step.
- `exceptions.py`: the `PackageError` tree.

Wiring, in the composition root:

    cache = PackageCache(cache_dir, max_bytes=...)
    downloader = Downloader(http_client, DownloadPolicy(...))   # client owned by caller
    sync = PackageSync(SyncConfig(keyring=...), cache=cache, downloader=downloader)
    resolved = await sync.sync(SyncRequest(profile_dir, sources, trusted=...),
                               repo_dir=..., work_dir=..., log=...)
"""

from runner.packages.cache import PackageCache
from runner.packages.download import Downloader, DownloadPolicy
from runner.packages.exceptions import PackageError
from runner.packages.sources import (
    PackageSources,
    Repository,
    archive_repositories,
    mirror_repositories,
)
from runner.packages.sync import (
    PackageSync,
    ResolvedPackage,
    ResolvedPackages,
    SyncConfig,
    SyncRequest,
)

__all__ = [
    "DownloadPolicy",
    "Downloader",
    "PackageCache",
    "PackageError",
    "PackageSources",
    "PackageSync",
    "Repository",
    "ResolvedPackage",
    "ResolvedPackages",
    "SyncConfig",
    "SyncRequest",
    "archive_repositories",
    "mirror_repositories",
]

"""Getting a build's missing packages into the cache, and checked, several at once.

I/O shell over `Downloader` (network) and `Verifier` (pacman). Download workers fetch
the files the cache lacks, `parallel` at a time, each file under its cache lock so that
two syncs never fetch it twice; each finished file goes straight to the check queue,
where `verify_workers` signature checks run at once: checking overlaps downloading
instead of following it (pacman -Sw checks only after its last download).
Files found in the cache but not checked under the current keyring join the same queue.
A long download logs a progress line every `progress_seconds`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from runner.packages.cache import PackageCache
from runner.packages.download import Downloader
from runner.packages.sources import Repository
from runner.packages.verify import Candidate, Verifier

#: The most bytes a detached signature may have.
MAX_SIG_BYTES = 16 << 10

LogLine = Callable[[str], None]


def size_text(count: int) -> str:
    """A byte count for people: KiB, MiB or GiB with one or two decimals."""
    if count < 1 << 20:
        return f"{count / 1024:.1f} KiB"
    if count < 1 << 30:
        return f"{count / (1 << 20):.1f} MiB"
    return f"{count / (1 << 30):.2f} GiB"


@dataclass(slots=True)
class Counters:
    """What a transfer did (and, while it runs, how far it is).

    Attributes:
        bytes_done: Bytes downloaded so far.
        files_done: Files finished (downloaded, or found downloaded by another sync).
        files_total: Files to download.
        files: Files this transfer downloaded itself.
        bytes_total: Bytes to download.
        started: When the transfer started (monotonic clock).
    """

    bytes_done: int = 0
    files_done: int = 0
    files_total: int = 0
    files: int = 0
    bytes_total: int = 0
    started: float = field(default_factory=time.monotonic)


async def report_progress(
    counters: Counters, log: LogLine, done: anyio.Event, every: float
) -> None:
    """Log a progress line every `every` seconds until `done` is set.

    Args:
        counters: The transfer's counters, read at each line.
        log: Where the lines go (the build log).
        done: Set when the downloads are over.
        every: Seconds between lines.
    """
    while not done.is_set():
        with anyio.move_on_after(every):
            await done.wait()
        if done.is_set():
            return
        elapsed = time.monotonic() - counters.started
        rate = counters.bytes_done / elapsed if elapsed > 0 else 0.0
        log(
            f"packages: downloading {size_text(counters.bytes_done)} of "
            f"{size_text(counters.bytes_total)}, {counters.files_done} of "
            f"{counters.files_total} files, {size_text(int(rate))}/s"
        )


class Transfer:
    """Downloads and checks one build's packages (see the module docstring).

    Args:
        cache: The shared package cache.
        downloader: The mirror downloader.
        verifier: The signature checks.
        verify_workers: Signature checks run at once.
        progress_seconds: How often a long download logs its progress.
    """

    def __init__(
        self,
        cache: PackageCache,
        downloader: Downloader,
        verifier: Verifier,
        *,
        verify_workers: int,
        progress_seconds: float,
    ) -> None:
        self.cache = cache
        self.downloader = downloader
        self.verifier = verifier
        self.verify_workers = verify_workers
        self.progress_seconds = progress_seconds

    async def run(
        self,
        items: Sequence[Candidate],
        repositories: Sequence[Repository],
        arch: str,
        work: Path,
        log: LogLine,
    ) -> Counters:
        """Make every item cached and checked; log what it takes.

        Returns:
            What was downloaded.

        Raises:
            PackageError: a download or a check failed.
        """
        counters = Counters()
        cached, unverified, missing = await anyio.to_thread.run_sync(self._sort, items)
        counters.bytes_total = sum(i.entry.size for i in missing)
        total = sum(i.entry.size for i in items)
        log(
            f"packages: {len(items)} resolved ({size_text(total)}): {len(cached)} cached and "
            f"checked, {len(unverified)} cached to check, {len(missing)} to download "
            f"({size_text(counters.bytes_total)})"
        )
        if not missing and not unverified:
            return counters
        counters.files_total = len(missing)
        send, receive = anyio.create_memory_object_stream[Candidate](max_buffer_size=len(items))
        downloads, pending = anyio.create_memory_object_stream[Candidate](
            max_buffer_size=len(items)
        )
        for item in missing:
            downloads.send_nowait(item)
        downloads.close()
        for item in unverified:
            send.send_nowait(item)
        home = work / "gnupg"  # the sync's keyring copy
        disabled = await self.verifier.list_disabled(home)
        done = anyio.Event()
        async with anyio.create_task_group() as group:
            if missing:
                group.start_soon(report_progress, counters, log, done, self.progress_seconds)
            try:
                async with anyio.create_task_group() as workers:
                    for _ in range(min(self.downloader.policy.parallel, len(missing))):
                        workers.start_soon(
                            self._download_worker, pending.clone(), send.clone(), arch, counters
                        )
                    for _ in range(self.verify_workers):
                        workers.start_soon(self._verify_worker, receive.clone(), home, disabled)
                    # The verifiers end once every download worker closed its sender.
                    for stream in (pending, send, receive):
                        stream.close()
            finally:
                done.set()
        if missing:
            elapsed = time.monotonic() - counters.started
            rate = counters.bytes_done / elapsed if elapsed > 0 else 0.0
            log(
                f"packages: downloaded {counters.files} files, {size_text(counters.bytes_done)} "
                f"in {elapsed:.1f} s ({size_text(int(rate))}/s)"
            )
        return counters

    def _sort(
        self, items: Sequence[Candidate]
    ) -> tuple[list[Candidate], list[Candidate], list[Candidate]]:
        """Split into cached and checked, cached but not checked, and missing."""
        cached: list[Candidate] = []
        unverified: list[Candidate] = []
        missing: list[Candidate] = []
        for item in items:
            sha = item.entry.sha256
            if self.cache.has(sha):
                checked = self.cache.is_verified(item.stamp, sha)
                (cached if checked else unverified).append(item)
            elif self.cache.adopt_incoming(item.entry.filename, sha):
                unverified.append(item)
            else:
                missing.append(item)
        return cached, unverified, missing

    async def _download_worker(
        self,
        queue: MemoryObjectReceiveStream[Candidate],
        verify: MemoryObjectSendStream[Candidate],
        arch: str,
        counters: Counters,
    ) -> None:
        async with queue, verify:
            async for item in queue:
                await self._download_one(item, arch, counters)
                await verify.send(item)

    async def _download_one(self, item: Candidate, arch: str, counters: Counters) -> None:
        entry = item.entry
        sha = entry.sha256
        fd = None
        while fd is None:
            fd = await anyio.to_thread.run_sync(self.cache.try_object_lock, sha)
            if fd is None:
                await anyio.sleep(0.05)
        try:
            if self.cache.has(sha):
                return  # another sync downloaded it meanwhile
            tmp = self.cache.temp_path(entry.filename)

            def progress(count: int) -> None:
                counters.bytes_done += count  # negative when a download starts over

            urls = [f"{base}/{entry.filename}" for base in item.repository.urls(arch)]
            fetched = await self.downloader.fetch(
                urls,
                tmp,
                what=f"{item.resolved.repo}/{entry.filename}",
                max_bytes=entry.size,
                expected_sha256=sha,
                progress=progress,
            )
            if entry.pgpsig is None:
                sig = await self.downloader.fetch_optional(
                    fetched.url + ".sig", max_bytes=MAX_SIG_BYTES
                )
                if sig is not None:
                    await anyio.to_thread.run_sync(self.cache.add_signature, sha, sig)
            await anyio.to_thread.run_sync(self.cache.add, tmp, sha)
            counters.files += 1
        finally:
            counters.files_done += 1
            self.cache.release_lock(fd)

    async def _verify_worker(
        self,
        queue: MemoryObjectReceiveStream[Candidate],
        home: Path,
        disabled: frozenset[str],
    ) -> None:
        async with queue:
            async for item in queue:
                await self.verifier.verify(item, home=home, disabled=disabled)

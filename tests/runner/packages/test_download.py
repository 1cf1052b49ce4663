"""Tests of runner.packages.download: retries, failover, resume and checks, over MockTransport."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import anyio
import httpx
import pytest

from runner.packages.download import (
    Downloader,
    DownloadPolicy,
    Fetched,
    NotModified,
    mirror_of,
)
from runner.packages.exceptions import CorruptedPackage, DownloadFailed

BODY = bytes(range(256)) * 4096 * 3  # 3 MiB: several pieces
SHA = hashlib.sha256(BODY).hexdigest()
A = "http://a.example/core/os/x86_64/foo-1-1-any.pkg.tar.zst"
B = "http://b.example/core/os/x86_64/foo-1-1-any.pkg.tar.zst"

Handler = Callable[[httpx.Request], httpx.Response]


class _Broken(httpx.AsyncByteStream):
    """A body that sends `data` and then fails like a dropped connection."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.data
        raise httpx.ReadError("connection reset")


class Recorder:
    """Records the waits a downloader asks for, without waiting."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def _downloader(handler: Handler, **policy: float) -> tuple[Downloader, Recorder]:
    sleep = Recorder()
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    values: dict[str, float] = {"attempts": 3, "backoff_base": 1.0, "backoff_max": 10.0}
    values.update(policy)
    return Downloader(client, DownloadPolicy(**values), sleep=sleep), sleep  # type: ignore[arg-type]


async def _fetch(downloader: Downloader, dest: Path, urls: list[str] | None = None) -> Fetched:
    return await downloader.fetch(
        urls or [A], dest, what="core/foo", max_bytes=len(BODY), expected_sha256=SHA
    )


@pytest.mark.anyio
async def test_fetch_writes_and_hashes_the_body(tmp_path: Path) -> None:
    """A good answer is written whole, hashed and counted by the progress hook."""
    seen: list[int] = []
    downloader, sleep = _downloader(lambda request: httpx.Response(200, content=BODY))
    fetched = await downloader.fetch(
        [A], tmp_path / "f", what="core/foo", max_bytes=len(BODY), expected_sha256=SHA,
        progress=seen.append,
    )  # fmt: skip
    assert (fetched.sha256, fetched.size, fetched.url) == (SHA, len(BODY), A)
    assert (tmp_path / "f").read_bytes() == BODY
    assert sum(seen) == len(BODY)
    assert sleep.waits == []


@pytest.mark.anyio
async def test_fetch_retries_server_errors_with_backoff(tmp_path: Path) -> None:
    """5xx answers are retried with doubling waits, then the file arrives."""
    answers = iter([500, 502, 200])

    def handler(request: httpx.Request) -> httpx.Response:
        status = next(answers)
        return httpx.Response(status, content=BODY if status == 200 else b"")

    downloader, sleep = _downloader(handler)
    assert (await _fetch(downloader, tmp_path / "f")).sha256 == SHA
    assert sleep.waits == [1.0, 2.0]


@pytest.mark.anyio
async def test_fetch_honours_retry_after_up_to_the_cap(tmp_path: Path) -> None:
    """A 429's Retry-After is the wait, capped at backoff_max."""
    answers = iter([(429, "3"), (503, "3600"), (200, None)])

    def handler(request: httpx.Request) -> httpx.Response:
        status, after = next(answers)
        headers = {"Retry-After": after} if after else {}
        return httpx.Response(status, headers=headers, content=BODY if status == 200 else b"")

    downloader, sleep = _downloader(handler)
    await _fetch(downloader, tmp_path / "f")
    assert sleep.waits == [3.0, 10.0]


@pytest.mark.anyio
async def test_fetch_moves_to_the_next_mirror(tmp_path: Path) -> None:
    """A 404 moves to the next mirror at once; a failing mirror after its attempts."""
    asked: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.host)
        if request.url.host == "a.example":
            return httpx.Response(404)
        return httpx.Response(200, content=BODY)

    downloader, sleep = _downloader(handler)
    fetched = await _fetch(downloader, tmp_path / "f", [A, B])
    assert fetched.url == B
    assert asked == ["a.example", "b.example"]
    assert sleep.waits == []


@pytest.mark.anyio
async def test_fetch_names_every_mirror_when_all_fail(tmp_path: Path) -> None:
    """When every mirror fails the error names each one and what it did; no file is left."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "a.example":
            return httpx.Response(500)
        raise httpx.ConnectTimeout("slow", request=request)

    downloader, _ = _downloader(handler, attempts=2)
    with pytest.raises(DownloadFailed) as info:
        await _fetch(downloader, tmp_path / "f", [A, B])
    message = info.value.message
    assert "could not download core/foo from any mirror" in message
    assert "http://a.example/core/os/x86_64: answered 500 Internal Server Error (2 attempts)" in (
        message
    )
    assert "http://b.example/core/os/x86_64: timed out (ConnectTimeout) (2 attempts)" in message
    assert not (tmp_path / "f").exists()


@pytest.mark.anyio
async def test_fetch_refuses_a_corrupted_file(tmp_path: Path) -> None:
    """Content whose sha256 differs from the database's is refused as corrupted."""
    bad = bytearray(BODY)
    bad[1000] ^= 1
    downloader, _ = _downloader(lambda request: httpx.Response(200, content=bytes(bad)))
    with pytest.raises(CorruptedPackage) as info:
        await _fetch(downloader, tmp_path / "f")
    assert "core/foo is corrupted on every mirror" in info.value.message
    assert f"the database says {SHA[:16]}" in info.value.message
    assert not (tmp_path / "f").exists()


@pytest.mark.anyio
async def test_fetch_takes_a_good_copy_after_a_corrupted_one(tmp_path: Path) -> None:
    """A corrupted copy on one mirror is replaced by the next mirror's good one."""

    def handler(request: httpx.Request) -> httpx.Response:
        body = BODY[:-1] + b"x" if request.url.host == "a.example" else BODY
        return httpx.Response(200, content=body)

    downloader, _ = _downloader(handler)
    assert (await _fetch(downloader, tmp_path / "f", [A, B])).url == B
    assert (tmp_path / "f").read_bytes() == BODY


@pytest.mark.anyio
async def test_fetch_resumes_a_dropped_download_with_range(tmp_path: Path) -> None:
    """After a dropped connection the download goes on from where it stopped."""
    ranges: list[str | None] = []
    seen: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        ranges.append(request.headers.get("range"))
        if len(ranges) == 1:
            return httpx.Response(200, stream=_Broken(BODY[: 1 << 20]))
        start = int(request.headers["range"].removeprefix("bytes=").rstrip("-"))
        return httpx.Response(
            206,
            headers={"Content-Range": f"bytes {start}-{len(BODY) - 1}/{len(BODY)}"},
            content=BODY[start:],
        )

    downloader, sleep = _downloader(handler)
    fetched = await downloader.fetch(
        [A], tmp_path / "f", what="core/foo", max_bytes=len(BODY), expected_sha256=SHA,
        progress=seen.append,
    )  # fmt: skip
    assert fetched.sha256 == SHA
    assert ranges == [None, f"bytes={1 << 20}-"]
    assert (tmp_path / "f").read_bytes() == BODY
    assert sum(seen) == len(BODY)
    assert sleep.waits == [1.0]


@pytest.mark.anyio
async def test_fetch_starts_over_when_range_is_ignored(tmp_path: Path) -> None:
    """A server that answers 200 to a Range request gets the file written from the start."""
    calls = 0
    seen: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            return httpx.Response(200, stream=_Broken(BODY[:5000]))
        return httpx.Response(200, content=BODY)

    downloader, _ = _downloader(handler)
    await downloader.fetch(
        [A], tmp_path / "f", what="core/foo", max_bytes=len(BODY), expected_sha256=SHA,
        progress=seen.append,
    )  # fmt: skip
    assert (tmp_path / "f").read_bytes() == BODY
    assert sum(seen) == len(BODY)


@pytest.mark.anyio
async def test_fetch_refuses_more_bytes_than_the_database_says(tmp_path: Path) -> None:
    """A body longer than max_bytes is cut off and the mirror refused."""
    downloader, _ = _downloader(
        lambda request: httpx.Response(200, stream=httpx.ByteStream(BODY + b"extra"))
    )
    with pytest.raises(DownloadFailed, match="sent more than"):
        await _fetch(downloader, tmp_path / "f")


@pytest.mark.anyio
async def test_fetch_refuses_a_declared_oversize(tmp_path: Path) -> None:
    """A Content-Length over max_bytes is refused before the body is read."""
    downloader, _ = _downloader(lambda request: httpx.Response(200, content=BODY + b"x"))
    with pytest.raises(DownloadFailed, match=f"offered {len(BODY) + 1} bytes"):
        await _fetch(downloader, tmp_path / "f")


@pytest.mark.anyio
async def test_fetch_if_changed_sends_validators_and_takes_304(tmp_path: Path) -> None:
    """A 304 to the stored ETag and Last-Modified means nothing is downloaded."""
    seen: dict[str, str] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen.update(request.headers)
        return httpx.Response(304)

    downloader, _ = _downloader(handler)
    result = await downloader.fetch_if_changed(
        [A], tmp_path / "db", what="core.db", max_bytes=100, etag='"e1"', last_modified="Mon"
    )
    assert result == NotModified(A)
    assert (seen["if-none-match"], seen["if-modified-since"]) == ('"e1"', "Mon")
    assert not (tmp_path / "db").exists()


@pytest.mark.anyio
async def test_fetch_if_changed_keeps_the_new_validators(tmp_path: Path) -> None:
    """A changed database comes back with its new ETag and Last-Modified."""
    downloader, _ = _downloader(
        lambda request: httpx.Response(
            200, headers={"ETag": '"e2"', "Last-Modified": "Tue"}, content=b"db"
        )
    )
    result = await downloader.fetch_if_changed(
        [A], tmp_path / "db", what="core.db", max_bytes=100, etag='"e1"', last_modified=None
    )
    assert isinstance(result, Fetched)
    assert (result.etag, result.last_modified, result.size) == ('"e2"', "Tue", 2)


@pytest.mark.anyio
async def test_fetch_optional_reads_or_reports_absence() -> None:
    """A .sig that exists is returned; a 404 is None; a huge one fails."""
    answers = iter([httpx.Response(200, content=b"sig"), httpx.Response(404)])
    downloader, _ = _downloader(lambda request: next(answers))
    assert await downloader.fetch_optional(A + ".sig", max_bytes=10) == b"sig"
    assert await downloader.fetch_optional(A + ".sig", max_bytes=10) is None
    big, _ = _downloader(lambda request: httpx.Response(200, content=b"x" * 100))
    with pytest.raises(DownloadFailed, match="sent more than 10 bytes"):
        await big.fetch_optional(A + ".sig", max_bytes=10)


@pytest.mark.anyio
async def test_fetch_removes_the_partial_file_when_cancelled(tmp_path: Path) -> None:
    """A cancelled download leaves no partial file behind."""
    started = anyio.Event()

    class _Slow(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            yield BODY[:1000]
            started.set()
            await anyio.sleep(3600)
            yield b""

    downloader, _ = _downloader(lambda request: httpx.Response(200, stream=_Slow()))
    async with anyio.create_task_group() as group:
        group.start_soon(_fetch, downloader, tmp_path / "f")
        await started.wait()
        group.cancel_scope.cancel()
    assert not (tmp_path / "f").exists()


def test_mirror_of_drops_credentials_and_file() -> None:
    """Messages name the mirror without user, password or file name."""
    assert mirror_of("https://user:secret@m.example:8443/core/os/x86_64/foo.pkg") == (
        "https://m.example:8443/core/os/x86_64"
    )

"""Tests for `runner.forges.client.ForgeTransport`: retries, redirects, streaming."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import respx

from runner.forges.client import CHUNK_SIZE, ForgeTransport
from runner.forges.exceptions import (
    Conflict,
    DownloadTooLarge,
    Forbidden,
    ForgeError,
    ForgeUnavailable,
    MalformedResponse,
    NotFound,
    RateLimited,
    safe_url,
)
from runner.forges.request import ForgeRequest
from runner.forges.response import error_for
from tests.runner.forges.conftest import START, FakeClock

pytestmark = pytest.mark.anyio

URL = "https://forge.example.com/api/thing"
TOKEN = "ghs_secret-token-value"


def get(url: str = URL) -> ForgeRequest:
    """A GET carrying both credential header spellings."""
    headers = {"Authorization": f"Bearer {TOKEN}", "PRIVATE-TOKEN": TOKEN}
    return ForgeRequest("GET", url, headers=headers, action="fetch the thing")


async def test_send_retries_5xx_with_exponential_backoff(
    router: respx.Router, transport: ForgeTransport, clock: FakeClock
) -> None:
    """Two 502s are retried after 1 s and 2 s, and the third answer is returned."""
    router.get(URL).mock(
        side_effect=[httpx.Response(502), httpx.Response(502), httpx.Response(200, json={})]
    )
    response = await transport.send(get())
    assert response.status == 200
    assert clock.sleeps == [1.0, 2.0]


async def test_send_honours_retry_after_on_429(
    router: respx.Router, transport: ForgeTransport, clock: FakeClock
) -> None:
    """A 429 with `Retry-After: 7` waits exactly 7 seconds before the next attempt."""
    router.get(URL).mock(
        side_effect=[httpx.Response(429, headers={"Retry-After": "7"}), httpx.Response(200)]
    )
    assert (await transport.send(get())).status == 200
    assert clock.sleeps == [7.0]


async def test_send_waits_for_github_rate_limit_reset(
    router: respx.Router, transport: ForgeTransport, clock: FakeClock
) -> None:
    """A 403 with `x-ratelimit-remaining: 0` waits until the reset epoch, plus a second."""
    limited = httpx.Response(
        403,
        headers={"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(START) + 42)},
        json={"message": "API rate limit exceeded"},
    )
    router.get(URL).mock(side_effect=[limited, httpx.Response(200)])
    assert (await transport.send(get())).status == 200
    assert clock.sleeps == [43.0]


async def test_send_retries_github_secondary_rate_limit_after_a_minute(
    router: respx.Router, transport: ForgeTransport, clock: FakeClock
) -> None:
    """A secondary-limit 403 without timing headers waits the minute GitHub advises."""
    limited = httpx.Response(
        403,
        headers={"x-ratelimit-remaining": "4000"},
        json={"message": "You have exceeded a secondary rate limit. Please wait a few minutes"},
    )
    router.get(URL).mock(side_effect=[limited, httpx.Response(200)])
    assert (await transport.send(get())).status == 200
    assert clock.sleeps == [60.0]


async def test_send_does_not_retry_a_plain_403(
    router: respx.Router, transport: ForgeTransport, clock: FakeClock
) -> None:
    """A 403 that is not a rate limit comes back at once and decodes to `Forbidden`."""
    route = router.get(URL).mock(
        return_value=httpx.Response(403, json={"message": "Resource not accessible by integration"})
    )
    response = await transport.send(get())
    assert response.status == 403
    assert route.call_count == 1
    assert clock.sleeps == []
    assert isinstance(error_for(response, now=clock()), Forbidden)


async def test_send_gives_up_within_the_time_bound(
    router: respx.Router, transport: ForgeTransport, clock: FakeClock
) -> None:
    """Rate limits longer than the budget end in `RateLimited` without overrunning it."""
    router.get(URL).mock(return_value=httpx.Response(429, headers={"Retry-After": "50"}))
    with pytest.raises(RateLimited) as caught:
        await transport.send(get())
    assert clock.sleeps == [50.0, 50.0]
    assert clock() - START <= 120
    assert caught.value.status_code == 429
    assert caught.value.rate_limit is not None
    assert caught.value.rate_limit.retry_after == 50.0
    assert "gave up after 3 attempts" in str(caught.value)


async def test_send_gives_up_on_a_persistent_outage_with_advice(
    router: respx.Router, http: httpx.AsyncClient, clock: FakeClock
) -> None:
    """A forge that keeps answering 503 ends in `ForgeUnavailable` saying to retry later."""
    router.get(URL).mock(return_value=httpx.Response(503))
    transport = ForgeTransport(http, sleep=clock.sleep, clock=clock, max_retry_seconds=10)
    with pytest.raises(ForgeUnavailable, match="retry later") as caught:
        await transport.send(get())
    assert clock.sleeps == [1.0, 2.0, 4.0]
    assert caught.value.status_code == 503


async def test_send_translates_and_retries_transport_errors(
    router: respx.Router, http: httpx.AsyncClient, clock: FakeClock
) -> None:
    """Connection errors are retried, then raised as `ForgeUnavailable` chained to httpx's."""
    router.get(URL).mock(side_effect=httpx.ConnectError("refused"))
    transport = ForgeTransport(http, sleep=clock.sleep, clock=clock, max_retry_seconds=5)
    with pytest.raises(ForgeUnavailable, match=r"forge\.example\.com failed") as caught:
        await transport.send(get())
    assert isinstance(caught.value.__cause__, httpx.ConnectError)
    assert clock.sleeps == [1.0, 2.0]


async def test_unreachable_forge_error_never_shows_the_urls_user_part(
    router: respx.Router, http: httpx.AsyncClient, clock: FakeClock
) -> None:
    """A forge URL with `user:password@` is named by its host alone when it cannot be reached."""
    url = "https://bot:pa55word@forge.example.com/api/thing"
    router.get(URL).mock(side_effect=httpx.ConnectError("refused"))
    transport = ForgeTransport(http, sleep=clock.sleep, clock=clock, max_retry_seconds=0)
    with pytest.raises(ForgeUnavailable, match=r"forge\.example\.com failed") as caught:
        await transport.send(get(url))
    assert "pa55word" not in str(caught.value)
    assert "bot" not in str(caught.value)


def test_safe_url_drops_user_part_query_and_fragment() -> None:
    """`safe_url` keeps scheme, host, port and path only."""
    assert safe_url("https://u:p@h.example:8443/a/b?token=x#f") == "https://h.example:8443/a/b"


async def test_send_retries_request_specific_statuses(
    router: respx.Router, transport: ForgeTransport, clock: FakeClock
) -> None:
    """A status listed in `retry_statuses` (GitLab's 409) is retried like an outage."""
    router.post(URL).mock(side_effect=[httpx.Response(409), httpx.Response(201)])
    request = ForgeRequest("POST", URL, json={}, retry_statuses=frozenset({409}))
    assert (await transport.send(request)).status == 201
    assert clock.sleeps == [1.0]


async def test_send_gives_up_on_request_specific_statuses_as_their_error(
    router: respx.Router, http: httpx.AsyncClient, clock: FakeClock
) -> None:
    """A 409 that outlasts the budget raises `Conflict`."""
    router.post(URL).mock(return_value=httpx.Response(409))
    transport = ForgeTransport(http, sleep=clock.sleep, clock=clock, max_retry_seconds=2)
    request = ForgeRequest("POST", URL, json={}, retry_statuses=frozenset({409}))
    with pytest.raises(Conflict):
        await transport.send(request)


async def test_send_does_not_retry_client_errors(
    router: respx.Router, transport: ForgeTransport, clock: FakeClock
) -> None:
    """A 404 is returned after one attempt."""
    route = router.get(URL).mock(return_value=httpx.Response(404))
    assert (await transport.send(get())).status == 404
    assert route.call_count == 1
    assert clock.sleeps == []


async def test_send_follows_get_redirects_on_the_same_host_with_the_token(
    router: respx.Router, transport: ForgeTransport
) -> None:
    """A redirect to the same host keeps the credentials (a renamed repository)."""
    router.get(URL).mock(return_value=httpx.Response(301, headers={"Location": "/api/moved"}))
    moved = router.get("https://forge.example.com/api/moved").mock(
        return_value=httpx.Response(200, json={"ok": True})
    )
    assert (await transport.send(get())).body == b'{"ok":true}'
    assert moved.calls.last.request.headers["Authorization"] == f"Bearer {TOKEN}"


async def test_download_to_drops_credentials_on_another_host(
    router: respx.Router, transport: ForgeTransport, tmp_path: Path
) -> None:
    """The redirect to another host is followed without Authorization or PRIVATE-TOKEN."""
    elsewhere = "https://codeload.example.net/archive.tar.gz?token=temporary"
    router.get(URL).mock(return_value=httpx.Response(302, headers={"Location": elsewhere}))
    target = router.get(elsewhere).mock(return_value=httpx.Response(200, content=b"tarball"))
    dest = tmp_path / "archive.tar.gz"
    assert await transport.download_to(get(), dest, max_bytes=100) == 7
    assert dest.read_bytes() == b"tarball"
    sent = target.calls.last.request.headers
    assert "authorization" not in sent
    assert "private-token" not in sent


async def test_download_to_refuses_a_body_over_the_cap(
    router: respx.Router, transport: ForgeTransport, tmp_path: Path
) -> None:
    """A streamed body longer than `max_bytes` raises and leaves no file behind."""

    async def endless() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"x" * 1000

    router.get(URL).mock(return_value=httpx.Response(200, content=endless()))
    dest = tmp_path / "archive.tar.gz"
    with pytest.raises(DownloadTooLarge) as caught:
        await transport.download_to(get(), dest, max_bytes=2500)
    assert caught.value.max_bytes == 2500
    assert not dest.exists()


async def test_download_to_refuses_a_declared_length_over_the_cap(
    router: respx.Router, transport: ForgeTransport, tmp_path: Path
) -> None:
    """A `Content-Length` over the cap is refused before the body is read."""
    router.get(URL).mock(return_value=httpx.Response(200, content=b"y" * 300))
    with pytest.raises(DownloadTooLarge):
        await transport.download_to(get(), tmp_path / "a", max_bytes=299)


async def test_download_to_raises_the_forge_error_and_removes_the_file(
    router: respx.Router, transport: ForgeTransport, tmp_path: Path
) -> None:
    """A 404 raises `NotFound` whose message carries neither the token nor a query."""
    dest = tmp_path / "archive"
    dest.write_bytes(b"stale")
    router.get(URL).mock(return_value=httpx.Response(404, json={"message": "Not Found"}))
    with pytest.raises(NotFound) as caught:
        await transport.download_to(get(), dest, max_bytes=100)
    assert not dest.exists()
    assert TOKEN not in str(caught.value)


async def test_download_to_retries_a_5xx_from_the_redirect_target(
    router: respx.Router, transport: ForgeTransport, clock: FakeClock, tmp_path: Path
) -> None:
    """A 503 from the archive host is retried and the whole download starts again."""
    elsewhere = "https://codeload.example.net/a.tar.gz"
    router.get(URL).mock(return_value=httpx.Response(302, headers={"Location": elsewhere}))
    router.get(elsewhere).mock(
        side_effect=[httpx.Response(503), httpx.Response(200, content=b"ok")]
    )
    dest = tmp_path / "a.tar.gz"
    assert await transport.download_to(get(), dest, max_bytes=10) == 2
    assert clock.sleeps == [1.0]


def upload_request(size: int | None) -> ForgeRequest:
    """An upload request, declaring `size` bytes unless None."""
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/octet-stream"}
    if size is not None:
        headers["Content-Length"] = str(size)
    return ForgeRequest("POST", URL, headers=headers, action="upload the file")


async def test_upload_file_streams_with_exact_content_length(
    router: respx.Router, transport: ForgeTransport, tmp_path: Path
) -> None:
    """A file of 2.5 chunks arrives whole, with its exact length and no chunked encoding."""
    data = bytes(range(256)) * (CHUNK_SIZE * 5 // 2 // 256)
    path = tmp_path / "image.iso"
    path.write_bytes(data)
    route = router.post(URL).mock(return_value=httpx.Response(201, json={}))
    response = await transport.upload_file(upload_request(len(data)), path)
    assert response.status == 201
    sent = route.calls.last.request
    assert sent.headers["Content-Length"] == str(len(data))
    assert "transfer-encoding" not in sent.headers
    assert sent.content == data


async def test_upload_file_sets_content_length_when_not_declared(
    router: respx.Router, transport: ForgeTransport, tmp_path: Path
) -> None:
    """Without a declared length the file's own size is sent."""
    path = tmp_path / "sums"
    path.write_bytes(b"abc\n")
    route = router.post(URL).mock(return_value=httpx.Response(201))
    await transport.upload_file(upload_request(None), path)
    assert route.calls.last.request.headers["Content-Length"] == "4"


async def test_upload_file_refuses_a_mismatched_declared_length(
    transport: ForgeTransport, tmp_path: Path
) -> None:
    """A request declaring another size than the file's is a caller bug: `ValueError`."""
    path = tmp_path / "sums"
    path.write_bytes(b"abc\n")
    with pytest.raises(ValueError, match="says 5 bytes"):
        await transport.upload_file(upload_request(5), path)


async def test_upload_file_returns_a_5xx_without_retrying(
    router: respx.Router, transport: ForgeTransport, clock: FakeClock, tmp_path: Path
) -> None:
    """An upload that fails with 502 is not blindly sent again: the caller checks first."""
    path = tmp_path / "image.iso"
    path.write_bytes(b"iso")
    route = router.post(URL).mock(return_value=httpx.Response(502))
    assert (await transport.upload_file(upload_request(3), path)).status == 502
    assert route.call_count == 1
    assert clock.sleeps == []


async def test_upload_file_raises_unavailable_on_timeout(
    router: respx.Router, transport: ForgeTransport, tmp_path: Path
) -> None:
    """A timeout during an upload becomes `ForgeUnavailable` at once."""
    path = tmp_path / "image.iso"
    path.write_bytes(b"iso")
    router.post(URL).mock(side_effect=httpx.WriteTimeout("slow"))
    with pytest.raises(ForgeUnavailable, match="did not answer in time"):
        await transport.upload_file(upload_request(3), path)


async def test_upload_file_resends_the_whole_file_after_a_rate_limit(
    router: respx.Router, transport: ForgeTransport, clock: FakeClock, tmp_path: Path
) -> None:
    """A 429 refused the body, so the file is streamed again from its start."""
    path = tmp_path / "image.iso"
    path.write_bytes(b"complete")
    route = router.post(URL).mock(
        side_effect=[httpx.Response(429, headers={"Retry-After": "3"}), httpx.Response(201)]
    )
    assert (await transport.upload_file(upload_request(8), path)).status == 201
    assert [call.request.content for call in route.calls] == [b"complete", b"complete"]
    assert clock.sleeps == [3.0]


async def test_upload_file_fails_when_the_file_shrinks(
    router: respx.Router, http: httpx.AsyncClient, clock: FakeClock, tmp_path: Path
) -> None:
    """A file truncated after its size was taken fails the upload with a `ForgeError`."""
    path = tmp_path / "image.iso"
    path.write_bytes(b"0123456789")

    async def shrinking_sleep(seconds: float) -> None:
        path.write_bytes(b"01234")
        await clock.sleep(seconds)

    router.post(URL).mock(side_effect=[httpx.Response(429, headers={"Retry-After": "1"})])
    transport = ForgeTransport(http, sleep=shrinking_sleep, clock=clock)
    with pytest.raises(ForgeError, match="changed size"):
        await transport.upload_file(upload_request(10), path)


def test_forge_request_repr_redacts_credentials() -> None:
    """Printing a request shows neither the token nor the URL's query string."""
    request = ForgeRequest("GET", f"{URL}?token=abc", headers={"Authorization": f"Bearer {TOKEN}"})
    text = repr(request)
    assert TOKEN not in text
    assert "token=abc" not in text
    assert "<redacted>" in text


async def test_send_stops_after_too_many_redirects(
    router: respx.Router, transport: ForgeTransport
) -> None:
    """A redirect loop ends in a `ForgeError` naming the last hop without its query."""
    router.get(URL).mock(
        return_value=httpx.Response(302, headers={"Location": f"{URL}?sig=secret"})
    )
    with pytest.raises(ForgeError, match="more than 5 redirects") as caught:
        await transport.send(get())
    assert "sig=secret" not in str(caught.value)


async def test_send_translates_undecodable_bodies_without_retrying(
    router: respx.Router, transport: ForgeTransport, clock: FakeClock
) -> None:
    """A body that claims gzip but is not raises `MalformedResponse` chained to httpx's."""

    async def not_gzip() -> AsyncIterator[bytes]:
        yield b"plain"

    router.get(URL).mock(
        return_value=httpx.Response(200, headers={"Content-Encoding": "gzip"}, content=not_gzip())
    )
    with pytest.raises(MalformedResponse) as caught:
        await transport.send(get())
    assert isinstance(caught.value.__cause__, httpx.DecodingError)
    assert clock.sleeps == []


def create(url: str = URL) -> ForgeRequest:
    """A POST that creates something each time it arrives (not idempotent)."""
    return ForgeRequest(
        "POST", url, json={"tag_name": "v1"}, action="create the thing", idempotent=False
    )


async def test_send_returns_a_5xx_to_a_create_without_sending_it_again(
    router: respx.Router, transport: ForgeTransport, clock: FakeClock
) -> None:
    """A create answered 502 may have been stored: one attempt, the 502 is the answer."""
    route = router.post(URL).mock(return_value=httpx.Response(502))
    assert (await transport.send(create())).status == 502
    assert route.call_count == 1
    assert clock.sleeps == []


async def test_send_raises_for_a_create_whose_answer_was_lost(
    router: respx.Router, transport: ForgeTransport, clock: FakeClock
) -> None:
    """A create whose connection dropped after sending is not sent again."""
    route = router.post(URL).mock(side_effect=httpx.ReadError("connection reset"))
    with pytest.raises(ForgeUnavailable, match="create the thing"):
        await transport.send(create())
    assert route.call_count == 1


async def test_send_retries_a_create_that_never_reached_the_forge(
    router: respx.Router, transport: ForgeTransport, clock: FakeClock
) -> None:
    """A refused connection or a rate limit means the forge did nothing: retried."""
    route = router.post(URL).mock(
        side_effect=[
            httpx.ConnectError("refused"),
            httpx.Response(429, headers={"Retry-After": "3"}),
            httpx.Response(201, json={}),
        ]
    )
    assert (await transport.send(create())).status == 201
    assert route.call_count == 3
    assert clock.sleeps == [1.0, 3.0]

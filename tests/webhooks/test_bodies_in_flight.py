"""Bodies in flight, over real sockets: 200 slow senders of large bodies get 503, not memory.

A real uvicorn server runs the intake app on 127.0.0.1 in a thread; clients are raw
sockets that declare a large body, send a little of it and wait. The budget admits as
many as fit; every other one is answered 503 with `Retry-After` without its body being
read, and a body that does not finish in time is answered 408. (What this costs in
memory is measured by bench/bodies_bench.py, not asserted here.)
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import uvicorn
from pydantic import SecretStr

from tests.e2e.conftest import free_port
from tests.webhooks.fakes import MemoryStore
from tests.webhooks.samples import GITHUB_SECRET
from webhooks.app import create_app
from webhooks.build import Forge
from webhooks.config import RepoRule, WebhookConfig

MIB = 1024 * 1024
CLIENTS = 200
CONFIG = WebhookConfig(
    public_url="http://127.0.0.1",
    repos=(RepoRule(Forge.GITHUB, "o/r"),),
    github_secret=SecretStr(GITHUB_SECRET),
    max_body_bytes=MIB,
    max_bodies_in_flight_bytes=2 * MIB,
    body_seconds=3.0,
)


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    """A real uvicorn server with the intake app, in a thread, for the module."""
    store = MemoryStore()
    app = create_app(CONFIG, sink=store, catalog=store, clock=lambda: datetime.now(UTC))
    chosen = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=chosen, log_config=None, access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise AssertionError("the server did not start")
        threading.Event().wait(0.05)
    yield chosen
    server.should_exit = True
    thread.join(timeout=30)


def _head(length: int) -> bytes:
    return (
        "POST /webhooks/github HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Content-Type: application/json\r\nX-GitHub-Event: push\r\n"
        "X-GitHub-Delivery: d\r\nX-Hub-Signature-256: sha256=00\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


async def _slow_sender(port: int, release: asyncio.Event) -> tuple[bytes, bytes]:
    """Declare 1 MiB, send 64 KiB, wait for `release` unless answered; the status, headers."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(_head(MIB) + b"x" * 65536)
        await writer.drain()
        answer = asyncio.ensure_future(reader.readuntil(b"\r\n\r\n"))
        waiting = asyncio.ensure_future(release.wait())
        await asyncio.wait({answer, waiting}, return_when=asyncio.FIRST_COMPLETED)
        if not answer.done():
            writer.write(b"x" * (MIB - 65536))  # the rest: the body is complete
            await writer.drain()
        waiting.cancel()
        head = await asyncio.wait_for(answer, timeout=60)
    finally:
        writer.close()
    status, _, headers = head.partition(b"\r\n")
    return status, headers


@pytest.mark.anyio
async def test_slow_senders_past_the_budget_get_503_with_retry_after(port: int) -> None:
    """Of 200 slow 1 MiB deliveries against a 2 MiB budget, 2 are read, 198 get 503 unread."""
    release = asyncio.Event()
    senders = [asyncio.ensure_future(_slow_sender(port, release)) for _ in range(CLIENTS)]
    refused = 0
    while refused < CLIENTS - 2:  # the refused answer at once, the admitted wait
        done = [s for s in senders if s.done()]
        refused = len(done)
        assert all(s.result()[0] == b"HTTP/1.1 503 Service Unavailable" for s in done)
        await asyncio.sleep(0.05)
    release.set()
    answers = await asyncio.gather(*senders)
    statuses = sorted(status for status, _ in answers)
    assert statuses.count(b"HTTP/1.1 503 Service Unavailable") == CLIENTS - 2
    # The two admitted were read whole and judged (401: the signature is a dummy), or,
    # on a machine too busy to refuse 198 others within body_seconds, timed out (408).
    admitted = [s for s in statuses if not s.endswith(b"503 Service Unavailable")]
    assert sorted(s[9:12] for s in admitted) in ([b"401", b"401"], [b"401", b"408"], [b"408"] * 2)
    assert all(b"retry-after: 5" in h.lower() for s, h in answers if s.endswith(b"503"))


@pytest.mark.anyio
async def test_a_body_that_stalls_is_answered_408_and_frees_its_share(port: int) -> None:
    """A sender that stops halfway gets 408 after body_seconds; the next one is read."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(_head(MIB) + b"x" * 1000)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=60)
    finally:
        writer.close()
    assert head.startswith(b"HTTP/1.1 408 ")
    status, _ = await _slow_sender(port, asyncio.Event())
    assert status != b"HTTP/1.1 503 Service Unavailable"

"""What an unauthenticated sender costs the intake: refused before a byte of body is read.

Driven at the ASGI level, counting the `receive` calls the app makes: a body that is
never asked for is never buffered.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr
from starlette.types import Message, Scope

from tests.webhooks.fakes import MemoryStore
from tests.webhooks.samples import (
    GITHUB_SECRET,
    GITLAB_SIGNING_KEY,
    GITLAB_TOKEN,
    github_signed,
    gitlab_signed,
)
from webhooks.app import create_app
from webhooks.body import BodyBudget
from webhooks.build import Forge
from webhooks.config import RepoRule, WebhookConfig
from webhooks.metrics import DeliveryMetrics
from webhooks.state import AppState

RECEIVED = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
RULES = (
    RepoRule(Forge.GITHUB, "Codertocat/Hello-World", branches=("master",)),
    RepoRule(Forge.GITLAB, "mike/diaspora", branches=("master",)),
)
TOKEN_ONLY = WebhookConfig(
    public_url="https://ci.example.org",
    repos=RULES,
    github_secret=SecretStr(GITHUB_SECRET),
    gitlab_token=SecretStr(GITLAB_TOKEN),
)
SIGNING_ONLY = WebhookConfig(
    public_url="https://ci.example.org",
    repos=RULES,
    gitlab_signing_token=SecretStr(GITLAB_SIGNING_KEY),
)


async def _post(
    config: WebhookConfig, path: str, headers: dict[str, str]
) -> tuple[int, int, MemoryStore]:
    """POST to `path` with a body that never ends; return (status, receive calls, store)."""
    store = MemoryStore()
    app = create_app(config, sink=store, catalog=store, clock=lambda: RECEIVED)
    pulled = 0

    async def receive() -> Message:
        nonlocal pulled
        pulled += 1
        return {"type": "http.request", "body": b"x" * 16 * 1024, "more_body": True}

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(name.lower().encode(), value.encode()) for name, value in headers.items()],
        "client": ("127.0.0.1", 40000),
        "server": ("testserver", 80),
        "state": AppState(
            config=config,
            sink=store,
            catalog=store,
            logs=None,
            clock=lambda: RECEIVED,
            deliveries=DeliveryMetrics(CollectorRegistry()),
            bodies=BodyBudget(config.max_bodies_in_flight_bytes),
        ),
    }
    await app(scope, receive, send)
    return sent[0]["status"], pulled, store


@pytest.mark.anyio
@pytest.mark.parametrize("token", [None, "wrong-token-of-enough-length"])
async def test_gitlab_delivery_without_its_token_is_401_before_the_body(
    token: str | None,
) -> None:
    """A missing or wrong `X-Gitlab-Token` is refused without reading any of the body."""
    headers, _ = gitlab_signed("push", timestamp=int(RECEIVED.timestamp()), token=token, key=None)
    status, pulled, store = await _post(TOKEN_ONLY, "/webhooks/gitlab", headers)
    assert (status, pulled) == (401, 0)
    assert store.records == {}


@pytest.mark.anyio
async def test_gitlab_delivery_without_signature_headers_is_401_before_the_body() -> None:
    """With a signing token, a delivery lacking `webhook-signature` is refused unread."""
    headers, _ = gitlab_signed("push", timestamp=int(RECEIVED.timestamp()), token=None, key=None)
    status, pulled, _ = await _post(SIGNING_ONLY, "/webhooks/gitlab", headers)
    assert (status, pulled) == (401, 0)


@pytest.mark.anyio
async def test_unsigned_github_delivery_is_401_before_the_body() -> None:
    """A GitHub delivery without `X-Hub-Signature-256` is refused unread."""
    headers, _ = github_signed("push_branch")
    del headers["x-hub-signature-256"]
    status, pulled, _ = await _post(TOKEN_ONLY, "/webhooks/github", headers)
    assert (status, pulled) == (401, 0)

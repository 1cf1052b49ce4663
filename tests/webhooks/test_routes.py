"""Tests for webhooks.routes through the app: answers, refusals, limits, the store."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from urllib.parse import quote_plus

import pytest
import structlog.testing
from prometheus_client import CollectorRegistry
from pydantic import SecretStr
from starlette.types import Message, Scope

from tests.webhooks.fakes import BrokenStore, MemoryStore
from tests.webhooks.samples import (
    GITHUB_SECRET,
    GITLAB_SIGNING_KEY,
    GITLAB_TOKEN,
    edited,
    github_signature,
    github_signed,
    gitlab_signed,
    load,
)
from tests.webhooks.testclient import TestClient
from webhooks.app import create_app
from webhooks.body import BodyBudget
from webhooks.build import BuildRecord, BuildState, Forge
from webhooks.config import RepoRule, WebhookConfig
from webhooks.metrics import DeliveryMetrics
from webhooks.state import AppState

RECEIVED = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
NOW = int(RECEIVED.timestamp())
CONFIG = WebhookConfig(
    public_url="https://ci.example.org/",
    repos=(
        RepoRule(Forge.GITHUB, "Codertocat/Hello-World", branches=("master",), release_tags=("*",)),
        RepoRule(Forge.GITLAB, "mike/diaspora", branches=("master",)),
    ),
    github_secret=SecretStr(GITHUB_SECRET),
    gitlab_token=SecretStr(GITLAB_TOKEN),
    gitlab_signing_token=SecretStr(GITLAB_SIGNING_KEY),
    max_body_bytes=64 * 1024,
)
UNCONFIGURED = WebhookConfig(public_url="https://ci.example.org", repos=CONFIG.repos)


def _client(config: WebhookConfig, store: MemoryStore | BrokenStore) -> TestClient:
    app = create_app(config, sink=store, catalog=store, clock=lambda: RECEIVED)
    return TestClient(app, raise_server_exceptions=False)


@pytest.fixture
def store() -> MemoryStore:
    """An empty in-memory job store."""
    return MemoryStore()


@pytest.fixture
def client(store: MemoryStore) -> Iterator[TestClient]:
    """A running app (lifespan entered) over the in-memory store."""
    with _client(CONFIG, store) as client:
        yield client


def test_github_push_is_accepted_after_storing(client: TestClient, store: MemoryStore) -> None:
    """A configured push is stored and answered 202 with the build's id and page."""
    headers, body = github_signed("push_branch")
    response = client.post("/webhooks/github", content=body, headers=headers)
    assert response.status_code == 202
    assert response.json() == {"build_id": 1, "url": "https://ci.example.org/builds/1"}
    assert store.records[1].request.delivery_id.endswith(headers["x-github-delivery"])


def test_github_redelivery_answers_duplicate(client: TestClient, store: MemoryStore) -> None:
    """A redelivery is answered 200 with the same build and stores nothing new."""
    headers, body = github_signed("push_branch")
    first = client.post("/webhooks/github", content=body, headers=headers)
    again = client.post("/webhooks/github", content=body, headers=headers)
    assert again.status_code == 200
    assert again.json() == {**first.json(), "duplicate": True}
    assert len(store.records) == 1


def test_github_push_and_pull_request_for_one_commit_share_a_build(
    client: TestClient, store: MemoryStore
) -> None:
    """A pull request update for a commit already built from a push reuses its build."""
    headers, push = github_signed("push_branch")
    pushed = json.loads(push)["head_commit"]["id"]
    pr_body = edited(load("github", "pull_request_synchronize")[1], pull_request__head__sha=pushed)
    first = client.post("/webhooks/github", content=push, headers=headers)
    pr_headers, pr_body = github_signed("pull_request_synchronize", pr_body)
    second = client.post("/webhooks/github", content=pr_body, headers=pr_headers)
    assert (first.status_code, second.status_code) == (202, 200)
    assert second.json()["build_id"] == first.json()["build_id"]


def test_github_ping_is_answered_and_ignored(client: TestClient, store: MemoryStore) -> None:
    """A ping is answered 200 with the reason and stores nothing."""
    headers, body = github_signed("ping")
    response = client.post("/webhooks/github", content=body, headers=headers)
    assert response.status_code == 200
    assert response.json()["ignored"].startswith("ping")
    assert store.records == {}


@pytest.mark.parametrize("case", ["push_tag_delete", "pull_request_closed", "ping_urlencoded"])
def test_github_ignored_deliveries_answer_200(
    client: TestClient, store: MemoryStore, case: str
) -> None:
    """Deliberately ignored deliveries are never answered 4xx."""
    headers, body = github_signed(case)
    response = client.post("/webhooks/github", content=body, headers=headers)
    assert response.status_code == 200
    assert set(response.json()) == {"ignored"}
    assert store.records == {}


def test_github_bad_signature_is_401_without_secret(client: TestClient, store: MemoryStore) -> None:
    """A wrong signature is 401; neither the answer nor the log holds secret or signature."""
    headers, body = github_signed("push_branch", secret="attacker-guess")
    with structlog.testing.capture_logs() as logs:
        response = client.post("/webhooks/github", content=body, headers=headers)
    assert response.status_code == 401
    assert "X-Hub-Signature-256" in response.json()["error"]
    exposed = response.text + repr(logs)
    assert GITHUB_SECRET not in exposed
    assert headers["x-hub-signature-256"][7:] not in exposed
    assert logs[0]["event"] == "request_refused"
    assert store.records == {}


def test_github_malformed_body_is_400(client: TestClient) -> None:
    """A correctly signed body that is not a push payload is 400."""
    headers, body = github_signed("push_branch", b'{"ref": 1}')
    response = client.post("/webhooks/github", content=body, headers=headers)
    assert response.status_code == 400
    assert "push payload" in response.json()["error"]


def test_github_other_media_type_is_415(client: TestClient) -> None:
    """A body that is neither JSON nor form-encoded is 415."""
    headers, body = github_signed("push_branch")
    response = client.post(
        "/webhooks/github", content=body, headers={**headers, "content-type": "text/plain"}
    )
    assert response.status_code == 415


def test_unconfigured_forges_are_404() -> None:
    """Without secrets both webhook endpoints answer 404, saying what to configure."""
    with _client(UNCONFIGURED, MemoryStore()) as client:
        headers, body = github_signed("push_branch")
        github_answer = client.post("/webhooks/github", content=body, headers=headers)
        headers, body = gitlab_signed("push", timestamp=NOW)
        gitlab_answer = client.post("/webhooks/gitlab", content=body, headers=headers)
    assert github_answer.status_code == gitlab_answer.status_code == 404
    assert "github.webhook_secret" in github_answer.json()["error"]
    assert "gitlab.webhook_secret" in gitlab_answer.json()["error"]


class _CountingBody:
    """A request body generator that records how many chunks were pulled."""

    def __init__(self, chunks: int, size: int) -> None:
        self.chunks = chunks
        self.size = size
        self.pulled = 0

    def __iter__(self) -> Iterator[bytes]:
        for _ in range(self.chunks):
            self.pulled += 1
            yield b"x" * self.size


def test_oversized_body_with_content_length_is_413_unread(client: TestClient) -> None:
    """A declared Content-Length over the cap is refused before any of the body is read."""
    body = _CountingBody(chunks=100, size=1024)
    headers, _ = github_signed("push_branch")
    headers["content-length"] = str(100 * 1024)
    response = client.post("/webhooks/github", content=iter(body), headers=headers)
    assert response.status_code == 413
    assert "65536-byte limit" in response.json()["error"]
    assert body.pulled == 0


def _asgi_scope(store: MemoryStore, headers: dict[str, str]) -> Scope:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/webhooks/github",
        "raw_path": b"/webhooks/github",
        "root_path": "",
        "query_string": b"",
        "headers": [(name.encode(), value.encode()) for name, value in headers.items()],
        "client": ("127.0.0.1", 40000),
        "server": ("testserver", 80),
        # What the lifespan would have put there.
        "state": AppState(
            config=CONFIG,
            sink=store,
            catalog=store,
            logs=None,
            clock=lambda: RECEIVED,
            deliveries=DeliveryMetrics(CollectorRegistry()),
            bodies=BodyBudget(CONFIG.max_bodies_in_flight_bytes),
        ),
    }


@pytest.mark.anyio
async def test_oversized_chunked_body_is_413_early(store: MemoryStore) -> None:
    """A body without Content-Length is refused at the first chunk past the cap.

    Driven at the ASGI level because TestClient reads a request body whole before
    handing it over; here the client would send 16 KiB chunks forever.
    """
    app = create_app(CONFIG, sink=store, catalog=store, clock=lambda: RECEIVED)
    pulled = 0

    async def receive() -> Message:
        nonlocal pulled
        pulled += 1
        return {"type": "http.request", "body": b"x" * 16 * 1024, "more_body": True}

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    headers, _ = github_signed("push_branch")
    await app(_asgi_scope(store, headers), receive, send)
    assert sent[0]["type"] == "http.response.start"
    assert sent[0]["status"] == 413
    assert pulled == 5  # 4 x 16 KiB fill the 64 KiB cap; the 5th passes it
    assert store.records == {}


@pytest.mark.anyio
async def test_client_disconnect_mid_body_is_400_and_stores_nothing(store: MemoryStore) -> None:
    """A client that disconnects before its body is complete gets 400, not 500."""
    app = create_app(CONFIG, sink=store, catalog=store, clock=lambda: RECEIVED)
    headers, body = github_signed("push_branch")
    messages: list[Message] = [
        {"type": "http.request", "body": body[:100], "more_body": True},
        {"type": "http.disconnect"},
    ]

    async def receive() -> Message:
        return messages.pop(0)

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    await app(_asgi_scope(store, headers), receive, send)
    assert sent[0]["status"] == 400
    assert store.records == {}


def test_body_at_the_cap_is_read(client: TestClient) -> None:
    """A body of exactly the cap is read and judged on its signature."""
    body = b"x" * CONFIG.max_body_bytes
    headers, _ = github_signed("push_branch")
    response = client.post("/webhooks/github", content=body, headers=headers)
    assert response.status_code == 401


@pytest.mark.parametrize("length", ["abc", "-1", "1_0"])
def test_invalid_content_length_is_400(client: TestClient, length: str) -> None:
    """A Content-Length that is not a plain number is refused as malformed."""
    headers, body = github_signed("push_branch")
    response = client.post(
        "/webhooks/github", content=body, headers={**headers, "content-length": length}
    )
    assert response.status_code == 400


def test_content_length_of_thousands_of_digits_is_413(client: TestClient) -> None:
    """A Content-Length of 5,000 digits is refused as too large (it was once a 500)."""
    headers, body = github_signed("push_branch")
    response = client.post(
        "/webhooks/github", content=body, headers={**headers, "content-length": "9" * 5000}
    )
    assert response.status_code == 413


def test_gitlab_push_is_accepted(client: TestClient, store: MemoryStore) -> None:
    """A signed GitLab push to a configured branch is stored and answered 202."""
    headers, body = gitlab_signed("push", timestamp=NOW)
    response = client.post("/webhooks/gitlab", content=body, headers=headers)
    assert response.status_code == 202
    assert store.records[1].request.delivery_id == headers["idempotency-key"]


def test_gitlab_replayed_delivery_is_401(client: TestClient, store: MemoryStore) -> None:
    """A correctly signed GitLab delivery from an hour ago is refused."""
    headers, body = gitlab_signed("push", timestamp=NOW - 3600)
    response = client.post("/webhooks/gitlab", content=body, headers=headers)
    assert response.status_code == 401
    assert store.records == {}


@pytest.mark.parametrize("case", ["tag_push", "pipeline"])
def test_gitlab_ignored_deliveries_answer_200(client: TestClient, case: str) -> None:
    """An unconfigured project and an unbuilt event kind are answered 200."""
    headers, body = gitlab_signed(case, timestamp=NOW)
    response = client.post("/webhooks/gitlab", content=body, headers=headers)
    assert response.status_code == 200
    assert "ignored" in response.json()


def test_gitlab_form_body_is_415(client: TestClient) -> None:
    """GitLab deliveries must be JSON."""
    headers, body = gitlab_signed("push", timestamp=NOW)
    response = client.post(
        "/webhooks/gitlab",
        content=body,
        headers={**headers, "content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 415


def test_store_failure_is_503_and_logged() -> None:
    """When the store fails the delivery is answered 503, logged, and the app keeps serving."""
    broken = BrokenStore()
    headers, body = github_signed("push_branch")
    with _client(CONFIG, broken) as client, structlog.testing.capture_logs() as logs:
        first = client.post("/webhooks/github", content=body, headers=headers)
        second = client.post("/webhooks/github", content=body, headers=headers)
    assert first.status_code == second.status_code == 503
    assert "redeliver" in first.json()["error"]
    assert broken.calls == 2
    failures = [entry for entry in logs if entry["event"] == "build_store_failed"]
    assert failures[0]["log_level"] == "error"
    assert failures[0]["repo"] == "Codertocat/Hello-World"
    assert "No space left" not in first.text


def test_api_build_returns_stored_record(client: TestClient, store: MemoryStore) -> None:
    """GET /api/builds/{id} returns the build's state, times and request as JSON."""
    headers, body = github_signed("pull_request_fork")
    build_id = client.post("/webhooks/github", content=body, headers=headers).json()["build_id"]
    record = store.records[build_id]
    store.records[build_id] = BuildRecord(
        id=record.id,
        request=record.request,
        state=BuildState.RUNNING,
        created_at=record.created_at,
        started_at=datetime(2026, 1, 1, 0, 1, tzinfo=UTC),
        detail="building",
    )
    answer = client.get(f"/api/builds/{build_id}").json()
    assert answer["id"] == build_id
    assert (answer["state"], answer["detail"]) == ("running", "building")
    assert answer["created_at"] == "2026-01-01T00:00:00+00:00"
    assert answer["started_at"] == "2026-01-01T00:01:00+00:00"
    assert answer["finished_at"] is None
    request = answer["request"]
    assert request["kind"] == "pull_request"
    assert request["trusted"] is False
    assert request["source_repo"] == "forker/Hello-World"
    assert request["commit_sha"] == record.request.commit_sha
    assert request["commit_time"] == record.request.commit_time.isoformat()


@pytest.mark.parametrize("path", ["/api/builds/999", "/api/builds/abc", f"/api/builds/{2**70}"])
def test_api_unknown_build_is_404_json(client: TestClient, path: str) -> None:
    """Unknown, non-integer and out-of-range build ids are 404 with a JSON error."""
    response = client.get(path)
    assert response.status_code == 404
    assert "error" in response.json()


def test_api_store_failure_is_503() -> None:
    """When the store cannot be read the build API answers 503."""
    with _client(CONFIG, BrokenStore()) as client:
        response = client.get("/api/builds/1")
    assert response.status_code == 503


def test_wrong_method_is_405_json(client: TestClient) -> None:
    """GET on a webhook endpoint is 405 with a JSON error and an Allow header."""
    response = client.get("/webhooks/github")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert "error" in response.json()


def test_form_encoded_github_push_is_accepted(client: TestClient) -> None:
    """A form-encoded push, signed over the form bytes, is accepted."""
    headers, body = load("github", "push_branch")
    form = b"payload=" + quote_plus(body.decode()).encode()
    headers.update(
        {
            "content-type": "application/x-www-form-urlencoded",
            "x-hub-signature-256": github_signature(form),
        }
    )
    assert client.post("/webhooks/github", content=form, headers=headers).status_code == 202

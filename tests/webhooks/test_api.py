"""Tests for the JSON API: listing, and the admin-only cancel and retry."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from pydantic import SecretStr

from tests.runner.store.samples import make_request
from tests.webhooks.testclient import TestClient
from tests.webhooks.webfakes import T0, WebStore
from webhooks.api import check_admin, parse_listing
from webhooks.app import create_app
from webhooks.build import BuildState, Release, ReleaseFile, ReleaseState
from webhooks.config import WebhookConfig
from webhooks.exceptions import AdminDisabled, AdminTokenRequired, InvalidParameter

CONFIG = WebhookConfig(public_url="https://ci.example.org/", repos=())
TOKEN = "s3cret-admin-token"
AUTH = {"authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def store() -> WebStore:
    """A store with a succeeded (1), running (2) and queued (3) build."""
    store = WebStore()
    store.add(make_request(repo="a/one"), state=BuildState.SUCCEEDED)
    store.add(make_request(repo="b/two"), state=BuildState.RUNNING)
    store.add(make_request(repo="a/one"))
    return store


def _client(store: WebStore, token: str | None) -> TestClient:
    app = create_app(
        CONFIG,
        sink=store,
        catalog=store,
        browser=store,
        control=store,
        admin_token=SecretStr(token) if token is not None else None,
        clock=lambda: T0,
    )
    return TestClient(app)


@pytest.fixture
def client(store: WebStore) -> Iterator[TestClient]:
    """A client of the app with an admin token configured."""
    with _client(store, TOKEN) as client:
        yield client


def test_api_builds_lists_newest_first(client: TestClient) -> None:
    """`GET /api/builds` lists builds newest first, as the detail less boot tests and trust."""
    body = client.get("/api/builds").json()
    assert [b["id"] for b in body["builds"]] == [3, 2, 1]
    assert body["next"] is None
    detail = client.get("/api/builds/1").json()
    assert detail.pop("trust") is None  # no artifact store here: nothing signed or rebuilt
    assert {**body["builds"][2], "boot_tests": []} == detail
    assert body["builds"][2]["state"] == "succeeded"


def test_api_builds_filters(client: TestClient) -> None:
    """`repo` and `state` narrow the list."""
    assert [b["id"] for b in client.get("/api/builds?repo=a/one").json()["builds"]] == [3, 1]
    listed = client.get("/api/builds?repo=a/one&state=queued").json()["builds"]
    assert [b["id"] for b in listed] == [3]


def test_api_builds_paginates(client: TestClient, store: WebStore) -> None:
    """A full page links the next one; following `next` walks every build once."""
    for _ in range(7):
        store.add()
    seen: list[int] = []
    url: str | None = "/api/builds?limit=4"
    pages = 0
    while url is not None:
        body = client.get(url).json()
        seen.extend(b["id"] for b in body["builds"])
        url = body["next"]
        pages += 1
    assert seen == list(range(10, 0, -1))
    assert pages == 3
    assert client.get("/api/builds?limit=4").json()["next"] == "/api/builds?before=7&limit=4"


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=101",
        "limit=x",
        "before=0",
        "before=-1",
        "state=nope",
        "limit=" + "1" * 5000,  # past Python's int() digit limit: once a 500
        "before=" + "0" * 5000 + "1",
    ],
)
def test_api_builds_refuses_bad_parameters(client: TestClient, query: str) -> None:
    """Out-of-range, malformed or thousands-of-digits parameters are 400 naming them."""
    response = client.get(f"/api/builds?{query}")
    assert response.status_code == 400
    assert query.split("=", maxsplit=1)[0] in response.json()["error"]


def test_api_build_detail_unknown_is_404(client: TestClient) -> None:
    """An unknown build is 404."""
    assert client.get("/api/builds/77").status_code == 404


def test_api_build_detail_shows_a_release_retrying_and_its_progress(
    client: TestClient, store: WebStore
) -> None:
    """A tag build's release: state, failed attempts, next attempt, error and files so far."""
    files = (ReleaseFile("a.iso", 3, "ab" * 32, uploaded=True), ReleaseFile("b2sums", 9, "cd"))
    retry_at = T0 + timedelta(minutes=2)
    waiting = Release(
        "v1", ReleaseState.RETRYING, T0, 3, retry_at, "the forge answered 504", "", files
    )
    built = store.add(state=BuildState.SUCCEEDED, release=waiting)
    assert client.get(f"/api/builds/{built.id}").json()["release"] == {
        "tag": "v1",
        "state": "retrying",
        "attempts": 3,
        "refusals": 0,
        "next_attempt_at": "2025-03-01T12:02:00+00:00",
        "last_error": "the forge answered 504",
        "url": None,
        "updated_at": "2025-03-01T12:00:00+00:00",
        "files": [
            {"name": "a.iso", "size": 3, "sha256": "ab" * 32, "uploaded": True},
            {"name": "b2sums", "size": 9, "sha256": "cd", "uploaded": False},
        ],
    }
    assert client.get("/api/builds/1").json()["release"] is None


@pytest.mark.parametrize("action", ["cancel", "retry", "publish"])
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"authorization": "Bearer wrong"},
        {"authorization": f"Basic {TOKEN}"},
        {"authorization": TOKEN},
        {"authorization": f"Bearer {TOKEN}x"},
        {"authorization": "Bearer "},
    ],
)
def test_admin_calls_need_the_token(
    client: TestClient, store: WebStore, action: str, headers: dict[str, str]
) -> None:
    """Without the right bearer token, admin calls are 401 and change nothing."""
    response = client.post(f"/api/builds/2/{action}", headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert TOKEN not in response.text
    assert store.records[2].state is BuildState.RUNNING
    assert len(store.records) == 3


@pytest.mark.parametrize("action", ["cancel", "retry", "publish"])
def test_admin_calls_without_a_configured_token_are_403(store: WebStore, action: str) -> None:
    """With no admin token configured, the admin API is off for everyone."""
    with _client(store, None) as client:
        response = client.post(f"/api/builds/2/{action}", headers=AUTH)
    assert response.status_code == 403
    assert "no admin token configured" in response.json()["error"]


def test_cancel_running_build(client: TestClient, store: WebStore) -> None:
    """Cancelling a running build answers the cancelled build."""
    response = client.post("/api/builds/2/cancel", headers=AUTH)
    assert response.status_code == 200
    assert response.json()["state"] == "cancelled"
    assert store.records[2].state is BuildState.CANCELLED


def test_cancel_finished_build_is_409(client: TestClient) -> None:
    """A finished build cannot be cancelled."""
    response = client.post("/api/builds/1/cancel", headers=AUTH)
    assert response.status_code == 409
    assert "succeeded" in response.json()["error"]


@pytest.mark.parametrize("action", ["cancel", "retry", "publish"])
def test_admin_call_on_unknown_build_is_404(client: TestClient, action: str) -> None:
    """Cancel, retry and publish of an unknown build are 404."""
    assert client.post(f"/api/builds/99/{action}", headers=AUTH).status_code == 404


def test_retry_finished_build_queues_a_new_one(client: TestClient, store: WebStore) -> None:
    """Retry answers 202 with the new build's id and page."""
    response = client.post("/api/builds/1/retry", headers=AUTH)
    assert response.status_code == 202
    assert response.json() == {"build_id": 4, "url": "https://ci.example.org/builds/4"}
    assert store.records[4].request == store.records[1].request


def test_publish_queues_a_succeeded_builds_release_again(
    client: TestClient, store: WebStore
) -> None:
    """Publish answers 202 with the build, its release queued; a running build is 409."""
    response = client.post("/api/builds/1/publish", headers=AUTH)
    assert response.status_code == 202
    assert response.json()["release"]["state"] == "queued"
    assert client.post("/api/builds/2/publish", headers=AUTH).status_code == 409
    assert len(store.records) == 3  # nothing rebuilt


def test_retry_unfinished_build_is_409(client: TestClient) -> None:
    """A build that may still run cannot be retried."""
    assert client.post("/api/builds/2/retry", headers=AUTH).status_code == 409


def test_admin_calls_without_control_are_403(store: WebStore) -> None:
    """An app given no build control refuses admin calls even with the token."""
    app = create_app(CONFIG, sink=store, catalog=store, admin_token=SecretStr(TOKEN))
    with TestClient(app) as client:
        assert client.post("/api/builds/2/cancel", headers=AUTH).status_code == 403


def test_check_admin_is_strict() -> None:
    """Only `Bearer <token>` passes; the scheme is case-insensitive, the token is not."""
    token = SecretStr("Tok")
    check_admin("Bearer Tok", token)
    check_admin("bearer Tok", token)
    for header in (None, "", "Bearer tok", "Bearer", "Token Tok", "BearerTok"):
        with pytest.raises(AdminTokenRequired):
            check_admin(header, token)
    with pytest.raises(AdminDisabled):
        check_admin("Bearer Tok", None)


def test_parse_listing_defaults_and_empty_values() -> None:
    """Empty parameters count as absent; the default limit applies."""
    query = parse_listing({"repo": " ", "state": "", "before": "", "limit": ""})
    assert (query.repo, query.state, query.before, query.limit) == (None, None, None, 25)
    with pytest.raises(InvalidParameter, match="repo"):
        parse_listing({"repo": "x" * 256})


@pytest.mark.parametrize("configured", ["", "\n", "   "])
@pytest.mark.parametrize("header", ["Bearer ", "Bearer", "Bearer \n", "bearer   "])
def test_check_admin_never_matches_an_empty_bearer(configured: str, header: str) -> None:
    """A blank configured token disables admin calls; an empty bearer never passes."""
    with pytest.raises(AdminDisabled):
        check_admin(header, SecretStr(configured))

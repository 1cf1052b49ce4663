"""Property tests for webhooks.routes: no body or header set makes the app answer 5xx."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from tests.webhooks.fakes import MemoryStore
from tests.webhooks.samples import (
    GITHUB_SECRET,
    GITLAB_SIGNING_KEY,
    GITLAB_TOKEN,
    github_signature,
    load,
    standard_signature,
)
from tests.webhooks.testclient import TestClient
from webhooks.app import create_app
from webhooks.build import Forge
from webhooks.config import RepoRule, WebhookConfig

RECEIVED = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
NOW = int(RECEIVED.timestamp())
CONFIG = WebhookConfig(
    public_url="https://ci.example.org",
    repos=(
        RepoRule(Forge.GITHUB, "Codertocat/Hello-World", branches=("*",), release_tags=("*",)),
        RepoRule(Forge.GITLAB, "mike/diaspora", branches=("*",), release_tags=("*",)),
        RepoRule(Forge.GITLAB, "jsmith/example", release_tags=("*",)),
        RepoRule(Forge.GITLAB, "awesome_space/awesome_project"),
    ),
    github_secret=SecretStr(GITHUB_SECRET),
    gitlab_token=SecretStr(GITLAB_TOKEN),
    gitlab_signing_token=SecretStr(GITLAB_SIGNING_KEY),
    max_body_bytes=32 * 1024,
)
ANSWER_KEYS = ({"error"}, {"ignored"}, {"build_id", "url"}, {"build_id", "url", "duplicate"})
PROPERTY_SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

HEADER_NAMES = [
    "content-type",
    "x-github-event",
    "x-github-delivery",
    "x-github-hook-id",
    "x-hub-signature-256",
    "x-hub-signature",
    "x-gitlab-token",
    "x-gitlab-event",
    "idempotency-key",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
]
header_values = st.binary(max_size=80).map(
    lambda raw: bytes(b for b in raw if b >= 0x20 and b != 0x7F)
) | st.sampled_from(
    [b"application/json", b"application/x-www-form-urlencoded", b"push", b"pull_request", b""]
)
header_sets = st.dictionaries(st.sampled_from(HEADER_NAMES), header_values, max_size=8)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
GITHUB_CASES = ["push_branch", "push_tag", "pull_request_opened", "pull_request_fork", "ping"]
GITLAB_CASES = ["push", "tag_push", "merge_request_open", "pipeline"]


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    """One running app for all examples; its store fills up as examples are accepted."""
    store = MemoryStore()
    app = create_app(CONFIG, sink=store, catalog=store, clock=lambda: RECEIVED)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def _assert_answered(response: Any) -> None:
    assert response.status_code < 500, response.text
    assert set(response.json()) in ANSWER_KEYS


def _mutated(body: bytes, path: list[str], value: object) -> bytes:
    # Replace one field (at any depth along `path`) of a real payload with any JSON.
    data = json.loads(body)
    target = data
    for part in path[:-1]:
        if not isinstance(target, dict) or not isinstance(target.get(part), dict):
            break
        target = target[part]
    if isinstance(target, dict):
        target[path[-1]] = value
    return json.dumps(data).encode()


paths = st.lists(
    st.sampled_from(
        [
            "ref",
            "after",
            "deleted",
            "head_commit",
            "id",
            "timestamp",
            "repository",
            "full_name",
            "pull_request",
            "head",
            "base",
            "repo",
            "sha",
            "number",
            "action",
            "updated_at",
            "sender",
            "object_kind",
            "checkout_sha",
            "project",
            "commits",
            "object_attributes",
            "last_commit",
            "oldrev",
            "iid",
            "source_project_id",
            "path_with_namespace",
            "user",
        ]
    ),
    min_size=1,
    max_size=3,
)


@PROPERTY_SETTINGS
@given(
    body=st.binary(max_size=4096), headers=header_sets, forge=st.sampled_from(["github", "gitlab"])
)
def test_any_unsigned_delivery_is_answered_below_500(
    client: TestClient, body: bytes, headers: dict[str, bytes], forge: str
) -> None:
    """Arbitrary bodies under arbitrary webhook headers never produce a 5xx."""
    _assert_answered(client.post(f"/webhooks/{forge}", content=body, headers=headers))


@PROPERTY_SETTINGS
@given(
    body=st.binary(max_size=4096) | json_values.map(lambda value: json.dumps(value).encode()),
    event=st.sampled_from(["push", "pull_request", "ping", "issues"]),
    content_type=st.sampled_from(["application/json", "application/x-www-form-urlencoded"]),
)
def test_any_signed_github_body_is_answered_below_500(
    client: TestClient, body: bytes, event: str, content_type: str
) -> None:
    """Correctly signed random GitHub bodies never produce a 5xx."""
    headers = {
        "content-type": content_type,
        "x-github-event": event,
        "x-github-delivery": "guid",
        "x-hub-signature-256": github_signature(body),
    }
    _assert_answered(client.post("/webhooks/github", content=body, headers=headers))


@PROPERTY_SETTINGS
@given(case=st.sampled_from(GITHUB_CASES), path=paths, value=json_values)
def test_any_mutated_github_sample_is_answered_below_500(
    client: TestClient, case: str, path: list[str], value: object
) -> None:
    """Real GitHub payloads with any field replaced by any JSON never produce a 5xx."""
    headers, body = load("github", case)
    body = _mutated(body, path, value)
    headers["x-hub-signature-256"] = github_signature(body)
    _assert_answered(client.post("/webhooks/github", content=body, headers=headers))


def _gitlab_headers(body: bytes, delivery: str) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "x-gitlab-token": GITLAB_TOKEN,
        "idempotency-key": delivery,
        "webhook-id": delivery,
        "webhook-timestamp": str(NOW),
        "webhook-signature": standard_signature(
            body, key=GITLAB_SIGNING_KEY, webhook_id=delivery, timestamp=NOW
        ),
    }


@PROPERTY_SETTINGS
@given(body=st.binary(max_size=4096) | json_values.map(lambda value: json.dumps(value).encode()))
def test_any_signed_gitlab_body_is_answered_below_500(client: TestClient, body: bytes) -> None:
    """Correctly signed random GitLab bodies never produce a 5xx."""
    headers = _gitlab_headers(body, "delivery-1")
    _assert_answered(client.post("/webhooks/gitlab", content=body, headers=headers))


@PROPERTY_SETTINGS
@given(case=st.sampled_from(GITLAB_CASES), path=paths, value=json_values)
def test_any_mutated_gitlab_sample_is_answered_below_500(
    client: TestClient, case: str, path: list[str], value: object
) -> None:
    """Real GitLab payloads with any field replaced by any JSON never produce a 5xx."""
    _, body = load("gitlab", case)
    body = _mutated(body, path, value)
    _assert_answered(
        client.post("/webhooks/gitlab", content=body, headers=_gitlab_headers(body, "d-2"))
    )

"""Tests for `GET /healthz`, `GET /readyz` and `GET /metrics`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, Gauge
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from tests.webhooks.fakes import BrokenStore
from tests.webhooks.samples import GITHUB_SECRET, github_signed
from tests.webhooks.testclient import TestClient
from tests.webhooks.webfakes import T0, FixedProbe, WebStore
from webhooks.app import create_app
from webhooks.build import Forge, ReadinessCheck
from webhooks.config import RepoRule, WebhookConfig
from webhooks.health import readiness

CONFIG = WebhookConfig(
    public_url="https://ci.example.org",
    repos=(RepoRule(Forge.GITHUB, "Codertocat/Hello-World", branches=("master",)),),
    github_secret=SecretStr(GITHUB_SECRET),
)


@pytest.fixture
def registry() -> CollectorRegistry:
    """The process's registry, shared with the runner's metrics."""
    return CollectorRegistry()


@pytest.fixture
def client(registry: CollectorRegistry) -> Iterator[TestClient]:
    """A client of the app with a passing readiness probe."""
    store = WebStore()
    probe = FixedProbe(ReadinessCheck("store", True, "3 builds stored"))
    app = create_app(
        CONFIG, sink=store, catalog=store, readiness=probe, registry=registry, clock=lambda: T0
    )
    with TestClient(app) as client:
        yield client


def _deliveries(text: str) -> dict[tuple[str, str], float]:
    counts = {}
    for family in text_string_to_metric_families(text):
        if family.name == "isorunner_webhook_deliveries":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    counts[sample.labels["forge"], sample.labels["outcome"]] = sample.value
    return counts


def test_healthz_says_ok(client: TestClient) -> None:
    """The liveness check only needs the process to answer."""
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_passes_when_every_check_passes(client: TestClient) -> None:
    """Ready: 200 and each check listed."""
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ready",
        "checks": [{"name": "store", "ok": True, "detail": "3 builds stored"}],
    }


def test_readyz_is_503_and_says_what_is_wrong() -> None:
    """Any failed check makes 503, with the failing check's detail in the body."""
    store = WebStore()
    probe = FixedProbe(
        ReadinessCheck("store", True, "ok"),
        ReadinessCheck("sandbox_base", False, "/var/lib/isorunner/sandbox/base is missing"),
    )
    app = create_app(CONFIG, sink=store, catalog=store, readiness=probe)
    with TestClient(app) as client:
        response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "not ready"
    assert body["checks"][1] == {
        "name": "sandbox_base",
        "ok": False,
        "detail": "/var/lib/isorunner/sandbox/base is missing",
    }


def test_readiness_without_checks_is_ready() -> None:
    """With nothing to check, the service is ready."""
    assert readiness([]) == (200, {"status": "ready", "checks": []})


def test_metrics_counts_deliveries_by_forge_and_outcome(client: TestClient) -> None:
    """Accepted, duplicate, ignored and refused deliveries are each counted."""
    headers, body = github_signed("push_branch")
    assert client.post("/webhooks/github", content=body, headers=headers).status_code == 202
    assert client.post("/webhooks/github", content=body, headers=headers).status_code == 200
    bad = {**headers, "x-hub-signature-256": "sha256=" + "0" * 64}
    assert client.post("/webhooks/github", content=body, headers=bad).status_code == 401
    ping_headers, ping = github_signed("ping")
    assert client.post("/webhooks/github", content=ping, headers=ping_headers).status_code == 200
    assert client.post("/webhooks/gitlab", content=b"{}").status_code == 404
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    counts = _deliveries(response.text)
    assert counts["github", "accepted"] == 1
    assert counts["github", "duplicate"] == 1
    assert counts["github", "refused"] == 1
    assert counts["github", "ignored"] == 1
    assert counts["github", "error"] == 0
    assert counts["gitlab", "refused"] == 1
    assert len(counts) == 10  # every forge x outcome series exists from the start


def test_metrics_counts_store_failures_as_errors(registry: CollectorRegistry) -> None:
    """A delivery the store failed to record is counted as an error."""
    store = BrokenStore()
    app = create_app(CONFIG, sink=store, catalog=store, registry=registry)
    headers, body = github_signed("push_branch")
    with TestClient(app) as client:
        assert client.post("/webhooks/github", content=body, headers=headers).status_code == 503
        assert _deliveries(client.get("/metrics").text)["github", "error"] == 1


def test_metrics_renders_the_shared_registry_only(
    client: TestClient, registry: CollectorRegistry
) -> None:
    """Metrics the runner registers on the same registry are served; the global one is not used."""
    Gauge("isorunner_queue_depth", "Queued builds.", registry=registry).set(4)
    text = client.get("/metrics").text
    assert "isorunner_queue_depth 4.0" in text
    assert "python_gc_objects_collected_total" not in text  # a default-registry collector
    assert REGISTRY.get_sample_value("isorunner_webhook_deliveries_total") is None


def test_each_app_without_a_registry_gets_its_own() -> None:
    """Two apps built without a registry do not collide on metric names."""
    store = WebStore()
    create_app(CONFIG, sink=store, catalog=store)
    create_app(CONFIG, sink=store, catalog=store)

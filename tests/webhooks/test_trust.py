"""Tests for the signature and rebuild check on the pages, the API and `/signing-key.pub`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.webhooks.testclient import TestClient
from tests.webhooks.webfakes import T0, DirArtifacts, WebStore
from webhooks.app import create_app
from webhooks.artifacts import parse_trust
from webhooks.build import TRUST_FILE, BuildState, SigningKey, Trust
from webhooks.config import WebhookConfig

CONFIG = WebhookConfig(public_url="https://ci.example.org", repos=())
KEY = SigningKey(
    key_id="960144B06E434424",
    text="untrusted comment: minisign public key 960144B06E434424\n"
    "RWQkRENusEQBlgXXrXKNXm23r5JxFxhZoFj1S+43d8oHax3G7Rb40god\n",
)
DIFFERENT = {
    "signed_by": KEY.key_id,
    "reproducibility": "different",
    "differences": ["/arch/version (mtime)", "/x/<script>alert(1)</script> (content)"],
    "difference_count": 5,
}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Build 1's artifact directory with a trust file saying the rebuild differed."""
    folder = tmp_path / "artifacts" / "1"
    folder.mkdir(parents=True)
    (folder / "a.iso").write_bytes(b"iso")
    (folder / TRUST_FILE).write_text(json.dumps(DIFFERENT))
    return folder


def app_client(folder: Path, key: SigningKey | None) -> TestClient:
    """A client of an app with builds 1 (succeeded) and 2 (running)."""
    store = WebStore()
    store.add(state=BuildState.SUCCEEDED)
    store.add(state=BuildState.RUNNING)
    app = create_app(
        CONFIG,
        sink=store,
        catalog=store,
        browser=store,
        artifacts=DirArtifacts(folder.parent),
        clock=lambda: T0,
        signing_key=key,
    )
    return TestClient(app)


@pytest.fixture
def client(folder: Path) -> Iterator[TestClient]:
    """A client of an app that signs with `KEY`."""
    with app_client(folder, KEY) as client:
        yield client


def test_signing_key_is_served_as_text(client: TestClient) -> None:
    """`GET /signing-key.pub` answers the public key file, as minisign -p reads it."""
    response = client.get("/signing-key.pub")
    assert response.status_code == 200
    assert response.text == KEY.text
    assert response.headers["content-type"] == "text/plain; charset=utf-8"


def test_signing_key_is_404_when_nothing_is_signed(folder: Path) -> None:
    """Without a key the path says that this server signs nothing."""
    with app_client(folder, None) as client:
        response = client.get("/signing-key.pub")
    assert response.status_code == 404
    assert "signs nothing" in response.json()["error"]


def test_index_page_shows_the_signing_key(client: TestClient) -> None:
    """The build list names the key id and links the public key."""
    html = client.get("/").text
    assert f"minisign key <code>{KEY.key_id}</code>" in html
    assert '<a href="/signing-key.pub">/signing-key.pub</a>' in html


def test_build_page_shows_the_not_reproducible_mark_and_paths(client: TestClient) -> None:
    """A finished build's page shows its key, 'not reproducible' and each differing path."""
    html = client.get("/builds/1").text
    assert f"minisign key <code>{KEY.key_id}</code>" in html
    assert "not reproducible</span> a rebuild in a second fresh container differs in 5" in html
    assert "<li><code>/arch/version (mtime)</code></li>" in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script>alert(1)" not in html
    assert "and 3 more" in html


def test_running_build_page_shows_no_trust(client: TestClient) -> None:
    """A build still running has no trust section yet."""
    assert 'id="trust"' not in client.get("/builds/2").text


def test_api_build_carries_its_trust(client: TestClient) -> None:
    """`GET /api/builds/{id}` adds the signature and rebuild check; a running build's is null."""
    assert client.get("/api/builds/1").json()["trust"] == {
        "signed_by": KEY.key_id,
        "public_key_url": "/signing-key.pub",
        "reproducibility": "different",
        "differences": DIFFERENT["differences"],
        "difference_count": 5,
    }
    assert client.get("/api/builds/2").json()["trust"] is None


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b"[]",
        b'{"signed_by": "a b", "reproducibility": "identical", "differences": []}',
        b'{"signed_by": null, "reproducibility": "maybe", "differences": []}',
        b'{"signed_by": null, "reproducibility": "identical", "differences": "x"}',
    ],
)
def test_parse_trust_refuses_what_is_not_a_trust_file(data: bytes) -> None:
    """Malformed or odd trust files are ignored, never guessed at."""
    assert parse_trust(data) is None


def test_parse_trust_bounds_the_paths() -> None:
    """A trust file with many long paths keeps 200 of them, each cut to 400 characters."""
    data = json.dumps(
        {
            "signed_by": None,
            "reproducibility": "different",
            "differences": ["p" * 10_000] * 1000,
            "difference_count": 1000,
        }
    ).encode()
    trust = parse_trust(data)
    assert trust is not None
    assert len(trust.differences) == 200
    assert {len(p) for p in trust.differences} == {400}
    assert trust == Trust(None, "different", trust.differences, 1000)


def test_trust_file_is_not_an_artifact(client: TestClient) -> None:
    """The hidden trust file is neither listed on the page nor downloadable."""
    assert TRUST_FILE not in client.get("/builds/1").text
    assert client.get(f"/builds/1/artifacts/{TRUST_FILE}").status_code == 404

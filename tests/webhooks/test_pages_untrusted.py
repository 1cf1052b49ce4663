"""Builds from forks never look official: their page, their download path, their file name."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.runner.store.samples import make_request
from tests.webhooks.testclient import TestClient
from tests.webhooks.webfakes import T0, DirArtifacts, WebStore
from webhooks.app import create_app
from webhooks.build import BuildState, RefKind
from webhooks.config import WebhookConfig

CONFIG = WebhookConfig(public_url="https://ci.example.org", repos=())
ISO = "archlinux-2025.03.01-x86_64.iso"


@pytest.fixture
def store() -> WebStore:
    """A trusted build (1) and a build from a fork (2), both finished."""
    store = WebStore()
    store.add(make_request(), state=BuildState.SUCCEEDED)
    fork = make_request(
        kind=RefKind.PULL_REQUEST, pr_number=9, trusted=False, source_repo="mallory/profile"
    )
    store.add(fork, state=BuildState.SUCCEEDED)
    return store


@pytest.fixture
def client(store: WebStore, tmp_path: Path) -> Iterator[TestClient]:
    """The app, each build with an ISO and its sums in its artifact directory."""
    for build_id in (1, 2):
        folder = tmp_path / str(build_id)
        folder.mkdir()
        (folder / ISO).write_bytes(b"iso" * 100)
        (folder / "sha256sums").write_text(f"{'a' * 64}  {ISO}\n")
    app = create_app(
        CONFIG, sink=store, catalog=store, artifacts=DirArtifacts(tmp_path), clock=lambda: T0
    )
    with TestClient(app) as client:
        yield client


def test_a_fork_builds_page_says_untrusted_and_links_its_own_path(client: TestClient) -> None:
    """The page of a fork's build carries the warning and links /untrusted/ only."""
    html = client.get("/builds/2").text
    assert "Untrusted build." in html
    assert "Untrusted artifacts (from a fork)" in html
    assert f'href="/builds/2/untrusted/{ISO}"' in html
    assert "/builds/2/artifacts/" not in html


def test_a_trusted_builds_page_has_no_warning(client: TestClient) -> None:
    """The repository's own build links /artifacts/ and carries no warning."""
    html = client.get("/builds/1").text
    assert "Untrusted" not in html
    assert f'href="/builds/1/artifacts/{ISO}"' in html


def test_a_forks_file_downloads_only_as_untrusted(client: TestClient) -> None:
    """Under /untrusted/ it is saved as untrusted-<name> and says so; /artifacts/ is 404."""
    response = client.get(f"/builds/2/untrusted/{ISO}")
    assert response.status_code == 200
    assert response.headers["content-disposition"] == (
        f"attachment; filename*=UTF-8''untrusted-{ISO}"
    )
    assert response.headers["x-isorunner-trust"].startswith("untrusted")
    assert client.get(f"/builds/2/artifacts/{ISO}").status_code == 404


def test_a_trusted_file_never_downloads_as_untrusted(client: TestClient) -> None:
    """The repository's own files answer only under /artifacts/."""
    assert client.get(f"/builds/1/untrusted/{ISO}").status_code == 404
    assert "x-isorunner-trust" not in client.get(f"/builds/1/artifacts/{ISO}").headers

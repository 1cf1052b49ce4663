"""Tests for `GET /builds/{id}/artifacts/{name}` and `webhooks.artifacts`."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.webhooks.testclient import TestClient
from tests.webhooks.webfakes import T0, DirArtifacts, WebStore
from webhooks.app import create_app
from webhooks.artifacts import is_plain_name, list_artifacts, parse_sums
from webhooks.build import Artifact, BuildState
from webhooks.config import WebhookConfig

CONFIG = WebhookConfig(public_url="https://ci.example.org", repos=())
ISO = "archlinux-2025.03.01-x86_64.iso"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Build 1's artifact directory, holding an ISO and its checksum files."""
    folder = tmp_path / "artifacts" / "1"
    folder.mkdir(parents=True)
    (folder / ISO).write_bytes(bytes(range(256)) * 4096)  # 1 MiB
    (folder / "sha256sums").write_text(f"{'a' * 64}  {ISO}\n")
    (folder / "b2sums").write_text(f"{'b' * 128}  {ISO}\n")
    return folder


@pytest.fixture
def store() -> WebStore:
    """A store with a succeeded build (1) and a running one (2)."""
    store = WebStore()
    store.add(state=BuildState.SUCCEEDED)
    store.add(state=BuildState.RUNNING)
    return store


@pytest.fixture
def client(store: WebStore, folder: Path) -> Iterator[TestClient]:
    """A client of the app with artifacts under `folder`'s parent."""
    app = create_app(
        CONFIG,
        sink=store,
        catalog=store,
        artifacts=DirArtifacts(folder.parent),
        clock=lambda: T0,
    )
    with TestClient(app) as client:
        yield client


def test_artifact_download_streams_the_file(client: TestClient, folder: Path) -> None:
    """An artifact is sent whole, with its length and as an attachment."""
    response = client.get(f"/builds/1/artifacts/{ISO}")
    assert response.status_code == 200
    assert response.content == (folder / ISO).read_bytes()
    assert response.headers["content-length"] == str(1024 * 1024)
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.headers["content-disposition"] == f"attachment; filename*=UTF-8''{ISO}"


@pytest.mark.parametrize(
    "name", ["%2e%2e", "%2E", "..%2Fetc%2Fpasswd", ".hidden", "a%5Cb", "x%00y", "nope.iso"]
)
def test_artifact_download_refuses_names_that_are_not_plain_files(
    client: TestClient, folder: Path, name: str
) -> None:
    """Traversal, hidden, odd or unknown names are 404, whatever lies outside the folder."""
    (folder / ".hidden").write_text("hidden")
    (folder.parent / "etc").mkdir()
    response = client.get(f"/builds/1/artifacts/{name}")
    assert response.status_code == 404
    assert "error" in response.json()


def test_artifact_download_never_follows_a_link(client: TestClient, folder: Path) -> None:
    """A symbolic link in the artifact folder is neither listed nor served."""
    secret = folder.parent / "secret.txt"
    secret.write_text("not yours")
    (folder / "link.iso").symlink_to(secret)
    assert client.get("/builds/1/artifacts/link.iso").status_code == 404
    assert "link.iso" not in client.get("/builds/1").text


def test_artifact_download_never_follows_a_linked_folder(
    client: TestClient, store: WebStore, folder: Path, tmp_path: Path
) -> None:
    """A build whose artifact folder is itself a link serves nothing."""
    store.add(state=BuildState.SUCCEEDED)
    (folder.parent / "3").symlink_to(folder)
    assert client.get(f"/builds/3/artifacts/{ISO}").status_code == 404


def test_artifact_download_refuses_a_directory(client: TestClient, folder: Path) -> None:
    """Only regular files are served."""
    (folder / "sub").mkdir()
    assert client.get("/builds/1/artifacts/sub").status_code == 404


def test_artifact_download_of_an_unfinished_build_is_404(client: TestClient, folder: Path) -> None:
    """A running build has no artifacts yet, whatever its folder holds."""
    (folder.parent / "2").mkdir()
    (folder.parent / "2" / ISO).write_bytes(b"partial")
    assert client.get(f"/builds/2/artifacts/{ISO}").status_code == 404
    assert client.get(f"/builds/9/artifacts/{ISO}").status_code == 404


def test_list_artifacts_reads_checksums_and_orders_sums_last(folder: Path) -> None:
    """ISOs come first with their checksums; checksum files follow; links are skipped."""
    (folder / "link").symlink_to(folder / ISO)
    found = list_artifacts(folder)
    assert found[0] == Artifact(ISO, 1024 * 1024, "a" * 64, "b" * 128)
    assert [a.name for a in found] == [ISO, "b2sums", "sha256sums"]
    assert list_artifacts(None) == []
    assert list_artifacts(folder / "missing") == []


def test_parse_sums_reads_text_and_binary_markers() -> None:
    """Both `hex  name` and `hex *name` lines are read; junk and paths are skipped."""
    text = f"{'A' * 64}  one.iso\n{'c' * 64} *two.iso\nnot a sum\n{'d' * 64}  ../x\n"
    assert parse_sums(text) == {"one.iso": "a" * 64, "two.iso": "c" * 64}


@pytest.mark.parametrize(
    ("name", "plain"),
    [
        ("x.iso", True),
        ("sha256sums", True),
        ("", False),
        (".", False),
        ("..", False),
        (".x", False),
        ("a/b", False),
        ("a\\b", False),
        ("a\nb", False),
        ("x" * 256, False),
    ],
)
def test_is_plain_name(name: str, plain: bool) -> None:
    """Only printable names without a directory part and not hidden are plain."""
    assert is_plain_name(name) is plain


def test_open_artifact_closes_nothing_it_did_not_open(client: TestClient) -> None:
    """Refused downloads leave no file descriptor open."""
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        client.get("/builds/1/artifacts/sub")
        client.get("/builds/1/artifacts/..")
    assert len(os.listdir("/proc/self/fd")) <= before + 2

"""Tests for `GET /builds/{id}/log`: the build log served as plain text from its file."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import anyio
import pytest

from tests.runner.store.samples import make_request
from tests.webhooks.fakes import MemoryStore
from tests.webhooks.testclient import TestClient
from webhooks.app import create_app
from webhooks.config import WebhookConfig

CONFIG = WebhookConfig(public_url="https://ci.example.org", repos=())


class DirLogs:
    """Log files named `<id>.log` in a directory, as the runner keeps them."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def existing(self, build_id: int) -> Path | None:
        path = self.root / f"{build_id}.log"
        return path if path.is_file() else None


@pytest.fixture
def store() -> MemoryStore:
    """A store holding one build (id 1)."""
    store = MemoryStore()
    anyio.run(store.submit, make_request())
    return store


@pytest.fixture
def client(store: MemoryStore, tmp_path: Path) -> Iterator[TestClient]:
    """A client of the app with logs in `tmp_path`."""
    app = create_app(
        CONFIG,
        sink=store,
        catalog=store,
        logs=DirLogs(tmp_path),
        clock=lambda: datetime(2025, 1, 1, tzinfo=UTC),
    )
    with TestClient(app) as client:
        yield client


def test_build_log_serves_file_as_plain_text(client: TestClient, tmp_path: Path) -> None:
    """The log file is served whole as UTF-8 text, uncached and not sniffed."""
    (tmp_path / "1.log").write_text("[mkarchiso] INFO: one\n<script>two</script>\n")
    response = client.get("/builds/1/log")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-store"
    assert response.text == "[mkarchiso] INFO: one\n<script>two</script>\n"


def test_build_log_is_empty_before_the_build_writes(client: TestClient) -> None:
    """A known build without a log file yet answers an empty log, not an error."""
    response = client.get("/builds/1/log")
    assert response.status_code == 200
    assert response.text == ""


def test_build_log_unknown_build_is_404(client: TestClient, tmp_path: Path) -> None:
    """A log is served only for a stored build, even if a file of that name exists."""
    (tmp_path / "99.log").write_text("stray")
    response = client.get("/builds/99/log")
    assert response.status_code == 404
    assert response.json() == {"error": "no build with id 99"}


def test_build_log_range_resumes_a_download(client: TestClient, tmp_path: Path) -> None:
    """A Range request gets the rest of the log, so a reader can resume."""
    (tmp_path / "1.log").write_text("line one\nline two\n")
    response = client.get("/builds/1/log", headers={"Range": "bytes=9-"})
    assert response.status_code == 206
    assert response.text == "line two\n"

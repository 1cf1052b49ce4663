"""A real browser watches a running build's page: new log lines appear, then the end.

Integration test: headless Chromium driven through chromedriver's W3C WebDriver HTTP
API (with httpx, so no extra Python package), against a real uvicorn server on
127.0.0.1 serving the app with an in-memory catalog and a log file on disk.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import uvicorn

from tests.conftest import require_tool
from tests.runner.store.samples import make_request
from tests.webhooks.webfakes import DirLogs, WebStore
from webhooks.app import create_app
from webhooks.build import BuildCatalog, BuildLogSource, BuildState
from webhooks.config import WebhookConfig
from webhooks.live import LogFollowers

pytestmark = pytest.mark.integration

ELEMENT = "element-6066-11e4-a52e-4f735466cecf"  # the W3C WebDriver element key
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


def _free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def _free_port() -> int:
    with contextlib.closing(_free_socket()) as sock:
        return int(sock.getsockname()[1])


def _wait_for(check: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@contextlib.contextmanager
def serving(store: WebStore, logs: DirLogs) -> Iterator[str]:
    """Serve the app with uvicorn on a free loopback port; yield its base URL."""

    def followers(catalog: BuildCatalog, source: BuildLogSource | None) -> LogFollowers:
        return LogFollowers(catalog, source, poll_seconds=0.05, state_seconds=0.1)

    app = create_app(
        WebhookConfig(public_url="http://127.0.0.1", repos=()),
        sink=store,
        catalog=store,
        logs=logs,
        browser=store,
        followers=followers,
    )
    sock = _free_socket()
    config = uvicorn.Config(app, log_config=None, timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        _wait_for(lambda: server.started, "uvicorn to start")
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


class WebDriver:
    """The few W3C WebDriver commands this test needs, over chromedriver's HTTP API."""

    def __init__(self, http: httpx.Client, session: str) -> None:
        self.http = http
        self.session = session

    def _call(self, method: str, path: str, body: object = None) -> Any:
        response = self.http.request(method, f"/session/{self.session}{path}", json=body)
        return response.json()["value"]

    def get(self, url: str) -> None:
        """Navigate to `url` and wait for it to load."""
        self._call("POST", "/url", {"url": url})

    def text(self, css: str) -> str:
        """The rendered text of the first element matching `css`."""
        element = self._call("POST", "/element", {"using": "css selector", "value": css})
        return cast(str, self._call("GET", f"/element/{element[ELEMENT]}/text"))

    def script(self, source: str) -> Any:
        """Run a script in the page and return its result."""
        return self._call("POST", "/execute/sync", {"script": source, "args": []})


@contextlib.contextmanager
def chromium() -> Iterator[WebDriver]:
    """Start chromedriver and a headless Chromium session; close both afterwards."""
    binary = require_tool("chromium")
    driver = require_tool("chromedriver")
    port = _free_port()
    process = subprocess.Popen(
        [driver, f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        with (
            tempfile.TemporaryDirectory() as profile,
            httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as http,
        ):

            def ready() -> bool:
                try:
                    return bool(http.get("/status").json()["value"]["ready"])
                except httpx.TransportError:
                    return False

            _wait_for(ready, "chromedriver")
            options = {"binary": binary, "args": [*CHROMIUM_FLAGS, f"--user-data-dir={profile}"]}
            capabilities = {"browserName": "chrome", "goog:chromeOptions": options}
            created = http.post("/session", json={"capabilities": {"alwaysMatch": capabilities}})
            value = created.json()["value"]
            assert "sessionId" in value, value
            session = value["sessionId"]
            try:
                yield WebDriver(http, session)
            finally:
                http.delete(f"/session/{session}")
    finally:
        process.terminate()
        process.wait(10)


def test_browser_sees_live_log_lines_then_the_final_state(tmp_path: Path) -> None:
    """A running build's page appends new log lines as they are written, then shows the end."""
    store = WebStore()
    store.add(make_request(ref="refs/heads/<b>x</b>"), state=BuildState.RUNNING)
    logs = DirLogs(tmp_path)
    logs.append(1, "[isorunner] build 1 started\n")
    with serving(store, logs) as base, chromium() as browser:
        browser.get(f"{base}/builds/1")
        assert browser.text("#state") == "running"
        assert "[isorunner] build 1 started" in browser.text("#log")
        _wait_for(
            lambda: browser.script("return window.performance.now() > 300") is True,
            "the page's script to settle",
        )
        for n in range(5):
            logs.append(1, f"[mkarchiso] step {n}\n")
        logs.append(1, "<script>document.title='pwned'</script>\n")
        _wait_for(lambda: "[mkarchiso] step 4" in browser.text("#log"), "live lines")
        text = browser.text("#log")
        assert text.count("[mkarchiso] step 0") == 1
        assert text.index("step 0") < text.index("step 4")
        _wait_for(lambda: "<script>document.title" in browser.text("#log"), "hostile line")
        assert browser.script("return document.title") != "pwned"
        logs.append(1, "[isorunner] succeeded: ISO built in 3s\n")
        store.set_state(1, BuildState.SUCCEEDED, "ISO built in 3s")
        _wait_for(lambda: browser.text("#state") == "succeeded", "the final state")
        assert browser.text("#detail") == "ISO built in 3s"
        assert browser.text("#log").count("[isorunner] succeeded") == 1
        assert "<b>x</b>" in browser.text("h1 + dl")  # the branch name shown as text

"""Tests of the boot test on the build page, in the JSON API, and the screenshot route."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.pngimage import SIGNATURE
from tests.webhooks.test_pages import CONFIG
from tests.webhooks.testclient import TestClient
from tests.webhooks.webfakes import T0, DirArtifacts, DirLogs, WebStore
from webhooks.app import create_app
from webhooks.build import BootTestRecord, BuildState

PNG = SIGNATURE + b"\0\0\0\rIHDRfake"
BIOS = BootTestRecord(
    name="bios",
    firmware="bios",
    medium="cdrom",
    mode="firmware",
    outcome="passed",
    required=True,
    accelerator="tcg",
    seconds=22.5,
    reason="'archiso login:' after 22.5 s",
    serial_tail=("<script>alert(1)</script>", "archiso login:"),
    screenshot="bios.png",
)
UEFI = BootTestRecord(
    name="uefi",
    firmware="uefi",
    medium="cdrom",
    mode="firmware",
    outcome="failed",
    required=False,
    accelerator="tcg",
    seconds=7.6,
    reason="the guest reset the machine before 'login:' showed",
)


class BootTests:
    """A boot test source holding fixed results per build."""

    def __init__(self) -> None:
        self.tests: dict[int, list[BootTestRecord]] = {}

    async def boot_tests(self, build_id: int) -> list[BootTestRecord]:
        return self.tests.get(build_id, [])


@pytest.fixture
def parts(tmp_path: Path) -> Iterator[tuple[TestClient, WebStore, BootTests, Path]]:
    """A client over a store with one succeeded build whose boot tests ran."""
    store, tests = WebStore(), BootTests()
    (tmp_path / "logs").mkdir()
    (tmp_path / "artifacts" / "1" / "boot").mkdir(parents=True)
    (tmp_path / "artifacts" / "1" / "boot" / "bios.png").write_bytes(PNG)
    store.add(state=BuildState.SUCCEEDED)
    tests.tests[1] = [BIOS, UEFI]
    app = create_app(
        CONFIG,
        sink=store,
        catalog=store,
        logs=DirLogs(tmp_path / "logs"),
        browser=store,
        artifacts=DirArtifacts(tmp_path / "artifacts"),
        boot_tests=tests,
        clock=lambda: T0,
    )
    with TestClient(app) as client:
        yield client, store, tests, tmp_path / "artifacts" / "1" / "boot"


def test_build_page_shows_the_screenshot_before_the_serial_tail(
    parts: tuple[TestClient, WebStore, BootTests, Path],
) -> None:
    """Each test: its verdict, then the picture, then the escaped console; none without a PNG."""
    client = parts[0]
    html = client.get("/builds/1").text
    assert "<h2>Boot test</h2>" in html
    image = html.index('<img src="/builds/1/boot/bios.png"')
    assert html.index("booted") < image < html.index("archiso login:")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script>alert(1)" not in html
    assert "the guest reset the machine" in html
    assert html.count("<img ") == 1
    assert html.index("Boot test") < html.index("<h2>Log</h2>")


def test_screenshot_route_serves_the_png(
    parts: tuple[TestClient, WebStore, BootTests, Path],
) -> None:
    """The screenshot is served as image/png, not to be sniffed or cached."""
    response = parts[0].get("/builds/1/boot/bios.png")
    assert response.status_code == 200
    assert response.content == PNG
    assert response.headers["content-type"] == "image/png"
    assert response.headers["x-content-type-options"] == "nosniff"


def test_screenshot_route_refuses_other_names_and_links(
    parts: tuple[TestClient, WebStore, BootTests, Path],
) -> None:
    """Only plain .png names of regular files are served; a planted link is not followed."""
    client, _, _, boot = parts
    (boot / "notes.txt").write_text("x")
    os.symlink("/etc/passwd", boot / "link.png")
    for name in ("notes.txt", "link.png", "..%2F..%2Fsha256sums", "missing.png", ".hidden.png"):
        assert client.get(f"/builds/1/boot/{name}").status_code == 404, name
    assert client.get("/builds/2/boot/bios.png").status_code == 404


def test_api_build_detail_carries_the_boot_tests(
    parts: tuple[TestClient, WebStore, BootTests, Path],
) -> None:
    """`GET /api/builds/{id}` lists each boot test with its verdict, tail and picture link."""
    body = parts[0].get("/api/builds/1").json()
    bios, uefi = body["boot_tests"]
    assert bios["outcome"] == "passed"
    assert bios["screenshot_url"] == "/builds/1/boot/bios.png"
    assert bios["serial_tail"][-1] == "archiso login:"
    assert (uefi["outcome"], uefi["required"], uefi["screenshot_url"]) == ("failed", False, None)


def test_running_build_page_shows_no_boot_tests_yet(
    parts: tuple[TestClient, WebStore, BootTests, Path],
) -> None:
    """A running build's page has no boot section (its results are not final)."""
    client, store, tests, _ = parts
    store.add(state=BuildState.RUNNING)
    tests.tests[2] = [BIOS]
    assert "<h2>Boot test</h2>" not in client.get("/builds/2").text

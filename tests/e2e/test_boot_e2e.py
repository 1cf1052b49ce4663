"""End to end: every built ISO is booted in QEMU, through a webhook and `isorunner build`.

A real `isorunner serve` with the fake forge builds the stand-in's boot profile in the
real sandbox and boots it in QEMU (TCG) on BIOS and UEFI: the release says so, the
commit status too, the API and the page show each test with its screenshot (checked
in headless Chromium). A branch whose ISO panics with a required boot test fails with
the panic in its result. `python -m runner build` does the same on a local profile.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest

from tests.e2e.conftest import (
    GITHUB_TOKEN,
    STANDIN,
    Isorunner,
    Repos,
    final_status,
    github_push,
    make_profile,
    make_server,
    new_sha,
    packages_text,
    release_settled,
)
from tests.e2e.fakeforge import FakeForge
from tests.e2e.test_browser import chromium
from tests.pngimage import decode
from tests.runner.packages.upstream import UpstreamServer

pytestmark = pytest.mark.integration

TAGGED = "acme/bootable"
PANICS = "acme/panics"
REPOS = Repos(github=[TAGGED, PANICS], booted=[TAGGED, PANICS])
DONE = final_status("success", "failure", "error")
BOOT_SECONDS = 900.0
ENTRIES = ("syslinux/archiso_sys-linux.cfg", "efiboot/loader/entries/01-archiso-linux.conf")


@pytest.fixture(scope="module")
def server(state_root: Path, forge: FakeForge, upstream: UpstreamServer) -> Iterator[Isorunner]:
    """A real `isorunner serve` whose two repositories are boot tested."""
    config = make_server(state_root, forge, REPOS, upstream)
    text = config.config.read_text().replace(
        'name = "acme/panics"\n',
        'name = "acme/panics"\n'
        'boot_test = { policy = "required", firmware = ["bios"], mode = "kernel" }\n',
    )
    config.config.write_text(text)
    config.start()
    yield config
    config.close()


def _not_blank(png: bytes) -> None:
    image = decode(png)
    assert image.width >= 640
    assert image.colours() >= 2, "the screenshot is blank"


def test_tag_boots_on_bios_and_uefi_and_the_page_shows_it(
    server: Isorunner, forge: FakeForge, profiles: Path
) -> None:
    """A tag's ISO boots on both firmwares; status, release, API and page (Chromium) say so."""
    sha = new_sha()
    profile = make_profile(profiles, "bootable", source="boot")
    forge.seed_github(TAGGED, token=GITHUB_TOKEN, commits={sha: profile}, refs={"v2.0": sha})
    build_id = server.github("push", github_push(TAGGED, sha, "refs/tags/v2.0"))

    statuses = server.wait_statuses(
        forge, "github", TAGGED, sha, release_settled, timeout=BOOT_SECONDS
    )
    record = server.wait_finished(build_id, timeout=BOOT_SECONDS)
    assert statuses[-1].state == "success", (statuses[-1], server.log_tail())
    assert "boots on BIOS and UEFI (QEMU)" in str(statuses[-1].description)
    assert str(statuses[-1].description).endswith("; release published")
    assert server.wait_release(build_id)["state"] == "published"
    (release,) = forge.releases("github", TAGGED)
    assert release.body is not None
    assert "Boots on BIOS and UEFI (QEMU)" in release.body

    tests = cast(list[dict[str, Any]], record["boot_tests"])
    assert [(t["firmware"], t["outcome"], t["required"]) for t in tests] == [
        ("bios", "passed", True),
        ("uefi", "passed", True),
    ]
    for test in tests:
        assert test["serial_tail"][-1] == "archiso login:"
        png = httpx.get(f"{server.url}{test['screenshot_url']}", timeout=30)
        assert png.headers["content-type"] == "image/png"
        _not_blank(png.content)
    log = server.build_log(build_id)
    assert "console: :: isorunner stand-in live system up (archiso)" in log
    assert "[isorunner] boot test (uefi): passed, 'archiso login:' after" in log

    with chromium() as browser:
        browser.get(f"{server.url}/builds/{build_id}")
        widths = browser.script(
            "return Array.from(document.querySelectorAll('.boot img'))"
            ".map(function (i) { return i.complete ? i.naturalWidth : -1; });"
        )
        assert isinstance(widths, list)
        assert len(widths) == 2
        assert all(isinstance(w, int) and w >= 640 for w in widths), widths
        order = browser.script(
            "var s = document.querySelector('.boot');"
            "var img = s.querySelector('img'), pre = s.querySelector('pre.serial');"
            "return !!(img.compareDocumentPosition(pre) & Node.DOCUMENT_POSITION_FOLLOWING);"
        )
        assert order is True
        assert "archiso login:" in browser.text(".boot pre.serial")


def test_required_boot_test_of_a_panicking_iso_fails_the_build(
    server: Isorunner, forge: FakeForge, profiles: Path
) -> None:
    """A branch whose init panics fails (policy required): the panic is in the result."""
    sha = new_sha()
    profile = make_profile(profiles, "panics", source="boot")
    for entry in ENTRIES:
        path = profile / entry
        path.write_text(path.read_text().replace("115200", "115200 isorunner.test=panic"))
    forge.seed_github(PANICS, token=GITHUB_TOKEN, commits={sha: profile})
    build_id = server.github("push", github_push(PANICS, sha, "refs/heads/main"))

    statuses = server.wait_statuses(forge, "github", PANICS, sha, DONE, timeout=BOOT_SECONDS)
    record = server.wait_finished(build_id, timeout=BOOT_SECONDS)
    assert statuses[-1].state == "failure", statuses[-1]
    assert "boot test failed (bios, kernel)" in str(statuses[-1].description)
    (test,) = cast(list[dict[str, Any]], record["boot_tests"])
    assert test["outcome"] == "failed"
    assert "Kernel panic - not syncing" in test["reason"]
    assert any("end Kernel panic" in line for line in test["serial_tail"])
    assert test["command_line"].endswith("isorunner.test=panic")


def test_isorunner_build_boots_the_iso_on_bios_and_uefi(
    tmp_path: Path, upstream: UpstreamServer
) -> None:
    """`isorunner build` builds the boot profile, boots it twice, writes both screenshots."""
    out = tmp_path / "out"
    config = tmp_path / "isorunner.toml"
    sandbox_root = Path(f"/var/tmp/{tmp_path.name}-sbx")
    config.write_text(
        f'[sandbox]\nsandbox_root = "{sandbox_root}"\n'
        f'base_dir = "{STANDIN}/base"\nmemory_limit = "2G"\ncpus = 2\n'
        # The build's disk is allocated in full: the default 16G would take a shared
        # test host's room (the boot profile's ISO is a few MB).
        'max_disk_bytes = "2G"\n'
        "[boot_test]\ntimeout_seconds = 300\n" + packages_text(sandbox_root, upstream)
    )
    try:
        run = _run_build(out, config)
    finally:
        shutil.rmtree(sandbox_root, ignore_errors=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "boots on BIOS and UEFI (QEMU)" in run.stdout
    for name in ("bios.png", "uefi.png"):
        # A missing screenshot is explained in the output ("no screenshot: …").
        assert (out / "boot" / name).is_file(), _isorunner_lines(run.stdout)
        _not_blank((out / "boot" / name).read_bytes())
    assert sorted(p.name for p in out.iterdir() if p.suffix == ".iso") == [
        "isorunner-boot-1.0-x86_64.iso"
    ]


def _isorunner_lines(stdout: str) -> str:
    """The lines of `isorunner build`'s output that are isorunner's or the boot test's."""
    return "\n".join(
        line for line in stdout.splitlines() if line.startswith(("[isorunner]", "boot test"))
    )


def _run_build(out: Path, config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "runner",
            "build",
            str(STANDIN / "profiles" / "boot"),
            "--out",
            str(out),
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        timeout=BOOT_SECONDS,
        check=False,
    )

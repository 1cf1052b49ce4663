"""Tests of the `isorunner` command (`runner.__main__`) and the service it runs."""

from __future__ import annotations

import gc
import hashlib
import hmac
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from runner.__main__ import config_path, main
from runner.service import freeze_startup_objects
from tests.conftest import require, require_root, require_tool
from tests.e2e.conftest import packages_text
from tests.runner.packages.upstream import UPSTREAM, serve_upstream

SECRET = "cli-test-webhook-secret"
# How long `serve` may take to answer: a deadline, not a speed claim (on the shared test
# host, importing isorunner alone took 20 s of wall time under load).
STARTUP_SECONDS = 120.0


def config_text(tmp_path: Path, port: int = 8000) -> str:
    """A config using only `tmp_path` for state, with one GitHub repo."""
    return f"""
[server]
host = "127.0.0.1"
port = {port}
public_url = "http://127.0.0.1:{port}"

[storage]
database = "sqlite:///{tmp_path}/db/isorunner.db"
logs_dir = "{tmp_path}/logs"

[sandbox]
sandbox_root = "{tmp_path}/sandbox"
iso_output_root = "{tmp_path}/artifacts"

[github]
webhook_secret = "{SECRET}"

[[repos]]
forge = "github"
name = "octo/archlive"
"""


def test_config_path_prefers_flag_then_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """`--config` beats `$ISORUNNER_CONFIG`, which beats ./isorunner.toml."""
    monkeypatch.setenv("ISORUNNER_CONFIG", "/etc/isorunner/from-env.toml")
    assert config_path(Path("/x.toml")) == Path("/x.toml")
    assert config_path(None) == Path("/etc/isorunner/from-env.toml")
    monkeypatch.delenv("ISORUNNER_CONFIG")
    assert config_path(None) == Path("isorunner.toml")


def test_main_bad_config_exits_2_with_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A wrong config file is one message naming the key, exit code 2."""
    path = tmp_path / "c.toml"
    path.write_text("[server]\nport = 'eighty'\n")
    assert main(["check", "--config", str(path)]) == 2
    assert "server.port" in capsys.readouterr().err


def test_main_check_reports_a_blank_admin_token_by_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`check` (like `serve`) refuses an admin token file holding a newline, naming the key."""
    token = tmp_path / "admin-token"
    token.write_text("\n")
    path = tmp_path / "c.toml"
    path.write_text(
        config_text(tmp_path).replace("[server]\n", f'[server]\nadmin_token_file = "{token}"\n')
    )
    assert main(["check", "--config", str(path)]) == 2
    assert "server.admin_token: is empty or shorter than 16 bytes" in capsys.readouterr().err


def test_main_check_reports_missing_base(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`check` says what is wrong (no sandbox base) and exits 1; the database is fine."""
    path = tmp_path / "c.toml"
    path.write_text(config_text(tmp_path))
    assert main(["check", "--config", str(path)]) == 1
    out = capsys.readouterr().out
    assert "FAIL sandbox base" in out
    assert "run scripts/setup-sandbox.sh" in out
    assert "ok   database: 0 builds stored" in out


def test_main_build_refuses_a_missing_profile(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`build` of a path that is not a directory fails with a clear message."""
    path = tmp_path / "c.toml"
    path.write_text(config_text(tmp_path))
    code = main(
        ["build", str(tmp_path / "nope"), "--out", str(tmp_path / "out"), "--config", str(path)]
    )
    assert code == 1
    assert "is not a directory" in capsys.readouterr().err


def test_freeze_startup_objects_moves_live_objects_out_of_collection() -> None:
    """Objects alive at start-up are frozen: full collections no longer walk them."""
    gc.unfreeze()
    try:
        freeze_startup_objects()
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()  # give the test process its objects back


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def server_config(tmp_path: Path) -> tuple[Path, int]:
    """A config file for a real server on a free port."""
    port = free_port()
    path = tmp_path / "isorunner.toml"
    path.write_text(config_text(tmp_path, port))
    return path, port


def start_server(config: Path, port: int) -> subprocess.Popen[bytes]:
    """Start `isorunner serve` (its log beside the config) and wait until it answers."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ISORUNNER_")}
    log = config.with_suffix(".log")
    with log.open("ab") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "runner", "serve", "--config", str(config)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {log.read_text()}")
        try:
            httpx.get(f"http://127.0.0.1:{port}/api/builds/1", timeout=1)
        except httpx.TransportError:
            time.sleep(0.1)
            continue
        return proc
    proc.kill()
    proc.wait()
    raise AssertionError(f"server did not start within {STARTUP_SECONDS} s: {log.read_text()}")


@pytest.fixture
def push_body() -> bytes:
    """A minimal GitHub push to octo/archlive main."""
    return json.dumps(
        {
            "ref": "refs/heads/main",
            "before": "0" * 40,
            "after": "a" * 40,
            "created": False,
            "deleted": False,
            "forced": False,
            "head_commit": {
                "id": "a" * 40,
                "timestamp": "2025-01-02T03:04:05+01:00",
                "message": "Add htop",
            },
            "repository": {
                "full_name": "octo/archlive",
                "html_url": "https://github.com/octo/archlive",
                "private": False,
            },
            "sender": {"login": "alice"},
        }
    ).encode()


def signed_headers(body: bytes, delivery: str) -> dict[str, str]:
    """Headers of a signed GitHub push delivery."""
    digest = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return {
        "Content-Type": "application/json",
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": delivery,
        "X-GitHub-Hook-ID": "1",
        "X-Hub-Signature-256": f"sha256={digest}",
    }


@pytest.fixture
def server(server_config: tuple[Path, int]) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """A running `isorunner serve`, killed at the end."""
    proc = start_server(*server_config)
    try:
        yield proc, server_config[1]
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.integration
def test_serve_accepted_delivery_survives_kill_9(
    server_config: tuple[Path, int], push_body: bytes
) -> None:
    """A delivery answered 202 by a real server is still there after `kill -9` and restart."""
    config, port = server_config
    proc = start_server(config, port)
    try:
        response = httpx.post(
            f"http://127.0.0.1:{port}/webhooks/github",
            content=push_body,
            headers=signed_headers(push_body, "d-1"),
        )
        assert response.status_code == 202, response.text
        build_id = response.json()["build_id"]
        assert response.json()["url"] == f"http://127.0.0.1:{port}/builds/{build_id}"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    proc = start_server(config, port)
    try:
        again = httpx.get(f"http://127.0.0.1:{port}/api/builds/{build_id}")
        assert again.status_code == 200
        assert again.json()["request"]["commit_sha"] == "a" * 40
        redelivery = httpx.post(
            f"http://127.0.0.1:{port}/webhooks/github",
            content=push_body,
            headers=signed_headers(push_body, "d-1"),
        )
        assert redelivery.status_code == 200
        assert redelivery.json()["build_id"] == build_id
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.integration
def test_serve_stops_cleanly_on_sigterm_leaving_only_the_database(
    server_config: tuple[Path, int], push_body: bytes
) -> None:
    """SIGTERM ends serve with exit 0 after closing the store: no -wal or -shm is left."""
    config, port = server_config
    proc = start_server(config, port)
    try:
        response = httpx.post(
            f"http://127.0.0.1:{port}/webhooks/github",
            content=push_body,
            headers=signed_headers(push_body, "d-3"),
        )
        assert response.status_code == 202, response.text
    finally:
        proc.terminate()
        code = proc.wait(timeout=60)
    assert code == 0, config.with_suffix(".log").read_text()
    assert sorted(p.name for p in (config.parent / "db").iterdir()) == ["isorunner.db"]


@pytest.mark.integration
def test_serve_refuses_bad_signature(
    server: tuple[subprocess.Popen[bytes], int], push_body: bytes
) -> None:
    """A real server answers 401 to a wrong signature and stores nothing."""
    _, port = server
    headers = signed_headers(push_body, "d-2")
    headers["X-Hub-Signature-256"] = "sha256=" + "0" * 64
    response = httpx.post(
        f"http://127.0.0.1:{port}/webhooks/github", content=push_body, headers=headers
    )
    assert response.status_code == 401
    assert httpx.get(f"http://127.0.0.1:{port}/api/builds/1").status_code == 404


STANDIN = Path(os.environ.get("ISORUNNER_STANDIN_DIR", "/var/cache/isorunner-test/standin"))


def _iso_files(iso: Path, tmp: Path) -> Path:
    """Extract the ISO's airootfs squashfs and return the unpacked tree."""
    sfs = tmp / "airootfs.sfs"
    subprocess.run(
        ["xorriso", "-osirrox", "on", "-indev", str(iso),
         "-extract", "/arch/x86_64/airootfs.sfs", str(sfs)],
        capture_output=True, check=True,
    )  # fmt: skip
    tree = tmp / "tree"
    subprocess.run(["unsquashfs", "-q", "-d", str(tree), str(sfs)], capture_output=True, check=True)
    return tree


@pytest.mark.integration
def test_main_build_writes_iso_and_sums_with_the_given_date(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`isorunner build` syncs the profile's packages, builds in the real sandbox, sums the ISO."""
    require_root()
    require_tool("systemd-nspawn")
    require_tool("unsquashfs")
    require(
        (STANDIN / "profiles" / "minimal" / "profiledef.sh").is_file()
        and (UPSTREAM / "stamp").is_file(),
        f"the stand-in base and upstream in {STANDIN} (run tests/standin/build-standin.sh)",
    )
    # overlayfs needs a disk; the pid keeps other sessions running this test apart
    root = Path("/var/tmp") / f"isorunner-cli-{os.getpid()}-{tmp_path.name}"
    profile = tmp_path / "profile"
    shutil.copytree(STANDIN / "profiles" / "minimal", profile, symlinks=True)
    with (profile / "packages.x86_64").open("a") as handle:
        handle.write("# not in the base: synced on the host\nisorunner-hello\n")
    profile.joinpath("pacman.conf").write_text("[core]\n[extra]\n")
    out = tmp_path / "out"
    config = tmp_path / "c.toml"
    try:
        with serve_upstream(UPSTREAM / "www") as upstream:
            config.write_text(
                f'[sandbox]\nbase_dir = "{STANDIN}/base"\nsandbox_root = "{root}/sandbox"\n'
                'memory_limit = "2G"\ncpus = 1\ntimeout_seconds = 120\nwarning_seconds = 60\n'
                'max_disk_bytes = "2G"\n' + packages_text(root, upstream)
            )
            code = main(
                [
                    "build",
                    str(profile),
                    "--out",
                    str(out),
                    "--config",
                    str(config),
                    "--source-date-epoch",
                    "1735787045",
                    "--boot-test",
                    "off",
                ]
            )
        printed = capsys.readouterr()
        assert code == 0, printed.err
        assert "[mkarchiso] INFO" in printed.out
        assert "[isorunner] packages: 7 names from packages.x86_64; repositories core, extra" in (
            printed.out
        )
        assert "[isorunner] packages: 8 ready (" in printed.out
        iso = out / "isorunner-minimal-1.0-x86_64.iso"
        assert iso.is_file()
        tree = _iso_files(iso, tmp_path)
        assert (tree / "usr/lib/isorunner-hello/libhello.txt").read_text() == "libhello 1.0\n"
        assert (tree / "usr/bin/isorunner-hello").is_file()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    check = subprocess.run(
        ["sha256sum", "-c", "sha256sums"], cwd=out, capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr
    check = subprocess.run(
        ["b2sum", "-c", "b2sums"], cwd=out, capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr
    pvd = subprocess.run(
        ["xorriso", "-indev", str(iso), "-pvd_info"], capture_output=True, text=True, check=False
    )
    assert "2025010203040500" in pvd.stdout, pvd.stdout  # volume dates = the epoch given


@pytest.mark.integration
def test_main_build_fails_before_the_container_on_a_missing_package(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`isorunner build` of a profile naming an unknown package fails, naming it, unbuilt."""
    require_root()
    require((UPSTREAM / "stamp").is_file(), f"the stand-in upstream in {UPSTREAM}")
    root = Path("/var/tmp") / f"isorunner-cli-{os.getpid()}-{tmp_path.name}"
    profile = tmp_path / "profile"
    shutil.copytree(STANDIN / "profiles" / "minimal", profile, symlinks=True)
    (profile / "packages.x86_64").write_text("isorunner-base\nno-such-package\n")
    config = tmp_path / "c.toml"
    try:
        with serve_upstream(UPSTREAM / "www") as upstream:
            config.write_text(
                f'[sandbox]\nbase_dir = "{STANDIN}/base"\nsandbox_root = "{root}/sandbox"\n'
                'max_disk_bytes = "2G"\n' + packages_text(root, upstream)
            )
            code = main(["build", str(profile), "--out", str(tmp_path / "o"), "--config",
                         str(config), "--boot-test", "off"])  # fmt: skip
    finally:
        shutil.rmtree(root, ignore_errors=True)
    printed = capsys.readouterr()
    assert code == 1
    assert "isorunner: build failed: package not found: no-such-package (searched core)" in (
        printed.err
    )
    assert "[mkarchiso]" not in printed.out


@pytest.mark.integration
def test_main_build_shows_a_hostile_profiles_output_inert_and_apart(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Escapes, BEL, CR and NUL from a profile print visibly after `| `; the ISO is ours."""
    require_root()
    require_tool("systemd-nspawn")
    require(
        (STANDIN / "profiles" / "minimal" / "profiledef.sh").is_file()
        and (UPSTREAM / "stamp").is_file(),
        f"the stand-in base and upstream in {STANDIN} (run tests/standin/build-standin.sh)",
    )
    profile = tmp_path / "profile"
    shutil.copytree(STANDIN / "profiles" / "minimal", profile, symlinks=True)
    with (profile / "profiledef.sh").open("a") as handle:
        handle.write(
            "\nprintf '\\033[2J\\033]0;pwned\\007\\r\\000[isorunner] wrote /etc/passwd\\n'\n"
        )
    root = Path("/var/tmp") / f"isorunner-cli-{os.getpid()}-{tmp_path.name}"
    config = tmp_path / "c.toml"
    out = tmp_path / "out"
    try:
        with serve_upstream(UPSTREAM / "www") as upstream:
            config.write_text(
                f'[sandbox]\nbase_dir = "{STANDIN}/base"\nsandbox_root = "{root}/sandbox"\n'
                'memory_limit = "2G"\ncpus = 1\ntimeout_seconds = 120\nwarning_seconds = 60\n'
                'max_disk_bytes = "2G"\n' + packages_text(root, upstream)
            )
            code = main(
                [
                    "build",
                    str(profile),
                    "--out",
                    str(out),
                    "--config",
                    str(config),
                    "--boot-test",
                    "off",  # the output and the ISO's owner are the point here
                ]
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "\x1b" not in printed.out
    assert "\x07" not in printed.out
    assert "\r" not in printed.out
    assert "\x00" not in printed.out
    assert "| ␛[2J␛]0;pwned␇␍␀[isorunner] wrote /etc/passwd" in printed.out.splitlines()
    wrote = [line for line in printed.out.splitlines() if line.startswith("[isorunner] wrote")]
    assert wrote
    assert all(line.startswith(f"[isorunner] wrote {out}/") for line in wrote)
    for path in out.iterdir():
        assert (path.stat().st_uid, path.stat().st_gid) == (os.getuid(), os.getgid()), path

"""Fixtures of the end-to-end tests: a fake forge, a real `isorunner serve`, real builds.

I/O shell for the tests: starts the fake forge (tests/e2e/fakeforge.py) on 127.0.0.1 and
`python -m runner serve` as a subprocess whose config points every forge URL at it,
sends signed webhook deliveries over HTTP, and waits (bounded, polling) for what the
forge receives. A wait that times out fails with what it saw and the server's log tail.
The sandbox is the real one over the stand-in base (tests/standin/CONTRACT.md); builds'
packages come from the stand-in's signed upstream, served on 127.0.0.1 per module
(tests/runner/packages/upstream.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import httpx
import pytest

from runner.wiring import machine_prefix
from sandbox.host import V1_CONTROLLERS, detect_host
from tests.conftest import require, require_root, require_tool
from tests.e2e.fakeforge import FakeForge, run_fake_forge
from tests.e2e.fakeforge_state import Forge, StatusRecord
from tests.runner.packages.upstream import UPSTREAM, UpstreamServer, serve_upstream

STANDIN = Path(os.environ.get("ISORUNNER_STANDIN_DIR", "/var/cache/isorunner-test/standin"))
GITHUB_SECRET = "e2e-github-webhook-secret"
GITLAB_SECRET = "e2e-gitlab-webhook-token"
GITHUB_TOKEN = "ghp_e2e_api_token"
GITLAB_TOKEN = "glpat-e2e-api-token"
ADMIN_TOKEN = "e2e-admin-token-0123456789abcdef"
CONTEXT = "isorunner-e2e"
# The commit time of every pushed commit: SOURCE_DATE_EPOCH of the builds.
COMMIT_TIME = "2025-01-02T03:04:05+00:00"
POLL = 0.1
# How long a server may take to answer after it starts: a deadline, not a speed claim.
# Importing isorunner takes ~2.6 s of CPU; on the shared 2-core test host under a load
# of 16 that was 20 s of wall time, so the deadline leaves room for much more.
STARTUP_SECONDS = 120.0
BUILD_SECONDS = 60.0

_T = TypeVar("_T")


# -- the host ----------------------------------------------------------------------------


def require_sandbox() -> Path:
    """Require what a real build needs (root, nspawn, the stand-in); return the stand-in."""
    require_root()
    require_tool("systemd-nspawn")
    require(
        (STANDIN / "base" / "build" / "output").is_dir()
        and (STANDIN / "profiles" / "minimal" / "profiledef.sh").is_file()
        and (UPSTREAM / "stamp").is_file(),
        f"the stand-in base and upstream in {STANDIN} (run tests/standin/build-standin.sh)",
    )
    return STANDIN


def _on_tmpfs(path: Path) -> bool:
    best, fstype = "", ""
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        mount_point = fields[1].replace("\\040", " ")
        if str(path).startswith(mount_point.rstrip("/") + "/") and len(mount_point) > len(best):
            best, fstype = mount_point, fields[2]
    return fstype == "tmpfs"


def disk_dir(parent: Path, name: str) -> Path:
    """A new directory for overlay upper dirs: under `parent`, or /var/tmp if that is tmpfs."""
    if _on_tmpfs(parent.resolve()):
        return Path(tempfile.mkdtemp(prefix=f"isorunner-e2e-{name}-", dir="/var/tmp"))
    path = parent / name
    path.mkdir(parents=True)
    return path


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def new_sha() -> str:
    """A fresh 40-hex commit id."""
    return secrets.token_hex(20)


# -- profiles ----------------------------------------------------------------------------


def make_profile(
    root: Path,
    name: str,
    *,
    append: str = "",
    packages: str | None = None,
    source: str = "minimal",
) -> Path:
    """A copy of a stand-in profile, optionally changed; returns its directory.

    Args:
        root: Where to put it.
        name: Its directory name below `root`.
        append: Shell text appended to profiledef.sh (mkarchiso sources it in the container).
        packages: Replaces packages.x86_64.
        source: The stand-in profile copied: "minimal" (no boot loader), or "boot"
            (an ISO that boots on BIOS and UEFI).
    """
    profile = root / name
    shutil.copytree(STANDIN / "profiles" / source, profile, symlinks=True)
    if append:
        with (profile / "profiledef.sh").open("a") as handle:
            handle.write(f"\n{append}\n")
    if packages is not None:
        (profile / "packages.x86_64").write_text(packages)
    return profile


# -- webhook deliveries ------------------------------------------------------------------


def github_push(
    repo: str,
    sha: str,
    ref: str,
    *,
    message: str = "Update the profile",
    before: str = "0" * 40,
    forced: bool = False,
) -> bytes:
    """The body of a GitHub `push` delivery of `sha` to `ref` (refs/heads/… or refs/tags/…).

    `before` is the commit the ref pointed at (40 zeros for a new ref).
    """
    return json.dumps(
        {
            "ref": ref,
            "before": before,
            "after": sha,
            "created": ref.startswith("refs/tags/"),
            "deleted": False,
            "forced": forced,
            "head_commit": {"id": sha, "timestamp": COMMIT_TIME, "message": message},
            "repository": {"full_name": repo, "html_url": f"https://github.example/{repo}"},
            "sender": {"login": "alice"},
        }
    ).encode()


def github_pull_request(
    base_repo: str, head_repo: str, sha: str, *, number: int, branch: str = "feature"
) -> bytes:
    """The body of a GitHub `pull_request` "opened" delivery from `head_repo` into `base_repo`."""
    return json.dumps(
        {
            "action": "opened",
            "number": number,
            "pull_request": {
                "number": number,
                "title": "Add a package",
                "updated_at": COMMIT_TIME,
                "head": {"ref": branch, "sha": sha, "repo": {"full_name": head_repo}},
                "base": {
                    "ref": "main",
                    "repo": {
                        "full_name": base_repo,
                        "html_url": f"https://github.example/{base_repo}",
                    },
                },
            },
            "sender": {"login": "mallory"},
        }
    ).encode()


def gitlab_push(path: str, project_id: int, sha: str, ref: str, *, before: str = "0" * 40) -> bytes:
    """The body of a GitLab Push Hook (refs/heads/…) or Tag Push Hook (refs/tags/…).

    `before` is the commit the ref pointed at (40 zeros for a new ref); GitLab sends no
    `forced` flag.
    """
    kind = "tag_push" if ref.startswith("refs/tags/") else "push"
    return json.dumps(
        {
            "object_kind": kind,
            "event_name": kind,
            "before": before,
            "after": sha,
            "ref": ref,
            "checkout_sha": sha,
            "user_username": "alice",
            "project_id": project_id,
            "project": {
                "id": project_id,
                "path_with_namespace": path,
                "web_url": f"https://gitlab.example/{path}",
            },
            "commits": [
                {"id": sha, "timestamp": COMMIT_TIME, "title": "Update", "message": "Update\n"}
            ],
        }
    ).encode()


# -- the server --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Repos:
    """The repositories a server's config lists.

    Attributes:
        github: GitHub repositories.
        gitlab: GitLab projects.
        booted: Repositories whose ISOs are boot tested (default policy); the
            others' are not.
        extra: More TOML lines for some repositories' `[[repos]]` tables (package
            source overrides), by name.
    """

    github: Sequence[str] = ()
    gitlab: Sequence[str] = ()
    booted: Sequence[str] = ()
    extra: dict[str, str] | None = None


def packages_text(root: Path, upstream: UpstreamServer, *, max_cache: str = "1G") -> str:
    """The `[packages]` section: the test upstream's mirror and archive, its keyring."""
    return f"""
[packages]
cache_dir = "{root}/packages"
max_cache_bytes = "{max_cache}"
keyring = "{UPSTREAM}/keyring"
repositories = ["core", "extra"]
mirrors = ["{upstream.url}/mirror/$repo/os/$arch"]
archive_url = "{upstream.url}/archive"
download_attempts = 2
download_timeout_seconds = 5
[[packages.extra_repos]]
name = "custom"
servers = ["{upstream.url}/custom/$repo/os/$arch"]
sig_level = "Optional TrustAll"
"""


def config_text(
    root: Path,
    port: int,
    forge: FakeForge,
    repos: Repos,
    upstream: UpstreamServer,
    *,
    server_extra: str = "",
    sandbox_extra: str = "",
) -> str:
    """An isorunner config keeping all state under `root`, every forge URL at `forge`.

    `server_extra` and `sandbox_extra` are added to the `[server]` and `[sandbox]`
    tables (e.g. an admin token line, queue caps).
    """
    extra = repos.extra or {}
    entries = "".join(
        f'\n[[repos]]\nforge = "{kind}"\nname = "{name}"\n'
        'branches = ["main", "feature/*"]\nrelease_tags = ["v*"]\n'
        + ("" if name in repos.booted else 'boot_test = "off"\n')
        + extra.get(name, "")
        for kind, names in (("github", repos.github), ("gitlab", repos.gitlab))
        for name in names
    )
    return f"""
[server]
host = "127.0.0.1"
port = {port}
public_url = "http://127.0.0.1:{port}"
{server_extra}
[storage]
database = "sqlite:///{root}/db/isorunner.db"
logs_dir = "{root}/logs"

[sandbox]
sandbox_root = "{root}/sandbox"
base_dir = "{STANDIN}/base"
iso_output_root = "{root}/artifacts"
memory_limit = "2G"
cpus = 1
pids_limit = 1024
timeout_seconds = 60
warning_seconds = 50
max_output_bytes = "1G"
max_disk_bytes = "2G"
{sandbox_extra}

[boot_test]
timeout_seconds = 300

[github]
api_url = "{forge.github_api_url}"
upload_url = "{forge.github_uploads_url}"
webhook_secret = "{GITHUB_SECRET}"
token = "{GITHUB_TOKEN}"
status_context = "{CONTEXT}"

[gitlab]
url = "{forge.base_url}/gitlab"
webhook_secret = "{GITLAB_SECRET}"
token = "{GITLAB_TOKEN}"
status_name = "{CONTEXT}"
{packages_text(root, upstream)}
{entries}"""


@dataclass
class Isorunner:
    """A real `isorunner serve` process and the HTTP calls a test makes to it."""

    root: Path
    config: Path
    port: int
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The server's base URL (also its `public_url`)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def sandbox_root(self) -> Path:
        """The config's `sandbox.sandbox_root`."""
        return self.root / "sandbox"

    def start(self) -> None:
        """Start the server (its stderr appended to `log`) and wait until it answers."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("ISORUNNER_")}
        with self.log.open("ab") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "runner", "serve", "--config", str(self.config)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"isorunner serve exited:\n{self.log_tail()}")
            try:
                httpx.get(f"{self.url}/api/builds/1", timeout=1)
            except httpx.TransportError:
                time.sleep(POLL)
                continue
            return
        self.stop()
        raise AssertionError(f"isorunner serve did not answer in {STARTUP_SECONDS} s")

    def kill(self) -> None:
        """`kill -9` the server, as a crash would."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.proc = None

    def stop(self) -> None:
        """Stop the server: SIGTERM (it stops running builds), SIGKILL after 20 s."""
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def close(self) -> None:
        """Stop the server for good and remove the (empty) cgroups its builds lived in."""
        self.stop()
        for build_dir in build_cgroup_dirs(self, 0):
            # Only an empty cgroup can be removed; a leftover build keeps it (and fails
            # the test that checks for leftovers).
            with contextlib.suppress(OSError):
                build_dir.parent.rmdir()

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the server's log, for failure messages."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def _deliver(self, path: str, body: bytes, headers: dict[str, str]) -> int:
        response = httpx.post(f"{self.url}{path}", content=body, headers=headers, timeout=10)
        assert response.status_code == 202, f"{response.status_code} {response.text}"
        build_id = response.json()["build_id"]
        assert isinstance(build_id, int)
        return build_id

    def github(self, event: str, body: bytes) -> int:
        """Deliver a signed GitHub webhook; return the id of the build it created."""
        digest = hmac.new(GITHUB_SECRET.encode(), body, hashlib.sha256).hexdigest()
        headers = {
            "Content-Type": "application/json",
            "X-GitHub-Event": event,
            "X-GitHub-Delivery": str(uuid.uuid4()),
            "X-GitHub-Hook-ID": "1",
            "X-Hub-Signature-256": f"sha256={digest}",
        }
        return self._deliver("/webhooks/github", body, headers)

    def gitlab(self, event: str, body: bytes) -> int:
        """Deliver a GitLab webhook with its secret token; return the build id."""
        headers = {
            "Content-Type": "application/json",
            "X-Gitlab-Event": event,
            "X-Gitlab-Token": GITLAB_SECRET,
            "Idempotency-Key": str(uuid.uuid4()),
        }
        return self._deliver("/webhooks/gitlab", body, headers)

    def build(self, build_id: int) -> dict[str, object]:
        """`GET /api/builds/<id>`."""
        response = httpx.get(f"{self.url}/api/builds/{build_id}", timeout=10)
        assert response.status_code == 200, response.text
        data: dict[str, object] = response.json()
        return data

    def admin_publish(self, build_id: int) -> dict[str, object]:
        """`POST /api/builds/<id>/publish` with the admin token; return the build it answers."""
        response = httpx.post(
            f"{self.url}/api/builds/{build_id}/publish",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            timeout=10,
        )
        assert response.status_code == 202, response.text
        data: dict[str, object] = response.json()
        return data

    def build_log(self, build_id: int) -> str:
        """`GET /builds/<id>/log`."""
        response = httpx.get(f"{self.url}/builds/{build_id}/log", timeout=10)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/plain")
        return response.text

    def wait_for(
        self, what: str, probe: Callable[[], _T | None], *, timeout: float = BUILD_SECONDS
    ) -> _T:
        """Poll `probe` until it returns something other than None or False.

        Raises:
            AssertionError: Not within `timeout` seconds; says `what`, the last value
                seen and the server's log tail.
        """
        deadline = time.monotonic() + timeout
        while True:
            value = probe()
            if value is not None and value is not False:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout} s waiting for {what}\n"
                    f"--- isorunner log tail ---\n{self.log_tail()}"
                )
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(
                    f"isorunner serve died while waiting for {what}\n{self.log_tail()}"
                )
            time.sleep(POLL)

    def wait_finished(self, build_id: int, *, timeout: float = BUILD_SECONDS) -> dict[str, object]:
        """Wait until the build is in a final state; return its record."""
        final = {"succeeded", "failed", "errored", "cancelled"}

        def probe() -> dict[str, object] | None:
            record = self.build(build_id)
            return record if record["state"] in final else None

        return self.wait_for(f"build {build_id} to finish", probe, timeout=timeout)

    def wait_release(self, build_id: int, *, timeout: float = BUILD_SECONDS) -> dict[str, object]:
        """Wait until the build's release is published or refused; return it (API form)."""

        def probe() -> dict[str, object] | None:
            release = self.build(build_id).get("release")
            if isinstance(release, dict) and release["state"] in ("published", "refused"):
                return release
            return None

        return self.wait_for(f"the release of build {build_id}", probe, timeout=timeout)

    def wait_in_container(self, build_id: int, *, timeout: float = 30) -> list[str]:
        """Wait until the build runs and its container process is up; return what it holds.

        Watches the sandbox, not `GET /builds/<id>/log`: that endpoint can break off a
        log that grows while it is served (a real bug, reported).
        """

        def probe() -> list[str] | None:
            held = sandbox_leftovers(self, build_id)
            running = self.build(build_id)["state"] == "running"
            # The packages step runs pacman under the sandbox root too: wait for the
            # container itself (its overlay is mounted).
            up = any(h.startswith("process ") for h in held) and any(
                h.startswith("mount ") for h in held
            )
            return held if running and up else None

        return self.wait_for(f"build {build_id} to run in its container", probe, timeout=timeout)

    def wait_statuses(
        self,
        forge: FakeForge,
        kind: Forge,
        repo: str,
        sha: str,
        done: Callable[[list[StatusRecord]], bool],
        *,
        timeout: float = BUILD_SECONDS,
    ) -> list[StatusRecord]:
        """Wait until the statuses the forge holds for `sha` satisfy `done`; return them."""
        seen: list[StatusRecord] = []

        def probe() -> list[StatusRecord] | None:
            nonlocal seen
            seen = forge.statuses(kind, repo, sha)
            return seen if done(seen) else None

        try:
            return self.wait_for(f"statuses of {repo}@{sha[:7]}", probe, timeout=timeout)
        except AssertionError as exc:
            states = [(s.state, s.description) for s in seen]
            raise AssertionError(f"statuses so far: {states}\n{exc}") from None


def final_status(*states: str) -> Callable[[list[StatusRecord]], bool]:
    """A `done` predicate: the last status is in one of `states`."""
    return lambda seen: bool(seen) and seen[-1].state in states


def release_settled(seen: list[StatusRecord]) -> bool:
    """A `done` predicate: the last status says the release was published or refused."""
    text = seen[-1].description or "" if seen else ""
    return text.endswith("release published") or "release refused" in text


def make_server(
    root: Path,
    forge: FakeForge,
    repos: Repos,
    upstream: UpstreamServer,
    *,
    server_extra: str = "",
    sandbox_extra: str = "",
) -> Isorunner:
    """Write a config under `root` for `repos` and return the (not started) server."""
    port = free_port()
    config = root / "isorunner.toml"
    text = config_text(
        root, port, forge, repos, upstream, server_extra=server_extra, sandbox_extra=sandbox_extra
    )
    config.write_text(text)
    return Isorunner(root=root, config=config, port=port, log=root / "isorunner.log")


def build_cgroup_dirs(server: Isorunner, build_id: int) -> list[Path]:
    """Where the sandbox puts a build's cgroups: `<server's cgroup>/<prefix>/<machine>`.

    The server inherits this process's cgroups (v1 controllers, or the v2 tree).
    """
    prefix = machine_prefix(server.sandbox_root)
    machine = f"{prefix}-build-{build_id}"
    own = dict(
        line.split(":", 2)[1:] for line in Path("/proc/self/cgroup").read_text().splitlines()
    )
    root = Path("/sys/fs/cgroup")
    if detect_host().cgroup_mode == "v2":
        return [root / own[""].lstrip("/") / prefix / machine]
    return [root / c / own[c].lstrip("/") / prefix / machine for c in V1_CONTROLLERS]


def sandbox_leftovers(server: Isorunner, build_id: int) -> list[str]:
    """What is left of a build's sandbox: mounts, directories, cgroups, processes."""
    root = str(server.sandbox_root)
    found = [
        f"mount {line.split()[4]}"
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
        if root in line
    ]
    builds = server.sandbox_root / "builds"
    if builds.is_dir():
        found += [f"directory {path}" for path in builds.iterdir()]
    found += [f"cgroup {path}" for path in build_cgroup_dirs(server, build_id) if path.is_dir()]
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if root in cmdline and "runner serve" not in cmdline:
                found.append(f"process {proc.name}: {cmdline[:120]}")
    return found


def checksums(text: str) -> dict[str, str]:
    """A `sha256sums`/`b2sums` file's `<hex>  <name>` lines as {name: hex}."""
    sums: dict[str, str] = {}
    for line in text.splitlines():
        digest, name = line.split(maxsplit=1)
        sums[name.lstrip("*")] = digest
    return sums


# -- fixtures ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def standin() -> Path:
    """The stand-in base (skips, or fails under CI, where the host cannot build)."""
    return require_sandbox()


@pytest.fixture(scope="module")
def state_root(tmp_path_factory: pytest.TempPathFactory, standin: Path) -> Iterator[Path]:
    """A directory on a real file system for one module's server state and sandboxes."""
    root = disk_dir(tmp_path_factory.mktemp("e2e"), "state")
    yield root
    if root.is_relative_to("/var/tmp"):
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def forge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeForge]:
    """A fake GitHub + GitLab on 127.0.0.1 shared by a module's tests."""
    with run_fake_forge(tmp_path_factory.mktemp("forge")) as running:
        yield running


@pytest.fixture(scope="module")
def upstream(standin: Path) -> Iterator[UpstreamServer]:
    """The stand-in's signed package upstream, served on 127.0.0.1 for the module."""
    with serve_upstream(UPSTREAM / "www") as running:
        yield running


@pytest.fixture(scope="module")
def profiles(tmp_path_factory: pytest.TempPathFactory, standin: Path) -> Path:
    """A directory for the profiles the module's tests seed."""
    return tmp_path_factory.mktemp("profiles")

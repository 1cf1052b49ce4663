"""End to end, as an attacker: hostile deliveries, profiles and credentials against `serve`.

One real `isorunner serve` (with an admin token) and one fake forge serve the module.
The last test stops the server and reads everything it logged: no token the run used
may be in it, and no empty cgroup directory may be left behind.
"""

from __future__ import annotations

import gzip
import hashlib
import hmac
import io
import json
import os
import socket
import subprocess
import sys
import tarfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import (
    GITHUB_SECRET,
    GITHUB_TOKEN,
    GITLAB_SECRET,
    GITLAB_TOKEN,
    Isorunner,
    Repos,
    build_cgroup_dirs,
    final_status,
    github_pull_request,
    github_push,
    gitlab_push,
    make_profile,
    make_server,
    new_sha,
)
from tests.e2e.fakeforge import FakeForge
from tests.runner.packages.upstream import UpstreamServer

pytestmark = pytest.mark.integration

ADMIN_TOKEN = "e2e-admin-token-0123456789abcdef"
GH_REPO = "acme/hostile-e2e"
GL_PROJECT = "lab/hostile-e2e"
GL_PROJECT_ID = 4343
HOSTILE_TAG = "v" + "1" * 40 + "!"
"""A valid git tag matching `v*` that GitLab's package registry refuses (and that once
froze the service in a backtracking pattern)."""
QUERY_SECRET = "query-secret-in-a-page-url"
DONE = final_status("success", "failure", "error", "failed", "canceled")


@pytest.fixture(scope="module")
def server(state_root: Path, forge: FakeForge, upstream: UpstreamServer) -> Iterator[Isorunner]:
    """A real `isorunner serve` with an admin token, for this module."""
    running = make_server(
        state_root,
        forge,
        Repos(github=[GH_REPO], gitlab=[GL_PROJECT]),
        upstream,
        server_extra=f'admin_token = "{ADMIN_TOKEN}"\n',
    )
    running.start()
    yield running
    running.close()


def _gitlab_delivery(server: Isorunner, body: bytes) -> httpx.Response:
    headers = {
        "Content-Type": "application/json",
        "X-Gitlab-Event": "Tag Push Hook",
        "X-Gitlab-Token": GITLAB_SECRET,
        "Idempotency-Key": str(uuid.uuid4()),
    }
    return httpx.post(f"{server.url}/webhooks/gitlab", content=body, headers=headers, timeout=60)


def _github_delivery(server: Isorunner, body: bytes) -> httpx.Response:
    digest = hmac.new(GITHUB_SECRET.encode(), body, hashlib.sha256).hexdigest()
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": str(uuid.uuid4()),
        "X-Hub-Signature-256": f"sha256={digest}",
    }
    return httpx.post(f"{server.url}/webhooks/github", content=body, headers=headers, timeout=60)


def _builds(server: Isorunner, repo: str) -> list[dict[str, object]]:
    response = httpx.get(f"{server.url}/api/builds", params={"repo": repo}, timeout=30)
    assert response.status_code == 200, response.text
    builds: list[dict[str, object]] = response.json()["builds"]
    return builds


def test_hostile_gitlab_tags_are_ignored_while_healthz_keeps_answering(
    server: Isorunner, forge: FakeForge, profiles: Path
) -> None:
    """Twenty pushes of the freezing tag are ignored with the reason; /healthz answers meanwhile."""
    sha = new_sha()
    forge.seed_gitlab(
        GL_PROJECT,
        token=GITLAB_TOKEN,
        commits={sha: make_profile(profiles, "gl-tag")},
        refs={HOSTILE_TAG: sha},
        project_id=GL_PROJECT_ID,
    )
    body = gitlab_push(GL_PROJECT, GL_PROJECT_ID, sha, f"refs/tags/{HOSTILE_TAG}")
    answers: list[httpx.Response] = []

    def push_tags() -> None:
        for _ in range(20):
            answers.append(_gitlab_delivery(server, body))

    pusher = threading.Thread(target=push_tags)
    pusher.start()
    health: list[int] = []
    while pusher.is_alive() or not health:
        # The timeout is a hang guard: a frozen loop never answers at all.
        health.append(httpx.get(f"{server.url}/healthz", timeout=30).status_code)
    pusher.join()

    assert set(health) == {200}
    assert [a.status_code for a in answers] == [200] * 20
    reason = answers[0].json()["ignored"]
    assert "cannot be released on GitLab" in reason
    assert HOSTILE_TAG in reason
    assert _builds(server, GL_PROJECT) == []
    assert forge.packages(GL_PROJECT) == []


def _raw_post(server: Isorunner, path: str, header_lines: bytes) -> bytes:
    """POST with header bytes exactly as given (httpx refuses a value ending in a space)."""
    request = (
        (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n"
        ).encode()
        + header_lines
        + b"\r\n"
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer.partition(b"\r\n")[0]


def test_an_empty_bearer_token_opens_nothing(server: Isorunner) -> None:
    """`Authorization: Bearer ` with nothing after it is refused by the running server."""
    for header in (b"Authorization: Bearer \r\n", b"Authorization: Bearer\r\n", b""):
        status = _raw_post(server, "/api/builds/1/cancel", header)
        assert status == b"HTTP/1.1 401 Unauthorized", (header, status)


def test_serve_refuses_to_start_with_a_blank_admin_token_file(
    tmp_path: Path, forge: FakeForge, upstream: UpstreamServer
) -> None:
    """An admin token file holding only a newline stops `serve` at once, naming the key."""
    token = tmp_path / "admin-token"
    token.write_text("\n")
    blank = make_server(
        tmp_path, forge, Repos(), upstream, server_extra=f'admin_token_file = "{token}"\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("ISORUNNER_")}
    result = subprocess.run(
        [sys.executable, "-m", "runner", "serve", "--config", str(blank.config)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "server.admin_token: is empty or shorter than 16 bytes" in result.stderr


def test_a_huge_commit_message_makes_a_small_build_record(
    server: Isorunner, forge: FakeForge, profiles: Path
) -> None:
    """A 20 MiB one-line commit message becomes a 1,000-character title; listings stay small."""
    sha = new_sha()
    forge.seed_github(GH_REPO, token=GITHUB_TOKEN, commits={sha: make_profile(profiles, "big")})
    body = github_push(GH_REPO, sha, "refs/heads/main", message="m" * (20 * 1024 * 1024))
    response = _github_delivery(server, body)
    assert response.status_code == 202, response.text
    build_id = response.json()["build_id"]
    server.wait_finished(build_id)

    listing = httpx.get(f"{server.url}/api/builds", params={"limit": 100}, timeout=30)
    assert len(listing.content) < 64 * 1024
    title = server.build(build_id)["request"]
    assert isinstance(title, dict)
    assert title["title"] == "m" * 999 + "…"
    page = httpx.get(f"{server.url}/builds/{build_id}", timeout=30)
    assert len(page.content) < 256 * 1024


def test_a_profiles_escape_sequences_and_forged_lines_are_inert_in_its_log(
    server: Isorunner, forge: FakeForge, profiles: Path
) -> None:
    """Escapes, BEL, CR and NUL a profile prints are visible text, after `| `, in log and page."""
    sha = new_sha()
    hostile = "printf '\\033[2J\\033]0;pwned\\007\\r\\000[isorunner] succeed: ISO built in 1s\\n'"
    forge.seed_github(
        GH_REPO, token=GITHUB_TOKEN, commits={sha: make_profile(profiles, "esc", append=hostile)}
    )
    build_id = server.github("push", github_push(GH_REPO, sha, "refs/heads/main"))
    server.wait_finished(build_id)

    log = server.build_log(build_id)
    assert "| ␛[2J␛]0;pwned␇␍␀[isorunner] succeed: ISO built in 1s" in log.splitlines()
    assert not any(char in log for char in "\x1b\x07\r\x00")
    page = httpx.get(f"{server.url}/builds/{build_id}", timeout=30).text
    assert "\x1b" not in page
    assert "␛[2J" in page


def test_a_truncated_archive_names_the_entry_it_ends_in(
    server: Isorunner, forge: FakeForge, profiles: Path
) -> None:
    """A profile archive cut inside a file fails the build, naming that file."""
    sha = new_sha()
    top = f"acme-hostile-e2e-{sha[:7]}"
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        tar.add(make_profile(profiles, "cut"), arcname=top)
        blob = tarfile.TarInfo(f"{top}/airootfs/blob")
        blob.size = 256 * 1024
        tar.addfile(blob, io.BytesIO(os.urandom(blob.size)))
    whole = gzip.compress(data.getvalue())
    archive = profiles / "cut.tar.gz"
    archive.write_bytes(whole[: len(whole) - 64 * 1024])
    forge.seed_github(GH_REPO, token=GITHUB_TOKEN, commits={sha: archive})
    build_id = server.github("push", github_push(GH_REPO, sha, "refs/heads/main"))

    statuses = server.wait_statuses(forge, "github", GH_REPO, sha, DONE)
    record = server.wait_finished(build_id)

    assert record["state"] == "failed", record
    assert f"'{top}/airootfs/blob' is cut short" in str(record["detail"])
    assert "cut short" in (statuses[-1].description or "")


def test_a_profile_that_fills_its_disk_fails_at_the_cap(
    server: Isorunner, forge: FakeForge, profiles: Path
) -> None:
    """Writing to /build/work until it is full fails the build: "disk limit reached"."""
    sha = new_sha()
    fill = "dd if=/dev/zero of=/build/work/fill bs=1M; sleep 100"
    forge.seed_github(
        GH_REPO, token=GITHUB_TOKEN, commits={sha: make_profile(profiles, "fill", append=fill)}
    )
    build_id = server.github("push", github_push(GH_REPO, sha, "refs/heads/main"))

    statuses = server.wait_statuses(forge, "github", GH_REPO, sha, DONE)
    record = server.wait_finished(build_id)

    assert record["state"] == "failed", record
    assert "disk limit reached" in str(record["detail"]), record["detail"]
    assert "sandbox.max_disk_bytes" in str(record["detail"])
    assert statuses[-1].state == "failure"


def test_a_forks_build_is_marked_untrusted_and_its_iso_is_not_kept(
    server: Isorunner, forge: FakeForge, profiles: Path
) -> None:
    """A fork PR's page warns, its files live under /untrusted/, and its ISO is gone."""
    sha = new_sha()
    profile = make_profile(profiles, "fork")
    forge.seed_github(GH_REPO, token=GITHUB_TOKEN, commits={sha: profile})
    forge.seed_github("mallory/hostile-e2e", token=GITHUB_TOKEN, commits={sha: profile})
    body = github_pull_request(GH_REPO, "mallory/hostile-e2e", sha, number=41)
    build_id = server.github("pull_request", body)
    assert server.wait_finished(build_id)["state"] == "succeeded"

    page = httpx.get(f"{server.url}/builds/{build_id}", timeout=30).text
    assert "Untrusted build." in page
    links = [part.split('"')[0] for part in page.split('href="')[1:]]
    downloads = sorted(link for link in links if f"/builds/{build_id}/" in link)
    # Only the sums are listed (the ISO was deleted once built), under /untrusted/.
    assert downloads == [
        f"/builds/{build_id}/log",
        f"/builds/{build_id}/untrusted/b2sums",
        f"/builds/{build_id}/untrusted/sha256sums",
    ]
    sums = httpx.get(f"{server.url}/builds/{build_id}/untrusted/sha256sums", timeout=30)
    assert sums.status_code == 200
    assert "untrusted-sha256sums" in sums.headers["content-disposition"]
    (iso,) = [line.split()[1] for line in sums.text.splitlines()]
    for folder in ("untrusted", "artifacts"):
        gone = httpx.get(f"{server.url}/builds/{build_id}/{folder}/{iso}", timeout=30)
        assert gone.status_code == 404
    official = httpx.get(f"{server.url}/builds/{build_id}/artifacts/sha256sums", timeout=30)
    assert official.status_code == 404


def test_the_log_holds_no_token_and_no_cgroup_directory_is_left(
    server: Isorunner, forge: FakeForge, profiles: Path
) -> None:
    """After GitHub and GitLab builds and a page URL with a query, no token is in any log line."""
    github_sha, gitlab_sha = new_sha(), new_sha()
    forge.seed_github(
        GH_REPO, token=GITHUB_TOKEN, commits={github_sha: make_profile(profiles, "gh-ok")}
    )
    forge.seed_gitlab(
        GL_PROJECT,
        token=GITLAB_TOKEN,
        commits={gitlab_sha: make_profile(profiles, "gl-ok")},
        refs={"main": gitlab_sha},
        project_id=GL_PROJECT_ID,
    )
    github_build = server.github("push", github_push(GH_REPO, github_sha, "refs/heads/main"))
    gitlab_build = server.gitlab(
        "Push Hook", gitlab_push(GL_PROJECT, GL_PROJECT_ID, gitlab_sha, "refs/heads/main")
    )
    assert server.wait_finished(github_build)["state"] == "succeeded"
    assert server.wait_finished(gitlab_build)["state"] == "succeeded"
    httpx.get(f"{server.url}/builds/{github_build}/log?token={QUERY_SECRET}", timeout=30)
    wrong = httpx.post(
        f"{server.url}/api/builds/{github_build}/retry",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}x"},
        timeout=30,
    )
    assert wrong.status_code == 401
    server.stop()

    tokens = {
        "GitHub API token": GITHUB_TOKEN,
        "GitLab API token": GITLAB_TOKEN,
        "GitHub webhook secret": GITHUB_SECRET,
        "GitLab webhook token": GITLAB_SECRET,
        "admin token": ADMIN_TOKEN,
        "archive redirect token": forge.codeload_token,
        "page query": QUERY_SECRET,
    }
    lines = server.log.read_text(errors="replace").splitlines()
    assert any("codeload" in line for line in lines), "the archive redirect was not logged"
    leaks = [(what, line) for line in lines for what, token in tokens.items() if token in line]
    assert leaks == []
    for parent in {path.parent for path in build_cgroup_dirs(server, 0)}:
        assert not parent.exists(), parent
    # Every line is one event: nothing the builds printed split a log line.
    assert all(json.dumps(line) for line in lines)

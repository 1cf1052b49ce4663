"""Tests for the build pages: `GET /` and `GET /builds/{id}`, through the ASGI app."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from markupsafe import escape
from pydantic import SecretStr

from tests.runner.store.samples import make_request
from tests.webhooks.testclient import TestClient
from tests.webhooks.webfakes import T0, DirArtifacts, DirLogs, WebStore
from webhooks.app import create_app
from webhooks.build import BuildState, Forge, RefKind, Release, ReleaseFile, ReleaseState
from webhooks.config import WebhookConfig

SECRET = "webhook-secret-do-not-show"
ADMIN = "admin-token-do-not-show"
CONFIG = WebhookConfig(
    public_url="https://ci.example.org", repos=(), github_secret=SecretStr(SECRET)
)
HOSTILE = [
    "<script>alert(1)</script>",
    "\"'><img src=x onerror=alert(2)>",
    "{{ 7*7 }}{% raw %}",
    "</pre><b>bold</b>",
]


@pytest.fixture
def store() -> WebStore:
    """An empty store."""
    return WebStore()


@pytest.fixture
def logs(tmp_path: Path) -> DirLogs:
    """Log files in a temporary directory."""
    (tmp_path / "logs").mkdir()
    return DirLogs(tmp_path / "logs")


@pytest.fixture
def arts(tmp_path: Path) -> DirArtifacts:
    """Artifact directories in a temporary directory."""
    (tmp_path / "artifacts").mkdir()
    return DirArtifacts(tmp_path / "artifacts")


@pytest.fixture
def client(store: WebStore, logs: DirLogs, arts: DirArtifacts) -> Iterator[TestClient]:
    """A client of the app with every page seam given."""
    app = create_app(
        CONFIG,
        sink=store,
        catalog=store,
        logs=logs,
        browser=store,
        control=store,
        artifacts=arts,
        admin_token=SecretStr(ADMIN),
        clock=lambda: T0,
    )
    with TestClient(app) as client:
        yield client


def _rows(html: str) -> list[int]:
    return [int(n) for n in re.findall(r'<td><a href="/builds/(\d+)">\d+<', html)]


def test_index_lists_builds_newest_first(client: TestClient, store: WebStore) -> None:
    """The list shows every build's state, forge, repo, ref, short SHA and duration."""
    first = store.add(state=BuildState.SUCCEEDED, ran_seconds=187)
    store.add(state=BuildState.RUNNING)
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    html = response.text
    assert _rows(html) == [2, 1]
    assert first.request.commit_sha[:10] in html
    assert "owner/profile" in html
    assert ">main<" in html
    assert "3m07s" in html
    assert 'class="state succeeded"' in html
    assert "github" in html


def test_index_filters_by_repo_and_state(client: TestClient, store: WebStore) -> None:
    """`repo` and `state` narrow the list; the form keeps the chosen values."""
    store.add(make_request(repo="a/one"), state=BuildState.FAILED)
    store.add(make_request(repo="b/two"), state=BuildState.FAILED)
    store.add(make_request(repo="a/one"), state=BuildState.SUCCEEDED)
    assert _rows(client.get("/", params={"repo": "a/one"}).text) == [3, 1]
    html = client.get("/", params={"repo": "a/one", "state": "failed"}).text
    assert _rows(html) == [1]
    assert '<option value="failed" selected>' in html
    assert 'value="a/one"' in html
    assert _rows(client.get("/", params={"repo": "", "state": ""}).text) == [3, 2, 1]


def test_index_paginates_with_a_keyset_cursor(client: TestClient, store: WebStore) -> None:
    """A full page links to the next one by `before=<last id>`, keeping the filters."""
    for _ in range(30):
        store.add()
    html = client.get("/").text
    assert _rows(html) == list(range(30, 5, -1))
    older = re.search(r'rel="next" href="([^"]+)"', html)
    assert older is not None
    assert older.group(1) == "/?before=6"
    assert _rows(client.get("/?before=6").text) == [5, 4, 3, 2, 1]
    assert 'rel="next"' not in client.get("/?before=6").text
    html = client.get("/", params={"state": "queued", "limit": "10"}).text
    assert "/?state=queued&amp;before=21" in html


def test_index_refuses_an_unknown_state(client: TestClient) -> None:
    """An unknown state filter is a 400 that names the valid states."""
    response = client.get("/", params={"state": "exploded"})
    assert response.status_code == 400
    assert "queued, running" in response.json()["error"]


def test_index_without_builds_says_so(client: TestClient) -> None:
    """An empty list is a sentence, not an empty table."""
    assert "No builds." in client.get("/").text


def test_build_page_links_the_commit_on_github(client: TestClient, store: WebStore) -> None:
    """A GitHub build links `{web_url}/commit/{sha}` and its pull request."""
    request = make_request(kind=RefKind.PULL_REQUEST, pr_number=42, ref="refs/heads/feature")
    store.add(request, state=BuildState.RUNNING)
    html = client.get("/builds/1").text
    assert f'href="https://github.com/owner/profile/commit/{request.commit_sha}"' in html
    assert 'href="https://github.com/owner/profile/pull/42">pull request #42</a>' in html
    assert "Add a package" in html
    assert "alice" in html


def test_build_page_links_the_commit_on_gitlab(client: TestClient, store: WebStore) -> None:
    """A GitLab build links `{web_url}/-/commit/{sha}` and its merge request."""
    request = make_request(
        forge=Forge.GITLAB,
        repo="group/sub/profile",
        web_url="https://gitlab.example.org/group/sub/profile",
        kind=RefKind.PULL_REQUEST,
        pr_number=7,
    )
    store.add(request, state=BuildState.FAILED, detail="mkarchiso exited with 1")
    html = client.get("/builds/1").text
    base = "https://gitlab.example.org/group/sub/profile"
    assert f'href="{base}/-/commit/{request.commit_sha}"' in html
    assert f'href="{base}/-/merge_requests/7">merge request #7</a>' in html
    assert "mkarchiso exited with 1" in html


def test_build_page_never_links_a_non_http_web_url(client: TestClient, store: WebStore) -> None:
    """A `javascript:` web URL from a delivery is shown as text, never as a link."""
    store.add(make_request(web_url="javascript:alert(1)//"), state=BuildState.SUCCEEDED)
    html = client.get("/builds/1").text
    assert "javascript:" not in html
    assert "/commit/" not in html


@pytest.mark.parametrize("hostile", HOSTILE)
def test_build_page_escapes_untrusted_text(
    client: TestClient, store: WebStore, logs: DirLogs, hostile: str
) -> None:
    """Branch names, titles, senders, repo names and log lines are escaped, never run."""
    request = make_request(
        ref=f"refs/heads/{hostile}",
        title=hostile,
        sender=hostile,
        repo=f"owner/{hostile}",
        source_repo=f"fork/{hostile}",
        trusted=False,
    )
    store.add(request, state=BuildState.FAILED, detail=hostile)
    logs.append(1, f"line one\n{hostile}\n")
    for path in ("/builds/1", "/", f"/?repo=owner/{hostile}"):
        html = client.get(path).text
        assert "<script>alert" not in html, path
        assert "<img" not in html
        assert "<b>bold" not in html
        # Not evaluated as a template either (the random CSP nonce may contain "49").
        assert "49" not in re.sub(r'nonce="[^"]*"', "", html)
        assert str(escape(hostile)) in html, path
        if str(escape(hostile)) != hostile:
            assert hostile not in html, path


def test_build_page_escapes_a_log_split_inside_an_entity(
    client: TestClient, store: WebStore, logs: DirLogs
) -> None:
    """A log whose multi-byte characters and markup span block boundaries is intact."""
    store.add(state=BuildState.SUCCEEDED)
    line = "é<ü>" * 70_000  # 490 KB, more than one read block, under the page's cap
    logs.append(1, line + "\n")
    html = client.get("/builds/1").text
    assert ("é&lt;ü&gt;" * 70_000) in html


def test_build_page_for_a_finished_build_needs_no_script(
    client: TestClient, store: WebStore, logs: DirLogs
) -> None:
    """A finished build's page holds its whole log and no script or stream."""
    store.add(state=BuildState.SUCCEEDED, detail="ISO built in 3m07s")
    logs.append(1, "[isorunner] build 1\n[isorunner] succeeded: ISO built in 3m07s\n")
    html = client.get("/builds/1").text
    assert "[isorunner] build 1\n[isorunner] succeeded: ISO built in 3m07s\n</pre>" in html
    assert "<script" not in html
    assert "data-stream" not in html
    assert "3m07s" in html


def test_build_page_of_a_running_build_streams_from_the_shown_offset(
    client: TestClient, store: WebStore, logs: DirLogs
) -> None:
    """A running build's page shows the complete lines and resumes the stream after them."""
    store.add(state=BuildState.RUNNING)
    logs.append(1, "one\ntwo\nthr")
    response = client.get("/builds/1")
    html = response.text
    assert '<pre id="log" data-stream="/builds/1/log/stream?after=8">one\ntwo\n</pre>' in html
    nonce = re.search(r'<script nonce="([^"]+)">', html)
    assert nonce is not None
    csp = response.headers["content-security-policy"]
    assert f"script-src 'nonce-{nonce.group(1)}'" in csp
    assert "default-src 'none'" in csp
    assert response.headers["cache-control"] == "no-store"


def test_build_page_shows_the_end_of_a_long_log(
    client: TestClient, store: WebStore, logs: DirLogs
) -> None:
    """A log longer than the page's cap is shown from a line start near its end."""
    store.add(state=BuildState.FAILED)
    logs.append(1, "".join(f"line {n:07d}\n" for n in range(100_000)))  # 1.3 MB
    html = client.get("/builds/1").text
    assert "Showing the end of the log." in html
    assert "line 0099999\n</pre>" in html
    assert "line 0000000" not in html
    shown = html[html.index('<pre id="log">') + len('<pre id="log">') :]
    assert re.match(r"line \d{7}\n", shown)
    assert len(shown) < 600 * 1024


def test_build_page_lists_artifacts_with_checksums(
    client: TestClient, store: WebStore, arts: DirArtifacts
) -> None:
    """A succeeded build's ISOs are listed with size, SHA-256 and BLAKE2b, and link to downloads."""
    store.add(state=BuildState.SUCCEEDED)
    folder = arts.root / "1"
    folder.mkdir()
    (folder / "archlinux-2025.03.01-x86_64.iso").write_bytes(b"\0" * 3000)
    (folder / "sha256sums").write_text(f"{'a' * 64}  archlinux-2025.03.01-x86_64.iso\n")
    (folder / "b2sums").write_text(f"{'b' * 128}  archlinux-2025.03.01-x86_64.iso\n")
    html = client.get("/builds/1").text
    assert 'href="/builds/1/artifacts/archlinux-2025.03.01-x86_64.iso"' in html
    assert "2.9 KiB" in html
    assert "a" * 64 in html
    assert "b" * 128 in html
    assert html.index("archlinux-2025") < html.index('href="/builds/1/artifacts/sha256sums"')


def test_build_page_shows_the_release_progress_and_error(
    client: TestClient, store: WebStore
) -> None:
    """A retrying release shows its state, next attempt, error and which files are up."""
    files = (ReleaseFile("a.iso", 3000, "ab" * 32, uploaded=True), ReleaseFile("b2sums", 9, ""))
    error = "could not upload b2sums: the forge answered <502>"
    waiting = Release("v1", ReleaseState.RETRYING, T0, 2, T0, error, "", files)
    store.add(state=BuildState.SUCCEEDED, release=waiting)
    html = client.get("/builds/1").text
    section = html[html.index('<dl id="release">') :]
    assert '<span class="state retrying">retrying</span>' in section
    assert "could not upload b2sums: the forge answered &lt;502&gt;" in section
    assert "<dt>next attempt</dt><dd>2025-03-01 12:00:00 UTC</dd>" in section
    assert "<td>2.9 KiB</td><td>yes</td>" in section
    assert "<td>9 B</td><td>not yet</td>" in section


def test_build_page_links_a_published_release_only_over_http(
    client: TestClient, store: WebStore
) -> None:
    """A published release links its page; a URL that is not http(s) is not linked."""
    page = "https://github.com/o/r/releases/tag/v1"
    store.add(
        state=BuildState.SUCCEEDED, release=Release("v1", ReleaseState.PUBLISHED, T0, url=page)
    )
    hostile = Release("v2", ReleaseState.PUBLISHED, T0, url="javascript:alert(1)")
    store.add(state=BuildState.SUCCEEDED, release=hostile)
    assert f'<a href="{page}">' in client.get("/builds/1").text
    assert "javascript:" not in client.get("/builds/2").text


def test_build_page_of_unknown_build_is_404(client: TestClient) -> None:
    """An unknown build is 404: JSON for tools, a page for browsers."""
    assert client.get("/builds/9").status_code == 404
    response = client.get("/builds/9", headers={"accept": "text/html"})
    assert response.status_code == 404
    assert "no build with id 9" in response.text
    assert response.headers["content-type"].startswith("text/html")


def test_pages_never_show_secrets(client: TestClient, store: WebStore, logs: DirLogs) -> None:
    """Neither the webhook secret nor the admin token appears on any page."""
    store.add(state=BuildState.RUNNING)
    logs.append(1, "building\n")
    for path in ("/", "/builds/1", "/api/builds", "/api/builds/1", "/api/openapi.json"):
        text = client.get(path).text
        assert SECRET not in text
        assert ADMIN not in text

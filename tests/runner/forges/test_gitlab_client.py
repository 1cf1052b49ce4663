"""Tests for `runner.forges.gitlab_client.GitLabClient` over a mocked GitLab."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import respx

from runner.forges.client import ForgeTransport
from runner.forges.exceptions import Conflict, ReleaseRefused
from runner.forges.gitlab_client import GitLabClient
from runner.forges.protocol import CommitState, ForgeClient
from runner.forges.tokens import StaticToken
from tests.runner.forges.conftest import GITLAB_API, FakeClock

pytestmark = pytest.mark.anyio

TOKEN = "glpat-static-test-token"
PROJECT = "group/sub/proj"
ENCODED = "group%2Fsub%2Fproj"
SHA = "0123456789abcdef0123456789abcdef01234567"
STATUS_URL = f"{GITLAB_API}/projects/{ENCODED}/statuses/{SHA}"
PACKAGES = f"{GITLAB_API}/projects/{ENCODED}/packages/generic/isorunner/v1"
RELEASE_PAGE = "https://gitlab.example.com/group/sub/proj/-/releases/v1"


@pytest.fixture
def client(transport: ForgeTransport) -> GitLabClient:
    """A GitLab client with a static token and the status name `isorunner`."""
    return GitLabClient(transport, StaticToken(TOKEN), api_url=GITLAB_API)


def sent_json(request: httpx.Request) -> dict[str, object]:
    """The JSON body of a recorded request."""
    data = json.loads(request.content)
    assert isinstance(data, dict)
    return data


async def post(client: GitLabClient, state: CommitState, description: str = "d") -> None:
    """Post a status for the test commit on `main`."""
    await client.set_status(
        PROJECT, SHA, state, description=description, target_url=None, ref="main"
    )


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (CommitState.QUEUED, "pending"),
        (CommitState.RUNNING, "running"),
        (CommitState.SUCCESS, "success"),
        (CommitState.FAILURE, "failed"),
        (CommitState.ERROR, "failed"),
        (CommitState.CANCELLED, "canceled"),
    ],
)
async def test_set_status_maps_states_to_gitlab(
    router: respx.Router, client: GitLabClient, state: CommitState, expected: str
) -> None:
    """Each isorunner state is posted as GitLab's state, to the encoded project path."""
    route = router.post(STATUS_URL).mock(return_value=httpx.Response(201, json={}))
    await post(client, state)
    sent = route.calls.last.request
    assert sent_json(sent)["state"] == expected
    assert sent.url.raw_path.startswith(f"/api/v4/projects/{ENCODED}/statuses/".encode())
    assert sent.headers["PRIVATE-TOKEN"] == TOKEN


async def test_set_status_never_posts_a_refused_transition(
    router: respx.Router, client: GitLabClient
) -> None:
    """Repeated pending/running posts are skipped; after a final state anything goes."""
    route = router.post(STATUS_URL).mock(return_value=httpx.Response(201, json={}))
    for state in (
        CommitState.QUEUED,
        CommitState.QUEUED,
        CommitState.RUNNING,
        CommitState.RUNNING,
        CommitState.QUEUED,
        CommitState.SUCCESS,
        CommitState.QUEUED,
    ):
        await post(client, state)
    posted = [sent_json(call.request)["state"] for call in route.calls]
    assert posted == ["pending", "running", "success", "pending"]


async def test_set_status_treats_cannot_transition_as_already_there(
    router: respx.Router, client: GitLabClient
) -> None:
    """A 400 "Cannot transition status" (posted by an earlier process) is not an error."""
    refused = {"message": "Cannot transition status via :run from :running"}
    route = router.post(STATUS_URL).mock(return_value=httpx.Response(400, json=refused))
    await post(client, CommitState.RUNNING)
    await post(client, CommitState.RUNNING)
    assert route.call_count == 1


async def test_set_status_retries_a_409_lock_conflict(
    router: respx.Router, client: GitLabClient, clock: FakeClock
) -> None:
    """A 409 while another update holds the lock is retried after a backoff."""
    router.post(STATUS_URL).mock(side_effect=[httpx.Response(409), httpx.Response(201, json={})])
    await post(client, CommitState.SUCCESS)
    assert clock.sleeps == [1.0]


async def test_set_status_raises_conflict_when_409_persists(
    router: respx.Router, http: httpx.AsyncClient, clock: FakeClock
) -> None:
    """A lock that stays busy past the retry budget ends in `Conflict`."""
    router.post(STATUS_URL).mock(return_value=httpx.Response(409))
    transport = ForgeTransport(http, sleep=clock.sleep, clock=clock, max_retry_seconds=3)
    client = GitLabClient(transport, StaticToken(TOKEN), api_url=GITLAB_API)
    with pytest.raises(Conflict):
        await post(client, CommitState.FAILURE)


async def test_download_archive_streams_the_commit_archive(
    router: respx.Router, client: GitLabClient, tmp_path: Path
) -> None:
    """The archive at the commit is written to disk and its size returned."""
    route = router.get(f"{GITLAB_API}/projects/{ENCODED}/repository/archive.tar.gz").mock(
        return_value=httpx.Response(200, content=b"\x1f\x8bARCHIVE")
    )
    dest = tmp_path / "profile.tar.gz"
    assert await client.download_archive(PROJECT, SHA, dest, max_bytes=100) == 9
    assert dest.read_bytes() == b"\x1f\x8bARCHIVE"
    assert route.calls.last.request.url.params["sha"] == SHA


@pytest.fixture
def files(tmp_path: Path) -> list[Path]:
    """An ISO and its checksum file."""
    iso = tmp_path / "image.iso"
    iso.write_bytes(b"ISO-BYTES")
    sums = tmp_path / "sha256sums"
    sums.write_bytes(b"abc  image.iso\n")
    return [iso, sums]


def package_file(file_id: int, name: str, size: int) -> httpx.Response:
    """GitLab's answer to a generic package upload with `select=package_file`."""
    return httpx.Response(201, json={"id": file_id, "file_name": name, "size": size})


async def test_publish_release_uploads_in_order_then_creates_the_release(
    router: respx.Router, client: GitLabClient, files: list[Path]
) -> None:
    """Files go up one after the other, whole, then the release links to each of them."""
    iso = router.put(f"{PACKAGES}/image.iso").mock(return_value=package_file(1, "image.iso", 9))
    sums = router.put(f"{PACKAGES}/sha256sums").mock(return_value=package_file(2, "sha256sums", 15))
    create = router.post(f"{GITLAB_API}/projects/{ENCODED}/releases").mock(
        return_value=httpx.Response(201, json={"tag_name": "v1", "_links": {"self": RELEASE_PAGE}})
    )
    url = await client.publish_release(PROJECT, "v1", files, name="Image v1", body="notes")
    assert url == RELEASE_PAGE
    assert iso.calls.last.request.content == b"ISO-BYTES"
    assert iso.calls.last.request.headers["Content-Length"] == "9"
    assert sums.calls.last.request.content == b"abc  image.iso\n"
    order = [call.request.url.path.rsplit("/", 1)[-1] for call in router.calls]
    assert order == ["image.iso", "sha256sums", "releases"]
    body = sent_json(create.calls.last.request)
    assert body["tag_name"] == "v1"
    assert body["assets"] == {
        "links": [
            {
                "name": name,
                "url": f"{PACKAGES}/{name}",
                "direct_asset_path": f"/{name}",
                "link_type": "package",
            }
            for name in ("image.iso", "sha256sums")
        ]
    }


async def test_publish_release_updates_an_existing_release_and_its_links(
    router: respx.Router, client: GitLabClient, files: list[Path]
) -> None:
    """A 409 on create updates the release, repoints a changed link and adds a missing one."""
    release_url = f"{GITLAB_API}/projects/{ENCODED}/releases"
    router.put(f"{PACKAGES}/image.iso").mock(return_value=package_file(1, "image.iso", 9))
    router.put(f"{PACKAGES}/sha256sums").mock(return_value=package_file(2, "sha256sums", 15))
    router.post(release_url).mock(return_value=httpx.Response(409, json={"message": "exists"}))
    update = router.put(f"{release_url}/v1").mock(
        return_value=httpx.Response(200, json={"tag_name": "v1", "_links": {"self": RELEASE_PAGE}})
    )
    old = {"id": 8, "name": "image.iso", "url": "https://old.example.com/image.iso"}
    router.get(f"{release_url}/v1/assets/links").mock(return_value=httpx.Response(200, json=[old]))
    link = {"id": 8, "name": "image.iso", "url": f"{PACKAGES}/image.iso"}
    repoint = router.put(f"{release_url}/v1/assets/links/8").mock(
        return_value=httpx.Response(200, json=link)
    )
    added = router.post(f"{release_url}/v1/assets/links").mock(
        return_value=httpx.Response(201, json={**link, "id": 9, "name": "sha256sums"})
    )
    url = await client.publish_release(PROJECT, "v1", files, name="v1", body="notes")
    assert url == RELEASE_PAGE
    assert sent_json(update.calls.last.request) == {"name": "v1", "description": "notes"}
    assert sent_json(repoint.calls.last.request)["url"] == f"{PACKAGES}/image.iso"
    assert sent_json(added.calls.last.request)["name"] == "sha256sums"


async def test_publish_release_refuses_an_invalid_version_before_any_request(
    router: respx.Router, client: GitLabClient, files: list[Path]
) -> None:
    """A tag that is not a valid package version is refused and nothing is sent."""
    with pytest.raises(ReleaseRefused, match="not a valid generic package version"):
        await client.publish_release(PROJECT, "release/1", files, name="r", body="")
    assert router.calls.call_count == 0


def test_gitlab_client_is_a_forge_client(transport: ForgeTransport) -> None:
    """`GitLabClient` has the shape the worker expects (checked by mypy and at run time)."""
    client: ForgeClient = GitLabClient(transport, StaticToken(TOKEN))
    assert isinstance(client, ForgeClient)

"""Tests for `runner.forges.github_client.GitHubClient` over a mocked GitHub."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
import respx

from runner.forges.client import ForgeTransport
from runner.forges.exceptions import AssetTooLarge, Conflict, ForgeUnavailable, Unauthorized
from runner.forges.github_client import GitHubClient
from runner.forges.protocol import CommitState, ForgeClient
from runner.forges.request import JSONValue
from runner.forges.tokens import StaticToken
from tests.runner.forges.conftest import GITHUB_API, GITHUB_UPLOADS, FakeClock
from tests.runner.forges.samples import sample

pytestmark = pytest.mark.anyio

TOKEN = "ghp_static-test-token"
REPO = "octo-org/profile"
SHA = "0123456789abcdef0123456789abcdef01234567"
API = f"{GITHUB_API}/repos/{REPO}"
UPLOADS = f"{GITHUB_UPLOADS}/repos/{REPO}/releases/7/assets"


@pytest.fixture
def client(transport: ForgeTransport) -> GitHubClient:
    """A GitHub client with a static token and the context `isorunner/build`."""
    return GitHubClient(transport, StaticToken(TOKEN), context="isorunner/build")


def release_json(*, draft: bool, immutable: bool = False) -> dict[str, JSONValue]:
    """A release as GitHub returns it, reduced to the fields the client reads."""
    return {
        "id": 7,
        "tag_name": "v1",
        "draft": draft,
        "immutable": immutable,
        "html_url": "https://github.com/octo-org/profile/releases/tag/v1",
        "assets": [],
    }


def asset_json(asset_id: int, name: str, *, state: str, size: int) -> dict[str, JSONValue]:
    """A release asset as GitHub returns it."""
    return {"id": asset_id, "name": name, "state": state, "size": size}


@pytest.fixture
def files(tmp_path: Path) -> list[Path]:
    """An ISO and its checksum file."""
    iso = tmp_path / "image.iso"
    iso.write_bytes(b"ISO-DATA")
    sums = tmp_path / "sha256sums"
    sums.write_bytes(b"abc  image.iso\n")
    return [iso, sums]


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (CommitState.QUEUED, "pending"),
        (CommitState.RUNNING, "pending"),
        (CommitState.SUCCESS, "success"),
        (CommitState.FAILURE, "failure"),
        (CommitState.ERROR, "error"),
        (CommitState.CANCELLED, "error"),
    ],
)
async def test_set_status_maps_states_to_github(
    router: respx.Router, client: GitHubClient, state: CommitState, expected: str
) -> None:
    """Each isorunner state is posted as GitHub's state, with the configured context."""
    route = router.post(f"{API}/statuses/{SHA}").mock(return_value=httpx.Response(201))
    await client.set_status(
        REPO, SHA, state, description="x" * 300, target_url="https://ci.example.com/b/1"
    )
    sent = route.calls.last.request
    assert sent.headers["Authorization"] == f"Bearer {TOKEN}"
    body = httpx.Response(200, content=sent.content).json()
    assert body["state"] == expected
    assert body["context"] == "isorunner/build"
    assert body["target_url"] == "https://ci.example.com/b/1"
    assert len(body["description"]) == 140


async def test_download_archive_follows_codeload_without_the_token(
    router: respx.Router, client: GitHubClient, tmp_path: Path, github_operations: list[str]
) -> None:
    """The recorded 302 to codeload is followed without the token; the tarball lands whole."""
    redirect = sample("github", "tarball_redirect", 302)
    tarball = sample("github", "codeload_tarball", 200)
    router.get(f"{API}/tarball/{SHA}").mock(return_value=redirect)
    codeload = router.get(redirect.headers["location"]).mock(return_value=tarball)
    dest = tmp_path / "profile.tar.gz"
    size = await client.download_archive(REPO, SHA, dest, max_bytes=1 << 20)
    assert dest.read_bytes() == tarball.content
    assert size == len(tarball.content)
    assert "authorization" not in codeload.calls.last.request.headers
    assert github_operations == ["repos/download-tarball-archive"]


async def test_publish_release_creates_a_draft_uploads_then_publishes(
    router: respx.Router, client: GitHubClient, files: list[Path], github_operations: list[str]
) -> None:
    """With no release yet: draft created, every file uploaded whole, then published."""
    router.get(f"{API}/releases/tags/v1").mock(return_value=httpx.Response(404))
    router.get(f"{API}/releases").mock(return_value=httpx.Response(200, json=[]))
    create = router.post(f"{API}/releases").mock(
        return_value=httpx.Response(201, json=release_json(draft=True))
    )
    router.get(f"{API}/releases/7/assets").mock(return_value=httpx.Response(200, json=[]))
    upload = router.post(UPLOADS).mock(
        side_effect=[
            httpx.Response(201, json=asset_json(1, "image.iso", state="uploaded", size=8)),
            httpx.Response(201, json=asset_json(2, "sha256sums", state="uploaded", size=15)),
        ]
    )
    publish = router.patch(f"{API}/releases/7").mock(
        return_value=httpx.Response(200, json=release_json(draft=False))
    )
    url = await client.publish_release(REPO, "v1", files, name="Image v1", body="notes")
    assert url == "https://github.com/octo-org/profile/releases/tag/v1"
    assert httpx.Response(200, content=create.calls.last.request.content).json()["draft"] is True
    assert [c.request.url.params["name"] for c in upload.calls] == ["image.iso", "sha256sums"]
    assert [c.request.content for c in upload.calls] == [p.read_bytes() for p in files]
    assert publish.calls.last.request.content == b'{"draft":false}'
    assert github_operations == [
        "repos/get-release-by-tag",
        "repos/list-releases",
        "repos/create-release",
        "repos/list-release-assets",
        "repos/upload-release-asset",
        "repos/upload-release-asset",
        "repos/update-release",
    ]


async def test_publish_release_reuses_a_draft_found_in_the_list(
    router: respx.Router, client: GitHubClient, files: list[Path]
) -> None:
    """A draft, invisible to the by-tag look-up, is found in the list and reused."""
    router.get(f"{API}/releases/tags/v1").mock(return_value=httpx.Response(404))
    other = {**release_json(draft=True), "id": 3, "tag_name": "v0"}
    router.get(f"{API}/releases").mock(
        return_value=httpx.Response(200, json=[other, release_json(draft=True)])
    )
    router.get(f"{API}/releases/7/assets").mock(return_value=httpx.Response(200, json=[]))
    router.post(UPLOADS).mock(
        return_value=httpx.Response(201, json=asset_json(1, "x", state="uploaded", size=1))
    )
    router.patch(f"{API}/releases/7").mock(
        return_value=httpx.Response(200, json=release_json(draft=False))
    )
    await client.publish_release(REPO, "v1", files, name="v1", body="")


async def test_publish_release_adopts_a_release_created_concurrently(
    router: respx.Router, client: GitHubClient, files: list[Path]
) -> None:
    """A 422 `already_exists` on create makes the client look again and use that release."""
    router.get(f"{API}/releases/tags/v1").mock(return_value=httpx.Response(404))
    router.get(f"{API}/releases").mock(
        side_effect=[
            httpx.Response(200, json=[]),
            httpx.Response(200, json=[release_json(draft=True)]),
        ]
    )
    exists = {"message": "Validation Failed", "errors": [{"code": "already_exists"}]}
    router.post(f"{API}/releases").mock(return_value=httpx.Response(422, json=exists))
    router.get(f"{API}/releases/7/assets").mock(return_value=httpx.Response(200, json=[]))
    router.post(UPLOADS).mock(
        return_value=httpx.Response(201, json=asset_json(1, "x", state="uploaded", size=1))
    )
    router.patch(f"{API}/releases/7").mock(
        return_value=httpx.Response(200, json=release_json(draft=False))
    )
    await client.publish_release(REPO, "v1", files, name="v1", body="")


async def test_publish_release_replaces_an_asset_of_the_same_name(
    router: respx.Router, client: GitHubClient, files: list[Path]
) -> None:
    """On a published release, an old `image.iso` is deleted before the new one goes up."""
    router.get(f"{API}/releases/tags/v1").mock(
        return_value=httpx.Response(200, json=release_json(draft=False))
    )
    old = asset_json(41, "image.iso", state="uploaded", size=100)
    router.get(f"{API}/releases/7/assets").mock(return_value=httpx.Response(200, json=[old]))
    delete = router.delete(f"{API}/releases/assets/41").mock(return_value=httpx.Response(204))
    upload = router.post(UPLOADS).mock(
        return_value=httpx.Response(201, json=asset_json(1, "x", state="uploaded", size=1))
    )
    url = await client.publish_release(REPO, "v1", files, name="v1", body="")
    assert url.endswith("/releases/tag/v1")
    assert delete.call_count == 1
    assert upload.call_count == 2


async def test_publish_release_recovers_from_a_partial_asset(
    router: respx.Router,
    client: GitHubClient,
    files: list[Path],
    clock: FakeClock,
    github_operations: list[str],
) -> None:
    """After a 502 the half-stored asset is deleted and the file is uploaded again."""
    router.get(f"{API}/releases/tags/v1").mock(
        return_value=httpx.Response(200, json=release_json(draft=False))
    )
    partial = asset_json(50, "image.iso", state="open", size=3)
    router.get(f"{API}/releases/7/assets").mock(
        side_effect=[httpx.Response(200, json=[]), httpx.Response(200, json=[partial])]
    )
    delete = router.delete(f"{API}/releases/assets/50").mock(return_value=httpx.Response(204))
    upload = router.post(UPLOADS).mock(
        side_effect=[
            httpx.Response(502),
            httpx.Response(201, json=asset_json(51, "image.iso", state="uploaded", size=8)),
            httpx.Response(201, json=asset_json(52, "sha256sums", state="uploaded", size=15)),
        ]
    )
    await client.publish_release(REPO, "v1", files, name="v1", body="")
    assert delete.call_count == 1
    assert [c.request.content for c in upload.calls][:2] == [b"ISO-DATA", b"ISO-DATA"]
    assert github_operations[2:6] == [
        "repos/upload-release-asset",
        "repos/list-release-assets",
        "repos/delete-release-asset",
        "repos/upload-release-asset",
    ]
    assert clock.sleeps == []


async def test_publish_release_keeps_an_asset_stored_despite_a_timeout(
    router: respx.Router, client: GitHubClient, files: list[Path]
) -> None:
    """After a timeout, an asset listed as uploaded with the right size is not sent again."""
    router.get(f"{API}/releases/tags/v1").mock(
        return_value=httpx.Response(200, json=release_json(draft=False))
    )
    stored = asset_json(60, "image.iso", state="uploaded", size=8)
    router.get(f"{API}/releases/7/assets").mock(
        side_effect=[httpx.Response(200, json=[]), httpx.Response(200, json=[stored])]
    )
    upload = router.post(UPLOADS).mock(
        side_effect=[
            httpx.ReadTimeout("no answer"),
            httpx.Response(201, json=asset_json(61, "sha256sums", state="uploaded", size=15)),
        ]
    )
    await client.publish_release(REPO, "v1", files, name="v1", body="")
    assert [c.request.url.params["name"] for c in upload.calls] == ["image.iso", "sha256sums"]


async def test_publish_release_gives_up_after_the_upload_attempts(
    router: respx.Router, client: GitHubClient, files: list[Path]
) -> None:
    """Three failed uploads end in `ForgeUnavailable` telling to publish again later."""
    router.get(f"{API}/releases/tags/v1").mock(
        return_value=httpx.Response(200, json=release_json(draft=False))
    )
    router.get(f"{API}/releases/7/assets").mock(return_value=httpx.Response(200, json=[]))
    upload = router.post(UPLOADS).mock(return_value=httpx.Response(504))
    with pytest.raises(ForgeUnavailable, match="after 3 attempts") as caught:
        await client.publish_release(REPO, "v1", files, name="v1", body="")
    assert upload.call_count == 3
    assert TOKEN not in str(caught.value)


async def test_publish_release_refuses_a_2_gib_asset_before_any_request(
    router: respx.Router, client: GitHubClient, tmp_path: Path
) -> None:
    """A (sparse) file of exactly 2 GiB is refused with `AssetTooLarge`, nothing sent."""
    big = tmp_path / "huge.iso"
    with big.open("wb") as handle:
        handle.truncate(2 * 1024**3)
    assert os.stat(big).st_blocks == 0
    with pytest.raises(AssetTooLarge, match="under 2 GiB") as caught:
        await client.publish_release(REPO, "v1", [big], name="v1", body="")
    assert caught.value.size == 2 * 1024**3
    assert router.calls.call_count == 0


async def test_publish_release_accepts_just_under_2_gib_size_check(
    router: respx.Router, client: GitHubClient, tmp_path: Path
) -> None:
    """A file one byte under 2 GiB passes the size check and reaches the release look-up."""
    big = tmp_path / "huge.iso"
    with big.open("wb") as handle:
        handle.truncate(2 * 1024**3 - 1)
    router.get(f"{API}/releases/tags/v1").mock(return_value=httpx.Response(401))
    with pytest.raises(Unauthorized, match="401"):
        await client.publish_release(REPO, "v1", [big], name="v1", body="")


async def test_publish_release_refuses_new_assets_on_an_immutable_release(
    router: respx.Router, client: GitHubClient, files: list[Path]
) -> None:
    """A published immutable release lacking the files raises `Conflict`, uploads nothing."""
    router.get(f"{API}/releases/tags/v1").mock(
        return_value=httpx.Response(200, json=release_json(draft=False, immutable=True))
    )
    router.get(f"{API}/releases/7/assets").mock(return_value=httpx.Response(200, json=[]))
    with pytest.raises(Conflict, match="immutable"):
        await client.publish_release(REPO, "v1", files, name="v1", body="")


async def test_publish_release_on_a_complete_immutable_release_changes_nothing(
    router: respx.Router, client: GitHubClient, files: list[Path]
) -> None:
    """An immutable release that already holds every file is simply returned."""
    router.get(f"{API}/releases/tags/v1").mock(
        return_value=httpx.Response(200, json=release_json(draft=False, immutable=True))
    )
    present = [
        asset_json(1, "image.iso", state="uploaded", size=8),
        asset_json(2, "sha256sums", state="uploaded", size=15),
    ]
    router.get(f"{API}/releases/7/assets").mock(return_value=httpx.Response(200, json=present))
    url = await client.publish_release(REPO, "v1", files, name="v1", body="")
    assert url.endswith("/releases/tag/v1")


async def test_publish_release_tolerates_an_asset_already_deleted(
    router: respx.Router, client: GitHubClient, files: list[Path]
) -> None:
    """A 404 when deleting the old asset (someone else removed it) does not stop the upload."""
    router.get(f"{API}/releases/tags/v1").mock(
        return_value=httpx.Response(200, json=release_json(draft=False))
    )
    old = asset_json(41, "sha256sums", state="uploaded", size=1)
    router.get(f"{API}/releases/7/assets").mock(return_value=httpx.Response(200, json=[old]))
    router.delete(f"{API}/releases/assets/41").mock(return_value=httpx.Response(404))
    upload = router.post(UPLOADS).mock(
        return_value=httpx.Response(201, json=asset_json(1, "x", state="uploaded", size=1))
    )
    await client.publish_release(REPO, "v1", files, name="v1", body="")
    assert upload.call_count == 2


async def test_publish_release_refuses_duplicate_file_names(
    router: respx.Router, client: GitHubClient, tmp_path: Path
) -> None:
    """Two files with one name would overwrite each other: refused before any request."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, second = tmp_path / "a" / "image.iso", tmp_path / "b" / "image.iso"
    first.write_bytes(b"1")
    second.write_bytes(b"2")
    with pytest.raises(ValueError, match="distinct file names"):
        await client.publish_release(REPO, "v1", [first, second], name="v1", body="")
    assert router.calls.call_count == 0


def test_github_client_is_a_forge_client(transport: ForgeTransport) -> None:
    """`GitHubClient` has the shape the worker expects (checked by mypy and at run time)."""
    client: ForgeClient = GitHubClient(transport, StaticToken(TOKEN))
    assert isinstance(client, ForgeClient)


class RenewingTokens:
    """A token provider whose first token the forge will refuse, as a revoked one."""

    def __init__(self) -> None:
        self.tokens = ["ghs_revoked", "ghs_fresh"]
        self.forgotten: list[str] = []

    async def token_for(self, repo: str) -> str:
        return self.tokens[0]

    async def forget(self, repo: str, token: str) -> bool:
        self.forgotten.append(token)
        self.tokens.pop(0)
        return True


async def test_set_status_renews_a_refused_app_token_once(
    router: respx.Router, transport: ForgeTransport
) -> None:
    """A 401 makes the client drop the token and post once more with a new one."""
    tokens = RenewingTokens()
    client = GitHubClient(transport, tokens, context="isorunner/build")
    route = router.post(f"{API}/statuses/{SHA}").mock(
        side_effect=[httpx.Response(401, json={"message": "Bad credentials"}), httpx.Response(201)]
    )
    await client.set_status(REPO, SHA, CommitState.SUCCESS, description="ok", target_url=None)
    assert [c.request.headers["Authorization"] for c in route.calls] == [
        "Bearer ghs_revoked",
        "Bearer ghs_fresh",
    ]
    assert tokens.forgotten == ["ghs_revoked"]


async def test_set_status_does_not_retry_a_refused_static_token(
    router: respx.Router, client: GitHubClient
) -> None:
    """A refused static token is not retried: it raises Unauthorized at once."""
    route = router.post(f"{API}/statuses/{SHA}").mock(
        return_value=httpx.Response(401, json={"message": "Bad credentials"})
    )
    with pytest.raises(Unauthorized):
        await client.set_status(REPO, SHA, CommitState.SUCCESS, description="ok", target_url=None)
    assert route.call_count == 1

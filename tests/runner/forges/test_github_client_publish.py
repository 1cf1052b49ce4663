"""Tests for `GitHubClient.publish_release`: one resumable, idempotent attempt."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import httpx
import pytest
import respx

from runner.forges.exceptions import (
    AssetTooLarge,
    ForgeUnavailable,
    ImmutableRelease,
    ReleaseGone,
    Unauthorized,
)
from runner.forges.github_client import GitHubClient
from runner.forges.releaseplan import LocalAsset
from runner.forges.request import JSONValue
from tests.runner.forges.conftest import GITHUB_UPLOADS, FakeClock
from tests.runner.forges.test_github_client import API, REPO, client

__all__ = ["client"]

pytestmark = pytest.mark.anyio

UPLOADS = f"{GITHUB_UPLOADS}/repos/{REPO}/releases/7/assets"
PAGE = "https://github.com/octo-org/profile/releases/tag/v1"


def release_json(
    *, draft: bool, immutable: bool = False, release_id: int = 7
) -> dict[str, JSONValue]:
    """A release as GitHub returns it, reduced to the fields the client reads."""
    return {
        "id": release_id,
        "tag_name": "v1",
        "draft": draft,
        "immutable": immutable,
        "html_url": PAGE,
        "assets": [],
    }


def asset_json(asset_id: int, local: LocalAsset, *, state: str = "uploaded") -> JSONValue:
    """The asset GitHub lists for `local` stored whole (or, `open`, half stored)."""
    size = local.size if state == "uploaded" else local.size // 2
    digest = f"sha256:{local.sha256}" if state == "uploaded" else None
    return {"id": asset_id, "name": local.name, "state": state, "size": size, "digest": digest}


def stale_json(asset_id: int, local: LocalAsset) -> JSONValue:
    """A complete asset of `local`'s name and size but another build's content."""
    digest = "sha256:" + hashlib.sha256(b"another build").hexdigest()
    return {"id": asset_id, "name": local.name, "state": "uploaded", "size": local.size,
            "digest": digest}  # fmt: skip


def local_asset(path: Path, data: bytes) -> LocalAsset:
    """Write `data` to `path` and describe it as a file to publish."""
    path.write_bytes(data)
    return LocalAsset(path, len(data), hashlib.sha256(data).hexdigest())


@pytest.fixture
def files(tmp_path: Path) -> list[LocalAsset]:
    """An ISO and its checksum file, in publishing order."""
    return [
        local_asset(tmp_path / "image.iso", b"ISO-DATA"),
        local_asset(tmp_path / "sha256sums", b"abc  image.iso\n"),
    ]


def no_release(router: respx.Router) -> respx.Route:
    """GitHub has no release of v1 yet: 404 by tag, none among the drafts."""
    router.get(f"{API}/releases/tags/v1").mock(return_value=httpx.Response(404))
    return router.get(f"{API}/releases").mock(return_value=httpx.Response(200, json=[]))


def published(router: respx.Router, *, immutable: bool = False) -> None:
    """GitHub has the published release 7 of v1."""
    router.get(f"{API}/releases/tags/v1").mock(
        return_value=httpx.Response(200, json=release_json(draft=False, immutable=immutable))
    )
    router.get(f"{API}/releases").mock(
        return_value=httpx.Response(200, json=[release_json(draft=False, immutable=immutable)])
    )


def uploads_of(route: respx.Route) -> list[str]:
    """The asset names a route was asked to upload, in order."""
    return [call.request.url.params["name"] for call in route.calls]


async def test_publish_release_creates_a_draft_uploads_then_publishes(
    router: respx.Router,
    client: GitHubClient,
    files: list[LocalAsset],
    github_operations: list[str],
) -> None:
    """With no release yet: draft created, every file uploaded whole, then published."""
    no_release(router)
    create = router.post(f"{API}/releases").mock(
        return_value=httpx.Response(201, json=release_json(draft=True))
    )
    router.get(f"{API}/releases/7/assets").mock(return_value=httpx.Response(200, json=[]))
    upload = router.post(UPLOADS).mock(
        side_effect=[httpx.Response(201, json=asset_json(i, f)) for i, f in enumerate(files)]
    )
    publish = router.patch(f"{API}/releases/7").mock(
        return_value=httpx.Response(200, json=release_json(draft=False))
    )
    seen: list[str] = []

    async def progress(name: str) -> None:
        seen.append(name)

    url = await client.publish_release(
        REPO, "v1", files, name="Image v1", body="notes", progress=progress
    )
    assert url == PAGE
    assert json.loads(create.calls.last.request.content)["draft"] is True
    assert uploads_of(upload) == ["image.iso", "sha256sums"]
    assert [c.request.content for c in upload.calls] == [f.path.read_bytes() for f in files]
    assert publish.calls.last.request.content == b'{"draft":false}'
    assert seen == ["image.iso", "sha256sums"]
    assert github_operations == [
        "repos/get-release-by-tag",
        "repos/list-releases",
        "repos/create-release",
        "repos/list-release-assets",
        "repos/upload-release-asset",
        "repos/upload-release-asset",
        "repos/update-release",
    ]


async def test_publish_release_after_a_502_on_create_adopts_the_stored_draft(
    router: respx.Router, client: GitHubClient, files: list[LocalAsset], clock: FakeClock
) -> None:
    """A 502 answered after GitHub stored the draft: it is found and used, never created twice."""
    router.get(f"{API}/releases/tags/v1").mock(return_value=httpx.Response(404))
    router.get(f"{API}/releases").mock(
        side_effect=[
            httpx.Response(200, json=[]),
            httpx.Response(200, json=[release_json(draft=True)]),
        ]
    )
    create = router.post(f"{API}/releases").mock(return_value=httpx.Response(502))
    router.get(f"{API}/releases/7/assets").mock(return_value=httpx.Response(200, json=[]))
    router.post(UPLOADS).mock(
        side_effect=[httpx.Response(201, json=asset_json(i, f)) for i, f in enumerate(files)]
    )
    router.patch(f"{API}/releases/7").mock(
        return_value=httpx.Response(200, json=release_json(draft=False))
    )
    assert await client.publish_release(REPO, "v1", files, name="v1", body="") == PAGE
    assert create.call_count == 1
    assert clock.sleeps == []


async def test_publish_release_after_a_lost_create_answer_stops_if_nothing_was_stored(
    router: respx.Router, client: GitHubClient, files: list[LocalAsset]
) -> None:
    """A create whose connection drops is not sent again: found nothing, the attempt fails."""
    listing = no_release(router)
    create = router.post(f"{API}/releases").mock(side_effect=httpx.ReadError("reset"))
    with pytest.raises(ForgeUnavailable, match="create a draft release"):
        await client.publish_release(REPO, "v1", files, name="v1", body="")
    assert create.call_count == 1
    assert listing.call_count == 2


async def test_publish_release_deletes_orphan_drafts_of_the_tag(
    router: respx.Router, client: GitHubClient, files: list[LocalAsset]
) -> None:
    """Two drafts of the tag: the oldest is used, the other deleted, so one release remains."""
    router.get(f"{API}/releases/tags/v1").mock(return_value=httpx.Response(404))
    orphan = release_json(draft=True, release_id=9)
    other_tag = {**release_json(draft=True, release_id=3), "tag_name": "v0"}
    router.get(f"{API}/releases").mock(
        return_value=httpx.Response(200, json=[orphan, release_json(draft=True), other_tag])
    )
    delete = router.delete(f"{API}/releases/9").mock(return_value=httpx.Response(204))
    router.get(f"{API}/releases/7/assets").mock(
        return_value=httpx.Response(200, json=[asset_json(1, f) for f in files])
    )
    router.patch(f"{API}/releases/7").mock(
        return_value=httpx.Response(200, json=release_json(draft=False))
    )
    await client.publish_release(REPO, "v1", files, name="v1", body="")
    assert delete.call_count == 1


async def test_publish_release_keeps_complete_assets_and_sends_only_the_rest(
    router: respx.Router, client: GitHubClient, files: list[LocalAsset]
) -> None:
    """An asset with the same size and digest is kept: an attempt resumes, never resends."""
    published(router)
    router.get(f"{API}/releases/7/assets").mock(
        return_value=httpx.Response(200, json=[asset_json(1, files[0])])
    )
    upload = router.post(UPLOADS).mock(
        return_value=httpx.Response(201, json=asset_json(2, files[1]))
    )
    assert await client.publish_release(REPO, "v1", files, name="v1", body="") == PAGE
    assert uploads_of(upload) == ["sha256sums"]


async def test_publish_release_replaces_a_stale_and_a_partial_asset(
    router: respx.Router, client: GitHubClient, files: list[LocalAsset]
) -> None:
    """Another build's copy (other digest) and a half upload are deleted, then sent whole."""
    published(router)
    present = [stale_json(41, files[0]), asset_json(42, files[1], state="open")]
    router.get(f"{API}/releases/7/assets").mock(return_value=httpx.Response(200, json=present))
    stale = router.delete(f"{API}/releases/assets/41").mock(return_value=httpx.Response(204))
    partial = router.delete(f"{API}/releases/assets/42").mock(return_value=httpx.Response(404))
    upload = router.post(UPLOADS).mock(
        side_effect=[httpx.Response(201, json=asset_json(i, f)) for i, f in enumerate(files)]
    )
    await client.publish_release(REPO, "v1", files, name="v1", body="")
    assert (stale.call_count, partial.call_count) == (1, 1)
    assert uploads_of(upload) == ["image.iso", "sha256sums"]


async def test_publish_release_recovers_from_a_partial_asset_after_a_502(
    router: respx.Router,
    client: GitHubClient,
    files: list[LocalAsset],
    clock: FakeClock,
    github_operations: list[str],
) -> None:
    """After a 502 the half-stored asset is deleted and the file is uploaded again."""
    published(router)
    router.get(f"{API}/releases/7/assets").mock(
        side_effect=[
            httpx.Response(200, json=[]),
            httpx.Response(200, json=[asset_json(50, files[0], state="open")]),
        ]
    )
    delete = router.delete(f"{API}/releases/assets/50").mock(return_value=httpx.Response(204))
    upload = router.post(UPLOADS).mock(
        side_effect=[
            httpx.Response(502),
            httpx.Response(201, json=asset_json(51, files[0])),
            httpx.Response(201, json=asset_json(52, files[1])),
        ]
    )
    await client.publish_release(REPO, "v1", files, name="v1", body="")
    assert delete.call_count == 1
    assert uploads_of(upload) == ["image.iso", "image.iso", "sha256sums"]
    assert github_operations[3:7] == [
        "repos/upload-release-asset",
        "repos/list-release-assets",
        "repos/delete-release-asset",
        "repos/upload-release-asset",
    ]
    assert clock.sleeps == []


@pytest.mark.parametrize("failure", [httpx.Response(504), httpx.ReadTimeout("no answer")])
async def test_publish_release_keeps_an_asset_stored_despite_a_504_or_timeout(
    router: respx.Router,
    client: GitHubClient,
    files: list[LocalAsset],
    failure: httpx.Response | httpx.ReadTimeout,
) -> None:
    """After a 504 or a timeout, an asset listed whole with our digest is not sent again."""
    published(router)
    router.get(f"{API}/releases/7/assets").mock(
        side_effect=[
            httpx.Response(200, json=[]),
            httpx.Response(200, json=[asset_json(60, files[0])]),
        ]
    )
    upload = router.post(UPLOADS).mock(
        side_effect=[failure, httpx.Response(201, json=asset_json(61, files[1]))]
    )
    await client.publish_release(REPO, "v1", files, name="v1", body="")
    assert uploads_of(upload) == ["image.iso", "sha256sums"]


async def test_publish_release_gives_up_after_the_upload_attempts(
    router: respx.Router, client: GitHubClient, files: list[LocalAsset]
) -> None:
    """Three failed uploads end the attempt in a transient `ForgeUnavailable`."""
    published(router)
    router.get(f"{API}/releases/7/assets").mock(return_value=httpx.Response(200, json=[]))
    upload = router.post(UPLOADS).mock(return_value=httpx.Response(504))
    with pytest.raises(ForgeUnavailable, match="after 3 attempts") as caught:
        await client.publish_release(REPO, "v1", files, name="v1", body="")
    assert upload.call_count == 3
    assert caught.value.transient
    assert "ghp_" not in str(caught.value)


async def test_publish_release_starts_over_when_the_release_is_deleted_meanwhile(
    router: respx.Router, client: GitHubClient, files: list[LocalAsset]
) -> None:
    """A draft deleted by a person mid-upload (404): a new draft is made and filled."""
    router.get(f"{API}/releases/tags/v1").mock(return_value=httpx.Response(404))
    router.get(f"{API}/releases").mock(
        side_effect=[
            httpx.Response(200, json=[release_json(draft=True)]),
            httpx.Response(200, json=[]),
        ]
    )
    router.get(f"{API}/releases/7/assets").mock(return_value=httpx.Response(200, json=[]))
    router.post(UPLOADS).mock(return_value=httpx.Response(404, json={"message": "Not Found"}))
    create = router.post(f"{API}/releases").mock(
        return_value=httpx.Response(201, json=release_json(draft=True, release_id=8))
    )
    router.get(f"{API}/releases/8/assets").mock(return_value=httpx.Response(200, json=[]))
    second = router.post(f"{GITHUB_UPLOADS}/repos/{REPO}/releases/8/assets").mock(
        side_effect=[httpx.Response(201, json=asset_json(i, f)) for i, f in enumerate(files)]
    )
    router.patch(f"{API}/releases/8").mock(
        return_value=httpx.Response(200, json=release_json(draft=False, release_id=8))
    )
    assert await client.publish_release(REPO, "v1", files, name="v1", body="") == PAGE
    assert create.call_count == 1
    assert uploads_of(second) == ["image.iso", "sha256sums"]


async def test_publish_release_gives_up_a_round_when_the_release_keeps_vanishing(
    router: respx.Router, client: GitHubClient, files: list[LocalAsset]
) -> None:
    """A release that vanishes at every round ends the attempt in a transient error."""
    published(router)
    router.get(f"{API}/releases/7/assets").mock(return_value=httpx.Response(404))
    with pytest.raises(ReleaseGone, match="vanished 3 times") as caught:
        await client.publish_release(REPO, "v1", files, name="v1", body="")
    assert caught.value.transient


async def test_publish_release_refuses_a_2_gib_asset_before_any_request(
    router: respx.Router, client: GitHubClient, tmp_path: Path
) -> None:
    """A (sparse) file of exactly 2 GiB is refused for good, nothing sent."""
    big = tmp_path / "huge.iso"
    with big.open("wb") as handle:
        handle.truncate(2 * 1024**3)
    assert os.stat(big).st_blocks == 0
    asset = LocalAsset(big, 2 * 1024**3, "0" * 64)
    with pytest.raises(AssetTooLarge, match="under 2 GiB") as caught:
        await client.publish_release(REPO, "v1", [asset], name="v1", body="")
    assert caught.value.size == 2 * 1024**3
    assert caught.value.final
    assert router.calls.call_count == 0


async def test_publish_release_accepts_just_under_2_gib_size_check(
    router: respx.Router, client: GitHubClient, tmp_path: Path
) -> None:
    """A file one byte under 2 GiB passes the size check and reaches the release look-up."""
    asset = LocalAsset(tmp_path / "huge.iso", 2 * 1024**3 - 1, "0" * 64)
    router.get(f"{API}/releases/tags/v1").mock(return_value=httpx.Response(401))
    with pytest.raises(Unauthorized, match="401"):
        await client.publish_release(REPO, "v1", [asset], name="v1", body="")


async def test_publish_release_refuses_new_assets_on_an_immutable_release(
    router: respx.Router, client: GitHubClient, files: list[LocalAsset]
) -> None:
    """A published immutable release lacking the files is refused for good, nothing sent."""
    published(router, immutable=True)
    router.get(f"{API}/releases/7/assets").mock(return_value=httpx.Response(200, json=[]))
    with pytest.raises(ImmutableRelease, match="immutable") as caught:
        await client.publish_release(REPO, "v1", files, name="v1", body="")
    assert caught.value.final


async def test_publish_release_on_a_complete_immutable_release_changes_nothing(
    router: respx.Router, client: GitHubClient, files: list[LocalAsset]
) -> None:
    """An immutable release that already holds every file is simply returned."""
    published(router, immutable=True)
    router.get(f"{API}/releases/7/assets").mock(
        return_value=httpx.Response(200, json=[asset_json(i, f) for i, f in enumerate(files)])
    )
    assert await client.publish_release(REPO, "v1", files, name="v1", body="") == PAGE


async def test_publish_release_refuses_duplicate_file_names(
    router: respx.Router, client: GitHubClient, tmp_path: Path
) -> None:
    """Two files with one name would overwrite each other: refused before any request."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = local_asset(tmp_path / "a" / "image.iso", b"1")
    second = local_asset(tmp_path / "b" / "image.iso", b"2")
    with pytest.raises(ValueError, match="distinct file names"):
        await client.publish_release(REPO, "v1", [first, second], name="v1", body="")
    assert router.calls.call_count == 0

"""Tests for `GitLabClient.publish_release`: one resumable, idempotent attempt."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest
import respx

from runner.forges.exceptions import ForgeUnavailable, ReleaseRefused
from runner.forges.gitlab_client import GitLabClient
from runner.forges.releaseplan import LocalAsset
from runner.forges.request import JSONValue
from tests.runner.forges.conftest import GITLAB_API, FakeClock
from tests.runner.forges.test_gitlab_client import (
    ENCODED,
    PACKAGES,
    PROJECT,
    RELEASE_PAGE,
    client,
    sent_json,
)

__all__ = ["client"]

pytestmark = pytest.mark.anyio

PROJECT_API = f"{GITLAB_API}/projects/{ENCODED}"
RELEASES = f"{PROJECT_API}/releases"
FILES = f"{PROJECT_API}/packages/5/package_files"
RELEASE: JSONValue = {"tag_name": "v1", "_links": {"self": RELEASE_PAGE}}


def local_asset(path: Path, data: bytes) -> LocalAsset:
    """Write `data` to `path` and describe it as a file to publish."""
    path.write_bytes(data)
    return LocalAsset(path, len(data), hashlib.sha256(data).hexdigest())


@pytest.fixture
def files(tmp_path: Path) -> list[LocalAsset]:
    """An ISO and its checksum file, in publishing order."""
    return [
        local_asset(tmp_path / "image.iso", b"ISO-BYTES"),
        local_asset(tmp_path / "sha256sums", b"abc  image.iso\n"),
    ]


def stored(file_id: int, local: LocalAsset, *, half: bool = False) -> dict[str, JSONValue]:
    """A package file as GitLab lists it: `local` whole, or its first half."""
    data = local.path.read_bytes()
    data = data[: len(data) // 2] if half else data
    return {"id": file_id, "package_id": 5, "file_name": local.name, "size": len(data),
            "file_sha256": hashlib.sha256(data).hexdigest()}  # fmt: skip


def package(router: respx.Router, *listings: list[dict[str, JSONValue]]) -> respx.Route:
    """The package `isorunner` v1 exists (id 5); its file listings, one per call."""
    router.get(f"{PROJECT_API}/packages").mock(
        return_value=httpx.Response(
            200,
            json=[
                {"id": 4, "name": "isorunner-extra", "version": "v1"},
                {"id": 5, "name": "isorunner", "version": "v1"},
            ],
        )
    )
    return router.get(FILES).mock(side_effect=[httpx.Response(200, json=x) for x in listings])


def no_package(router: respx.Router) -> None:
    """No package `isorunner` v1 yet."""
    router.get(f"{PROJECT_API}/packages").mock(return_value=httpx.Response(200, json=[]))


def uploaded(file_id: int, local: LocalAsset) -> httpx.Response:
    """GitLab's answer to an upload with `select=package_file` that stored `local` whole."""
    return httpx.Response(201, json=stored(file_id, local))


async def test_publish_release_uploads_in_order_then_creates_the_release(
    router: respx.Router, client: GitLabClient, files: list[LocalAsset]
) -> None:
    """Files go up one after the other, whole, then the release links to each of them."""
    no_package(router)
    iso = router.put(f"{PACKAGES}/image.iso").mock(return_value=uploaded(1, files[0]))
    sums = router.put(f"{PACKAGES}/sha256sums").mock(return_value=uploaded(2, files[1]))
    router.get(f"{RELEASES}/v1").mock(return_value=httpx.Response(404))
    create = router.post(RELEASES).mock(return_value=httpx.Response(201, json=RELEASE))
    seen: list[str] = []

    async def progress(name: str) -> None:
        seen.append(name)

    url = await client.publish_release(
        PROJECT, "v1", files, name="Image v1", body="notes", progress=progress
    )
    assert url == RELEASE_PAGE
    assert iso.calls.last.request.content == b"ISO-BYTES"
    assert iso.calls.last.request.headers["Content-Length"] == "9"
    assert sums.calls.last.request.content == b"abc  image.iso\n"
    order = [(c.request.method, c.request.url.path.rsplit("/", 1)[-1]) for c in router.calls]
    assert order == [
        ("GET", "packages"),
        ("PUT", "image.iso"),
        ("PUT", "sha256sums"),
        ("GET", "v1"),
        ("POST", "releases"),
    ]
    assert seen == ["image.iso", "sha256sums"]
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


async def test_publish_release_keeps_whole_files_and_removes_half_copies(
    router: respx.Router, client: GitLabClient, files: list[LocalAsset]
) -> None:
    """A whole copy with our digest is kept; a half copy of the same name is deleted."""
    package(router, [stored(10, files[0], half=True), stored(11, files[0]), stored(12, files[1])])
    delete = router.delete(f"{FILES}/10").mock(return_value=httpx.Response(204))
    router.get(f"{RELEASES}/v1").mock(return_value=httpx.Response(404))
    router.post(RELEASES).mock(return_value=httpx.Response(201, json=RELEASE))
    assert await client.publish_release(PROJECT, "v1", files, name="v1", body="") == RELEASE_PAGE
    assert delete.call_count == 1
    assert not any(call.request.method == "PUT" for call in router.calls)


async def test_publish_release_after_a_502_with_half_the_file_resends_it_once(
    router: respx.Router, client: GitLabClient, files: list[LocalAsset], clock: FakeClock
) -> None:
    """A 502 that left half the ISO stored: the half copy is deleted and the ISO sent again."""
    package(router, [], [stored(20, files[0], half=True)])
    iso = router.put(f"{PACKAGES}/image.iso").mock(
        side_effect=[httpx.Response(502), uploaded(21, files[0])]
    )
    router.put(f"{PACKAGES}/sha256sums").mock(return_value=uploaded(22, files[1]))
    delete = router.delete(f"{FILES}/20").mock(return_value=httpx.Response(204))
    router.get(f"{RELEASES}/v1").mock(return_value=httpx.Response(404))
    router.post(RELEASES).mock(return_value=httpx.Response(201, json=RELEASE))
    assert await client.publish_release(PROJECT, "v1", files, name="v1", body="") == RELEASE_PAGE
    assert (iso.call_count, delete.call_count) == (2, 1)
    assert clock.sleeps == []


async def test_publish_release_after_a_504_keeps_the_file_the_forge_stored(
    router: respx.Router, client: GitLabClient, files: list[LocalAsset]
) -> None:
    """A 504 answered for an ISO GitLab stored whole: it is found, not sent a second time."""
    package(router, [], [stored(30, files[0])])
    iso = router.put(f"{PACKAGES}/image.iso").mock(return_value=httpx.Response(504))
    router.put(f"{PACKAGES}/sha256sums").mock(return_value=uploaded(31, files[1]))
    router.get(f"{RELEASES}/v1").mock(return_value=httpx.Response(404))
    router.post(RELEASES).mock(return_value=httpx.Response(201, json=RELEASE))
    await client.publish_release(PROJECT, "v1", files, name="v1", body="")
    assert iso.call_count == 1


async def test_publish_release_gives_up_after_the_upload_attempts(
    router: respx.Router, client: GitLabClient, files: list[LocalAsset]
) -> None:
    """Three failed uploads end the attempt in a transient `ForgeUnavailable`."""
    no_package(router)
    iso = router.put(f"{PACKAGES}/image.iso").mock(return_value=httpx.Response(504))
    with pytest.raises(ForgeUnavailable, match="after 3 attempts") as caught:
        await client.publish_release(PROJECT, "v1", files, name="v1", body="")
    assert iso.call_count == 3
    assert caught.value.transient
    assert "glpat" not in str(caught.value)


@pytest.mark.parametrize("answer", [httpx.Response(502), httpx.Response(409)])
async def test_publish_release_after_a_502_or_409_on_create_looks_the_release_up(
    router: respx.Router, client: GitLabClient, files: list[LocalAsset], answer: httpx.Response
) -> None:
    """A create answered 502 (stored anyway) or 409 is never sent again: found, then updated."""
    package(router, [stored(1, f) for f in files])
    router.get(f"{RELEASES}/v1").mock(
        side_effect=[httpx.Response(404), httpx.Response(200, json=RELEASE)]
    )
    create = router.post(RELEASES).mock(return_value=answer)
    router.put(f"{RELEASES}/v1").mock(return_value=httpx.Response(200, json=RELEASE))
    links = [{"id": i, "name": f.name, "url": f"{PACKAGES}/{f.name}"} for i, f in enumerate(files)]
    router.get(f"{RELEASES}/v1/assets/links").mock(return_value=httpx.Response(200, json=links))
    assert await client.publish_release(PROJECT, "v1", files, name="v1", body="") == RELEASE_PAGE
    assert create.call_count == 1


async def test_publish_release_updates_an_existing_release_and_its_links(
    router: respx.Router, client: GitLabClient, files: list[LocalAsset]
) -> None:
    """An existing release is updated, a changed link repointed and a missing one added."""
    package(router, [stored(1, f) for f in files])
    router.get(f"{RELEASES}/v1").mock(return_value=httpx.Response(200, json=RELEASE))
    update = router.put(f"{RELEASES}/v1").mock(return_value=httpx.Response(200, json=RELEASE))
    old = {"id": 8, "name": "image.iso", "url": "https://old.example.com/image.iso"}
    router.get(f"{RELEASES}/v1/assets/links").mock(return_value=httpx.Response(200, json=[old]))
    link = {"id": 8, "name": "image.iso", "url": f"{PACKAGES}/image.iso"}
    repoint = router.put(f"{RELEASES}/v1/assets/links/8").mock(
        return_value=httpx.Response(200, json=link)
    )
    added = router.post(f"{RELEASES}/v1/assets/links").mock(
        return_value=httpx.Response(201, json={**link, "id": 9, "name": "sha256sums"})
    )
    assert await client.publish_release(PROJECT, "v1", files, name="v1", body="notes") == (
        RELEASE_PAGE
    )
    assert sent_json(update.calls.last.request) == {"name": "v1", "description": "notes"}
    assert sent_json(repoint.calls.last.request)["url"] == f"{PACKAGES}/image.iso"
    assert sent_json(added.calls.last.request)["name"] == "sha256sums"


async def test_publish_release_after_a_502_on_a_link_finds_it_stored(
    router: respx.Router, client: GitLabClient, files: list[LocalAsset]
) -> None:
    """A link create answered 502 after GitLab stored it is found in the list, not re-added."""
    package(router, [stored(1, f) for f in files])
    router.get(f"{RELEASES}/v1").mock(return_value=httpx.Response(200, json=RELEASE))
    router.put(f"{RELEASES}/v1").mock(return_value=httpx.Response(200, json=RELEASE))
    iso_link = {"id": 8, "name": "image.iso", "url": f"{PACKAGES}/image.iso"}
    sums_link = {"id": 9, "name": "sha256sums", "url": f"{PACKAGES}/sha256sums"}
    router.get(f"{RELEASES}/v1/assets/links").mock(
        side_effect=[
            httpx.Response(200, json=[iso_link]),
            httpx.Response(200, json=[iso_link, sums_link]),
        ]
    )
    add = router.post(f"{RELEASES}/v1/assets/links").mock(return_value=httpx.Response(502))
    await client.publish_release(PROJECT, "v1", files, name="v1", body="")
    assert add.call_count == 1


async def test_publish_release_starts_over_when_the_release_is_deleted_meanwhile(
    router: respx.Router, client: GitLabClient, files: list[LocalAsset]
) -> None:
    """A release deleted by a person between look-up and update is created again."""
    package(router, [stored(1, f) for f in files], [stored(1, f) for f in files])
    router.get(f"{RELEASES}/v1").mock(
        side_effect=[httpx.Response(200, json=RELEASE), httpx.Response(404)]
    )
    router.put(f"{RELEASES}/v1").mock(return_value=httpx.Response(404))
    create = router.post(RELEASES).mock(return_value=httpx.Response(201, json=RELEASE))
    assert await client.publish_release(PROJECT, "v1", files, name="v1", body="") == RELEASE_PAGE
    assert create.call_count == 1


async def test_publish_release_refuses_an_invalid_version_before_any_request(
    router: respx.Router, client: GitLabClient, files: list[LocalAsset]
) -> None:
    """A tag that is not a valid package version is refused and nothing is sent."""
    with pytest.raises(ReleaseRefused, match="not a valid generic package version"):
        await client.publish_release(PROJECT, "release/1", files, name="r", body="")
    assert router.calls.call_count == 0

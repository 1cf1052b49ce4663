"""Tests for `runner.forges.github`: every builder against GitHub's OpenAPI, decoders."""

from __future__ import annotations

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from runner.forges import github
from runner.forges.exceptions import Conflict, MalformedResponse, NotFound
from runner.forges.github import GitHubState
from runner.forges.request import ForgeRequest, ForgeResponse
from tests.runner.forges.conftest import GITHUB_API, GITHUB_UPLOADS
from tests.runner.forges.openapi import (
    OpenAPIViolation,
    validate_forge_request,
    validate_github_request,
)
from tests.runner.forges.samples import sample

REPO = "octo-org/profile"
SHA = "0123456789abcdef0123456789abcdef01234567"
TOKEN = "ghp_example"
BASES = (GITHUB_API, GITHUB_UPLOADS)


def as_response(response: httpx.Response) -> ForgeResponse:
    """A recorded `httpx.Response` as the decoders take it."""
    return ForgeResponse(response.status_code, dict(response.headers), response.content)


BUILT: list[tuple[ForgeRequest, str]] = [
    (
        github.build_commit_status(
            GITHUB_API,
            TOKEN,
            REPO,
            SHA,
            state=GitHubState.PENDING,
            context="isorunner",
            description="queued",
            target_url="https://ci.example.com/builds/1",
        ),
        "repos/create-commit-status",
    ),
    (github.build_tarball(GITHUB_API, TOKEN, REPO, SHA), "repos/download-tarball-archive"),
    (github.build_release_by_tag(GITHUB_API, TOKEN, REPO, "v1"), "repos/get-release-by-tag"),
    (github.build_list_releases(GITHUB_API, TOKEN, REPO, page=2), "repos/list-releases"),
    (
        github.build_create_release(GITHUB_API, TOKEN, REPO, "v1", name="v1", body="notes"),
        "repos/create-release",
    ),
    (github.build_list_assets(GITHUB_API, TOKEN, REPO, 7), "repos/list-release-assets"),
    (github.build_delete_asset(GITHUB_API, TOKEN, REPO, 9), "repos/delete-release-asset"),
    (github.build_publish_release(GITHUB_API, TOKEN, REPO, 7), "repos/update-release"),
]


@pytest.mark.parametrize(("request_", "operation"), BUILT, ids=[op for _, op in BUILT])
def test_builders_produce_documented_requests(request_: ForgeRequest, operation: str) -> None:
    """Each builder's request matches the GitHub operation it is meant for."""
    assert validate_forge_request(request_, bases=BASES) == operation


def test_builders_send_the_house_headers() -> None:
    """Requests carry the GitHub media type, the pinned version and a Bearer token."""
    request = github.build_tarball(GITHUB_API, TOKEN, REPO, SHA)
    assert request.headers == {
        "Accept": "application/vnd.github+json",
        "X-GitHub-Api-Version": "2022-11-28",
        "Authorization": f"Bearer {TOKEN}",
    }


def test_build_upload_asset_targets_the_upload_host_with_exact_length() -> None:
    """The upload goes to the configured upload base with the file's size and raw type."""
    request = github.build_upload_asset(
        GITHUB_UPLOADS, TOKEN, REPO, 7, name="archlinux x86_64.iso", size=1234
    )
    assert request.url == (
        "https://uploads.github.com/repos/octo-org/profile/releases/7/assets"
        "?name=archlinux+x86_64.iso"
    )
    assert request.headers["Content-Length"] == "1234"
    assert request.headers["Content-Type"] == "application/octet-stream"
    operation = validate_github_request(
        request.method, request.url, request.headers, b"x" * 1234, bases=BASES
    )
    assert operation == "repos/upload-release-asset"


def test_build_for_github_enterprise_uses_the_given_base() -> None:
    """An Enterprise API base is kept, path prefix included."""
    request = github.build_tarball("https://ghe.example.com/api/v3/", TOKEN, REPO, SHA)
    assert request.url == f"https://ghe.example.com/api/v3/repos/octo-org/profile/tarball/{SHA}"
    ghe = ("https://ghe.example.com/api/v3",)
    assert validate_forge_request(request, bases=ghe) == "repos/download-tarball-archive"


def test_build_release_by_tag_keeps_slashes_in_the_tag() -> None:
    """A tag like `release/2024.1` stays multi-segment, as GitHub describes the parameter."""
    request = github.build_release_by_tag(GITHUB_API, TOKEN, REPO, "release/2024.1")
    assert request.url.endswith("/releases/tags/release/2024.1")
    assert validate_forge_request(request, bases=BASES) == "repos/get-release-by-tag"


@given(st.sampled_from(GitHubState), st.text(max_size=400))
def test_build_commit_status_is_always_valid(state: GitHubState, description: str) -> None:
    """Whatever the state and text, the status request is one GitHub accepts."""
    request = github.build_commit_status(
        GITHUB_API,
        TOKEN,
        REPO,
        SHA,
        state=state,
        context="isorunner",
        description=description,
        target_url=None,
    )
    assert validate_forge_request(request, bases=BASES) == "repos/create-commit-status"
    assert isinstance(request.json, dict)
    text = request.json["description"]
    assert isinstance(text, str)
    assert len(text) <= github.DESCRIPTION_LIMIT


@given(st.text(max_size=600))
def test_truncate_description_fits_and_keeps_short_text(text: str) -> None:
    """A description is cut to 140 characters, and one-line text that fits is kept."""
    cut = github.truncate_description(text)
    assert len(cut) <= 140
    flat = " ".join(text.split())
    if len(flat) <= 140:
        assert cut == flat
    else:
        assert cut.endswith("…")
        assert flat.startswith(cut[:-1])


def test_split_repo_refuses_anything_but_owner_and_name() -> None:
    """`owner/name` splits; a bare name or a nested path is refused."""
    assert github.split_repo("a/b") == ("a", "b")
    for bad in ("ab", "a/b/c", "/b", "a/"):
        with pytest.raises(ValueError, match="owner/name"):
            github.split_repo(bad)


def test_decode_release_reads_a_recorded_release() -> None:
    """The recorded `GET /releases/tags/v1.0.0` answer decodes to its id, tag and page."""
    release = github.decode_release(as_response(sample("github", "release_by_tag", 200)))
    assert release.id == 1000
    assert release.tag_name == "v1.0.0"
    assert not release.draft
    assert release.html_url.endswith("/releases/tag/v1.0.0")


def test_decode_assets_reads_a_recorded_listing() -> None:
    """The recorded asset listing decodes to names, states and sizes."""
    assets = github.decode_assets(as_response(sample("github", "list_assets", 200)))
    assert [(a.id, a.name, a.state, a.size) for a in assets] == [
        (1000, "test-upload.txt", "uploaded", 14)
    ]


def test_decode_asset_reads_a_recorded_upload() -> None:
    """The recorded 201 of an upload decodes to the stored asset."""
    asset = github.decode_asset(as_response(sample("github", "upload_asset", 201)))
    assert asset.name == "test-upload.txt"


def test_decode_asset_maps_the_recorded_duplicate_to_conflict() -> None:
    """GitHub's 422 `already_exists` for a duplicate asset name is a `Conflict`."""
    with pytest.raises(Conflict, match="422"):
        github.decode_asset(as_response(sample("github", "upload_asset_conflict", 422)))


def test_decode_no_content_accepts_the_recorded_status_creation() -> None:
    """The recorded 201 of a commit status passes, and a 404 raises `NotFound`."""
    github.decode_no_content(as_response(sample("github", "create_status", 201)))
    with pytest.raises(NotFound):
        github.decode_no_content(ForgeResponse(404, {}, b'{"message":"Not Found"}'))


def test_decoders_refuse_bodies_without_the_needed_fields() -> None:
    """A 200 whose JSON lacks the release's fields raises `MalformedResponse`."""
    with pytest.raises(MalformedResponse):
        github.decode_release(ForgeResponse(200, {}, b'{"id": 1}'))
    with pytest.raises(MalformedResponse):
        github.decode_assets(ForgeResponse(200, {}, b'{"id": 1}'))
    with pytest.raises(MalformedResponse):
        github.decode_releases(ForgeResponse(200, {}, b"<html>"))


def test_openapi_validator_rejects_an_undocumented_state() -> None:
    """The validator itself fails a status whose state GitHub does not know."""
    request = github.build_commit_status(
        GITHUB_API,
        TOKEN,
        REPO,
        SHA,
        state=GitHubState.PENDING,
        context="c",
        description="d",
        target_url=None,
    )
    assert isinstance(request.json, dict)
    bad = ForgeRequest(
        request.method, request.url, request.headers, json={**request.json, "state": "running"}
    )
    with pytest.raises(OpenAPIViolation, match="not one of"):
        validate_forge_request(bad, bases=BASES)


def test_openapi_validator_rejects_missing_fields_and_unknown_paths() -> None:
    """Missing required fields, undeclared fields and unknown paths all fail validation."""
    create = github.build_create_release(GITHUB_API, TOKEN, REPO, "v1", name="n", body="b")
    missing = ForgeRequest("POST", create.url, create.headers, json={"name": "n"})
    with pytest.raises(OpenAPIViolation, match="required field 'tag_name'"):
        validate_forge_request(missing, bases=BASES)
    extra = ForgeRequest("POST", create.url, create.headers, json={"tag_name": "v", "x": 1})
    with pytest.raises(OpenAPIViolation, match="undeclared field 'x'"):
        validate_forge_request(extra, bases=BASES)
    unknown = ForgeRequest("GET", f"{GITHUB_API}/repos/a/b/nothing", create.headers)
    with pytest.raises(OpenAPIViolation, match="no operation"):
        validate_forge_request(unknown, bases=BASES)


def test_openapi_validator_rejects_unpinned_version_and_bad_ids() -> None:
    """A request without the pinned version, or with a non-numeric release id, fails."""
    request = github.build_list_assets(GITHUB_API, TOKEN, REPO, 7)
    unpinned = ForgeRequest("GET", request.url, {"Authorization": "Bearer t"})
    with pytest.raises(OpenAPIViolation, match="pinned"):
        validate_forge_request(unpinned, bases=BASES)
    bad_id = ForgeRequest("GET", request.url.replace("/7/", "/seven/"), request.headers)
    with pytest.raises(OpenAPIViolation, match="not an integer"):
        validate_forge_request(bad_id, bases=BASES)

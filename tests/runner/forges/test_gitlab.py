"""Tests for `runner.forges.gitlab`: project ids, the status state machine, builders."""

from __future__ import annotations

import itertools

import pytest

from runner.forges import gitlab
from runner.forges.exceptions import (
    MalformedResponse,
    Rejected,
    ReleaseRefused,
    TransitionRefused,
)
from runner.forges.gitlab import GitLabState, ReleaseLink
from runner.forges.request import ForgeResponse
from tests.runner.forges.conftest import GITLAB_API

SHA = "0123456789abcdef0123456789abcdef01234567"
TOKEN = "glpat-example"


@pytest.mark.parametrize(
    ("project", "expected"),
    [
        (42, "42"),
        ("42", "42"),
        ("group/proj", "group%2Fproj"),
        ("group/sub/proj", "group%2Fsub%2Fproj"),
        ("my.group/the-proj_1", "my.group%2Fthe-proj_1"),
        ("odd%name/proj", "odd%25name%2Fproj"),
    ],
)
def test_project_ref_encodes_paths_exactly_once(project: str | int, expected: str) -> None:
    """Numeric ids stay as they are; a path's slashes become %2F, nothing is doubled."""
    assert gitlab.project_ref(project) == expected


@pytest.mark.parametrize("project", ["", "/", "group//proj"])
def test_project_ref_refuses_empty_segments(project: str) -> None:
    """An empty path or an empty segment is refused before any request."""
    with pytest.raises(ValueError, match="numeric id or group/project"):
        gitlab.project_ref(project)


#: The transitions GitLab answers with 400 "Cannot transition status" (§3.3).
REFUSED = {
    (GitLabState.PENDING, GitLabState.PENDING),
    (GitLabState.RUNNING, GitLabState.RUNNING),
    (GitLabState.RUNNING, GitLabState.PENDING),
}


@pytest.mark.parametrize(
    ("previous", "new"),
    list(itertools.product([None, *GitLabState], GitLabState)),
)
def test_transition_allowed_matches_gitlabs_state_machine(
    previous: GitLabState | None, new: GitLabState
) -> None:
    """Exactly the three transitions GitLab refuses are disallowed; all else is allowed."""
    assert gitlab.transition_allowed(previous, new) == ((previous, new) not in REFUSED)


def test_build_commit_status_targets_the_encoded_project() -> None:
    """The status goes to `/projects/<encoded path>/statuses/<sha>` with the token header."""
    request = gitlab.build_commit_status(
        GITLAB_API,
        TOKEN,
        "group/sub/proj",
        SHA,
        state=GitLabState.RUNNING,
        name="isorunner",
        description="building",
        target_url="https://ci.example.com/builds/3",
        ref="main",
    )
    assert request.method == "POST"
    assert request.url == f"{GITLAB_API}/projects/group%2Fsub%2Fproj/statuses/{SHA}"
    assert request.headers["PRIVATE-TOKEN"] == TOKEN
    assert "Authorization" not in request.headers
    assert request.json == {
        "state": "running",
        "name": "isorunner",
        "description": "building",
        "target_url": "https://ci.example.com/builds/3",
        "ref": "main",
    }
    assert request.retry_statuses == frozenset({409})


def test_build_commit_status_respects_gitlabs_lengths() -> None:
    """Descriptions are cut to 255 characters; a longer target URL is left out."""
    request = gitlab.build_commit_status(
        GITLAB_API,
        TOKEN,
        7,
        SHA,
        state=GitLabState.FAILED,
        name="isorunner",
        description="y" * 1000,
        target_url="https://ci.example.com/" + "z" * 300,
        ref=None,
    )
    assert isinstance(request.json, dict)
    description = request.json["description"]
    assert isinstance(description, str)
    assert len(description) == 255
    assert "target_url" not in request.json
    assert "ref" not in request.json


def test_decode_commit_status_raises_transition_refused_for_gitlabs_400() -> None:
    """GitLab's 400 "Cannot transition status" becomes `TransitionRefused`; 201 passes."""
    refused = ForgeResponse(
        400, {}, b'{"message":"Cannot transition status via :run from :running"}'
    )
    with pytest.raises(TransitionRefused, match="already shows this state") as caught:
        gitlab.decode_commit_status(refused)
    assert caught.value.status_code == 400
    gitlab.decode_commit_status(ForgeResponse(201, {}, b"{}"))


def test_decode_commit_status_raises_other_refusals() -> None:
    """Any other 400 is a `Rejected` carrying GitLab's message."""
    other = ForgeResponse(400, {}, b'{"message":{"state":["is invalid"]}}', "post a status")
    with pytest.raises(Rejected, match="is invalid") as caught:
        gitlab.decode_commit_status(other)
    assert type(caught.value) is Rejected
    assert caught.value.status_code == 400


def test_build_archive_asks_for_the_commit() -> None:
    """The archive request names the tar.gz format and the commit."""
    request = gitlab.build_archive(GITLAB_API, TOKEN, "group/proj", SHA)
    assert request.url == (
        f"{GITLAB_API}/projects/group%2Fproj/repository/archive.tar.gz?sha={SHA}"
    )


def test_build_package_upload_puts_raw_bytes_with_exact_length() -> None:
    """The upload is a PUT of octet-stream with the file's length, asking for the file JSON."""
    request = gitlab.build_package_upload(
        GITLAB_API,
        TOKEN,
        "group/proj",
        package="isorunner",
        version="v1.2.0",
        file_name="image.iso",
        size=99,
    )
    assert request.method == "PUT"
    assert request.url == (
        f"{GITLAB_API}/projects/group%2Fproj/packages/generic/isorunner/v1.2.0/image.iso"
        "?select=package_file"
    )
    assert request.headers["Content-Length"] == "99"
    assert request.headers["Content-Type"] == "application/octet-stream"
    assert request.json is None


@pytest.mark.parametrize("version", ["v1", "1.2.3", "2024.01.15", "v1.0-rc1", "1+build"])
def test_check_package_names_accepts_gitlab_versions(version: str) -> None:
    """Usual tag names are valid generic package versions."""
    gitlab.check_package_names("isorunner", version, ["image.iso", "sha256sums"])


@pytest.mark.parametrize(
    ("version", "files"),
    [("release/1", ["a.iso"]), ("v1 beta", ["a.iso"]), ("v1", ["my image.iso"]), ("v1", ["ä"])],
)
def test_check_package_names_refuses_what_gitlab_refuses(version: str, files: list[str]) -> None:
    """Slashes, spaces and non-ASCII names are refused before any upload."""
    with pytest.raises(ReleaseRefused, match="could not publish to GitLab"):
        gitlab.check_package_names("isorunner", version, files)


def test_build_create_release_carries_the_links() -> None:
    """The release is created for the tag with one package link per file."""
    link = ReleaseLink(name="image.iso", url="https://x/image.iso", direct_asset_path="/image.iso")
    request = gitlab.build_create_release(
        GITLAB_API, TOKEN, 5, "v1", name="v1", description="notes", links=[link]
    )
    assert request.url == f"{GITLAB_API}/projects/5/releases"
    assert request.json == {
        "tag_name": "v1",
        "name": "v1",
        "description": "notes",
        "assets": {
            "links": [
                {
                    "name": "image.iso",
                    "url": "https://x/image.iso",
                    "direct_asset_path": "/image.iso",
                    "link_type": "package",
                }
            ]
        },
    }


def test_release_urls_encode_the_tag() -> None:
    """A tag with a slash is one encoded path segment in release URLs."""
    request = gitlab.build_list_links(GITLAB_API, TOKEN, 5, "release/1")
    assert "/releases/release%2F1/assets/links" in request.url


def test_decode_release_reads_the_web_link() -> None:
    """A release decodes to its tag and the web page in `_links.self`."""
    body = b'{"tag_name":"v1","_links":{"self":"https://gitlab.example.com/g/p/-/releases/v1"}}'
    release = gitlab.decode_release(ForgeResponse(201, {}, body))
    assert release.links.self_url == "https://gitlab.example.com/g/p/-/releases/v1"


def test_decoders_refuse_unexpected_bodies() -> None:
    """Bodies without the documented fields raise `MalformedResponse`."""
    with pytest.raises(MalformedResponse):
        gitlab.decode_release(ForgeResponse(201, {}, b'{"tag_name":"v1"}'))
    with pytest.raises(MalformedResponse):
        gitlab.decode_links(ForgeResponse(200, {}, b"{}"))
    with pytest.raises(MalformedResponse):
        gitlab.decode_package_file(ForgeResponse(201, {}, b'{"message":"201 Created"}'))

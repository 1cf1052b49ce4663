"""GitHub REST requests and answers: builders that return `ForgeRequest`s, decoders.

Pure: no I/O. Every builder takes the API base URL from the caller (github.com or a
GitHub Enterprise `https://host/api/v3`), the token, and the call's values, and returns
a complete `ForgeRequest`; every decoder takes the `ForgeResponse` and returns typed
data or raises a `ForgeError` (via `runner.forges.response`). `GitHubClient` in
`github_client.py` strings them together over `ForgeTransport`.

Headers follow GitHub's advice (forge-apis.md §4.1): `Accept: application/vnd.github+json`,
`X-GitHub-Api-Version: 2022-11-28` pinned, `Authorization: Bearer <token>`.

Builders: `build_commit_status`, `build_tarball`, `build_release_by_tag`,
`build_list_releases`, `build_create_release`, `build_delete_release`,
`build_list_assets`, `build_delete_asset`, `build_upload_asset`, `build_publish_release`,
`build_get_repo` and `build_rate_limit` (the read-only calls `isorunner check` makes).
Decoders: `decode_release`, `decode_releases`, `decode_asset`, `decode_assets`,
`decode_no_content`, `decode_repo`, `decode_rate_limit`. `remote_asset` turns an asset
into the forge-neutral `releaseplan.RemoteAsset`.
"""

from __future__ import annotations

import enum
from urllib.parse import quote, urlencode

from pydantic import BaseModel, ConfigDict, ValidationError

from runner.forges.exceptions import MalformedResponse
from runner.forges.releaseplan import RemoteAsset
from runner.forges.request import ForgeRequest, ForgeResponse
from runner.forges.response import check, decode_json, decode_model, decode_model_list

API_VERSION = "2022-11-28"
#: Each release asset must be *under* 2 GiB; 2 147 483 648 bytes is refused (GH-rel).
MAX_ASSET_SIZE = 2 * 1024**3
#: GitHub refuses longer status descriptions with 422 (forge-apis.md §3.1).
DESCRIPTION_LIMIT = 140
#: The largest page GitHub serves for list endpoints.
PAGE_SIZE = 100


class GitHubState(enum.StrEnum):
    """The states GitHub accepts for a commit status."""

    PENDING = "pending"
    SUCCESS = "success"
    FAILURE = "failure"
    ERROR = "error"


class ReleaseAsset(BaseModel):
    """The fields of a GitHub release asset that isorunner reads."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: int
    name: str
    state: str
    size: int
    #: `sha256:<hex>` once the asset is uploaded (GitHub's `release-asset` schema);
    #: absent on older GitHub Enterprise servers.
    digest: str | None = None


def remote_asset(asset: ReleaseAsset) -> RemoteAsset:
    """The forge-neutral view of an asset: its digest without the `sha256:` prefix."""
    algorithm, _, value = (asset.digest or "").partition(":")
    sha256 = value.lower() if algorithm == "sha256" and value else None
    return RemoteAsset(
        id=asset.id,
        name=asset.name,
        size=asset.size,
        sha256=sha256,
        complete=asset.state == "uploaded",
    )


class Release(BaseModel):
    """The fields of a GitHub release that isorunner reads."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: int
    tag_name: str
    draft: bool
    html_url: str
    immutable: bool = False
    assets: tuple[ReleaseAsset, ...] = ()


class RepoPermissions(BaseModel):
    """What the token may do in a repository (GitHub reports it for user tokens)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    admin: bool = False
    push: bool = False
    pull: bool = False


class Repository(BaseModel):
    """The fields of a GitHub repository that `isorunner check` reads."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    full_name: str
    private: bool = False
    permissions: RepoPermissions | None = None


class CoreRateLimit(BaseModel):
    """The `resources.core` part of `GET /rate_limit`."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    limit: int
    remaining: int
    reset: int


def headers(token: str, *, accept: str = "application/vnd.github+json") -> dict[str, str]:
    """Return the headers every GitHub API request carries, the token included."""
    return {
        "Accept": accept,
        "X-GitHub-Api-Version": API_VERSION,
        "Authorization": f"Bearer {token}",
    }


def split_repo(repo: str) -> tuple[str, str]:
    """Split `owner/name` into its two parts, refusing anything else.

    Raises:
        ValueError: `repo` is not exactly `owner/name`.
    """
    owner, sep, name = repo.partition("/")
    if not sep or not owner or not name or "/" in name:
        raise ValueError(f"a GitHub repository is written owner/name, not {repo!r}")
    return owner, name


def _repo_url(api_url: str, repo: str) -> str:
    owner, name = split_repo(repo)
    return f"{api_url.rstrip('/')}/repos/{quote(owner, safe='')}/{quote(name, safe='')}"


def truncate_description(text: str, limit: int = DESCRIPTION_LIMIT) -> str:
    """Fit a status description into `limit` characters, on one line, ending in `…`.

    Python strings index code points, so the cut never splits a character; line breaks
    and runs of white space become single spaces.
    """
    flat = " ".join(text.split())
    if len(flat) <= limit:
        return flat
    return flat[: limit - 1].rstrip() + "…"


def build_commit_status(
    api_url: str,
    token: str,
    repo: str,
    sha: str,
    *,
    state: GitHubState,
    context: str,
    description: str,
    target_url: str | None,
) -> ForgeRequest:
    """Build `POST /repos/{owner}/{repo}/statuses/{sha}`.

    Args:
        api_url: The API base URL.
        token: The token to send.
        repo: `owner/name`.
        sha: The commit.
        state: The GitHub state.
        context: The status context (case-insensitive on GitHub).
        description: Free text, cut to 140 characters.
        target_url: The link shown next to the status, or None.

    Returns:
        The request.
    """
    body: dict[str, str | None] = {
        "state": state.value,
        "context": context,
        "description": truncate_description(description),
    }
    if target_url is not None:
        body["target_url"] = target_url
    return ForgeRequest(
        "POST",
        f"{_repo_url(api_url, repo)}/statuses/{quote(sha, safe='')}",
        headers=headers(token),
        json=dict(body),
        action=f"post the {state.value} commit status for {repo}@{sha[:7]}",
    )


def build_tarball(api_url: str, token: str, repo: str, sha: str) -> ForgeRequest:
    """Build `GET /repos/{owner}/{repo}/tarball/{sha}` (answered by a 302 to codeload)."""
    return ForgeRequest(
        "GET",
        f"{_repo_url(api_url, repo)}/tarball/{quote(sha, safe='')}",
        headers=headers(token),
        action=f"download the archive of {repo}@{sha[:7]}",
    )


def build_release_by_tag(api_url: str, token: str, repo: str, tag: str) -> ForgeRequest:
    """Build `GET /repos/{owner}/{repo}/releases/tags/{tag}` (published releases only)."""
    # The tag parameter is multi-segment in GitHub's description: slashes stay as they are.
    return ForgeRequest(
        "GET",
        f"{_repo_url(api_url, repo)}/releases/tags/{quote(tag, safe='/')}",
        headers=headers(token),
        action=f"look up the release for tag {tag} of {repo}",
    )


def build_list_releases(api_url: str, token: str, repo: str, *, page: int = 1) -> ForgeRequest:
    """Build `GET /repos/{owner}/{repo}/releases`, the only way to see draft releases."""
    query = urlencode({"per_page": PAGE_SIZE, "page": page})
    return ForgeRequest(
        "GET",
        f"{_repo_url(api_url, repo)}/releases?{query}",
        headers=headers(token),
        action=f"list the releases of {repo}",
    )


def build_create_release(
    api_url: str, token: str, repo: str, tag: str, *, name: str, body: str
) -> ForgeRequest:
    """Build `POST /repos/{owner}/{repo}/releases` for a *draft* release of an existing tag.

    Drafts come first because a published immutable release takes no more assets
    (forge-apis.md §6.1): create draft, upload everything, then publish. Not
    idempotent: GitHub lets drafts share a tag, so a create sent twice makes two.
    """
    return ForgeRequest(
        "POST",
        f"{_repo_url(api_url, repo)}/releases",
        headers=headers(token),
        json={"tag_name": tag, "name": name, "body": body, "draft": True},
        action=f"create a draft release for tag {tag} of {repo}",
        idempotent=False,
    )


def build_delete_release(api_url: str, token: str, repo: str, release_id: int) -> ForgeRequest:
    """Build `DELETE /repos/{owner}/{repo}/releases/{release_id}` (an orphan draft)."""
    return ForgeRequest(
        "DELETE",
        f"{_repo_url(api_url, repo)}/releases/{release_id}",
        headers=headers(token),
        action=f"delete release {release_id} of {repo}",
    )


def build_list_assets(
    api_url: str, token: str, repo: str, release_id: int, *, page: int = 1
) -> ForgeRequest:
    """Build `GET /repos/{owner}/{repo}/releases/{release_id}/assets`, 100 per page."""
    query = urlencode({"per_page": PAGE_SIZE, "page": page})
    return ForgeRequest(
        "GET",
        f"{_repo_url(api_url, repo)}/releases/{release_id}/assets?{query}",
        headers=headers(token),
        action=f"list the assets of release {release_id} of {repo}",
    )


def build_delete_asset(api_url: str, token: str, repo: str, asset_id: int) -> ForgeRequest:
    """Build `DELETE /repos/{owner}/{repo}/releases/assets/{asset_id}`."""
    return ForgeRequest(
        "DELETE",
        f"{_repo_url(api_url, repo)}/releases/assets/{asset_id}",
        headers=headers(token),
        action=f"delete release asset {asset_id} of {repo}",
    )


def build_upload_asset(
    upload_url: str, token: str, repo: str, release_id: int, *, name: str, size: int
) -> ForgeRequest:
    """Build the asset upload `POST {upload_url}/repos/{o}/{r}/releases/{id}/assets?name=`.

    The body is streamed from disk by `ForgeTransport.upload_file`; this request only
    fixes its exact `Content-Length` (GitHub answers 400 without one) and its type.

    Args:
        upload_url: The upload host base (`https://uploads.github.com`, or GitHub
            Enterprise's `https://host/api/uploads`), without `{?name,label}`.
        token: The token to send.
        repo: `owner/name`.
        release_id: The release.
        name: The asset's file name.
        size: The file's size in bytes.

    Returns:
        The request, without a body.
    """
    query = urlencode({"name": name})
    return ForgeRequest(
        "POST",
        f"{_repo_url(upload_url, repo)}/releases/{release_id}/assets?{query}",
        headers={
            **headers(token),
            "Content-Type": "application/octet-stream",
            "Content-Length": str(size),
        },
        action=f"upload {name} to release {release_id} of {repo}",
    )


def build_publish_release(api_url: str, token: str, repo: str, release_id: int) -> ForgeRequest:
    """Build `PATCH /repos/{owner}/{repo}/releases/{release_id}` with `draft: false`."""
    return ForgeRequest(
        "PATCH",
        f"{_repo_url(api_url, repo)}/releases/{release_id}",
        headers=headers(token),
        json={"draft": False},
        action=f"publish release {release_id} of {repo}",
    )


def build_get_repo(api_url: str, token: str, repo: str) -> ForgeRequest:
    """Build `GET /repos/{owner}/{repo}`: read-only; proves the token can see the repo."""
    return ForgeRequest(
        "GET",
        _repo_url(api_url, repo),
        headers=headers(token),
        action=f"look up the repository {repo}",
    )


def build_rate_limit(api_url: str, token: str) -> ForgeRequest:
    """Build `GET /rate_limit`: read-only, free of quota; proves the token is valid."""
    return ForgeRequest(
        "GET",
        f"{api_url.rstrip('/')}/rate_limit",
        headers=headers(token),
        action="read the API rate limit",
    )


_ADVICE = "check github.api_url (GitHub Enterprise: https://HOST/api/v3) and the API version"


def decode_release(response: ForgeResponse) -> Release:
    """Decode one release (from get, create or update)."""
    return decode_model(response, Release, advice=_ADVICE)


def decode_releases(response: ForgeResponse) -> list[Release]:
    """Decode a page of releases."""
    return decode_model_list(response, Release, advice=_ADVICE)


def decode_asset(response: ForgeResponse) -> ReleaseAsset:
    """Decode one release asset (the answer to an upload)."""
    return decode_model(response, ReleaseAsset, advice=_ADVICE)


def decode_assets(response: ForgeResponse) -> list[ReleaseAsset]:
    """Decode a list of release assets."""
    return decode_model_list(response, ReleaseAsset, advice=_ADVICE)


def decode_repo(response: ForgeResponse) -> Repository:
    """Decode a repository (the answer to `build_get_repo`)."""
    return decode_model(response, Repository, advice=_ADVICE)


def decode_rate_limit(response: ForgeResponse) -> CoreRateLimit:
    """Decode the core API rate limit (the answer to `build_rate_limit`)."""
    data = decode_json(response)
    try:
        return CoreRateLimit.model_validate(data["resources"]["core"])
    except (ValidationError, KeyError, TypeError) as exc:
        raise MalformedResponse(
            f"could not {response.action}: GitHub's answer has no resources.core limit; "
            "check the API base URL",
            status_code=response.status,
            headers=response.headers,
        ) from exc


def decode_no_content(response: ForgeResponse) -> None:
    """Accept any 2xx (201 for statuses, 204 for deletions), raise for the rest."""
    check(response)

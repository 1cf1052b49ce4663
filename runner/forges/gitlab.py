"""GitLab REST requests and answers: builders that return `ForgeRequest`s, decoders.

Pure: no I/O. Every builder takes the API base URL from the caller (`https://gitlab.com/api/v4`
or a self-managed instance), the token (sent as `PRIVATE-TOKEN`) and the call's values.
`GitLabClient` in `gitlab_client.py` strings them together over `ForgeTransport`.

Projects are addressed by numeric id or by their full path URL-encoded exactly once
(`group%2Fsub%2Fproject`; a raw `/` or `%252F` answers 404, forge-apis.md §9.16).

Commit statuses follow GitLab's state machine (forge-apis.md §3.3): GitLab looks for an
existing *pending or running* status of the same name, ref and user and moves it on;
posting `pending` over `pending`, `running` over `running` or `pending` over `running`
answers 400 "Cannot transition status". `transition_allowed` encodes that table so the
client never posts such a transition; `decode_commit_status` raises `TransitionRefused`
for the 400 all the same (the previous post may come from an earlier process), and
the client reads it as "already there".

Builders: `build_commit_status`, `build_archive`, `build_package_upload`,
`build_list_packages`, `build_list_package_files`, `build_delete_package_file`,
`build_get_release`, `build_create_release`, `build_update_release`, `build_list_links`,
`build_create_link`, `build_update_link`, `build_get_project` (the read-only call
`isorunner check` makes).
Decoders: `decode_commit_status`, `decode_package_file`, `decode_package_files`,
`decode_packages`, `decode_release`, `decode_links`, `decode_link`, `decode_project`,
`decode_no_content`. Checks: `check_package_names`. `remote_file` turns a package file
into the forge-neutral `releaseplan.RemoteAsset`.

Creates (`build_create_release`, `build_create_link`) are not idempotent: after an
ambiguous answer the client looks the release (its links) up before creating again.
"""

from __future__ import annotations

import enum
import string
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote, urlencode

from pydantic import BaseModel, ConfigDict, Field

from runner.forges.exceptions import ReleaseRefused, TransitionRefused
from runner.forges.releaseplan import RemoteAsset
from runner.forges.request import ForgeRequest, ForgeResponse, JSONValue
from runner.forges.response import (
    check,
    decode_model,
    decode_model_list,
    server_message,
)
from webhooks.bounds import quoted
from webhooks.refs import package_version_problem

#: GitLab's limits on a commit status's `description` and `target_url` (§3.3).
DESCRIPTION_LIMIT = 255
TARGET_URL_LIMIT = 255
#: Characters allowed in generic package and file names (§6.2); the version's rule is
#: `webhooks.refs.package_version_problem`, which intake applies to tags already.
PACKAGE_NAME_CHARS = frozenset(string.ascii_letters + string.digits + "._-")
#: The longest package or file name taken.
MAX_PACKAGE_NAME = 255
#: The access level that may post commit statuses and create releases (Developer).
DEVELOPER_ACCESS = 30
#: The largest page GitLab serves for list endpoints.
PAGE_SIZE = 100


class GitLabState(enum.StrEnum):
    """The commit status states isorunner posts to GitLab."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    CANCELED = "canceled"


@dataclass(frozen=True, slots=True)
class ReleaseLink:
    """A release asset link to create: where the file lives and how it is listed.

    Attributes:
        name: The link's title (unique within the release).
        url: Where the file is downloaded from (unique within the release).
        direct_asset_path: The permanent `/-/releases/<tag>/downloads/...` path.
        link_type: `other`, `runbook`, `image` or `package`.
    """

    name: str
    url: str
    direct_asset_path: str
    link_type: str = "package"

    def as_json(self) -> dict[str, JSONValue]:
        """The link as GitLab's API takes it."""
        return {
            "name": self.name,
            "url": self.url,
            "direct_asset_path": self.direct_asset_path,
            "link_type": self.link_type,
        }


class PackageFile(BaseModel):
    """The fields of a package file (an upload's `select=package_file` answer, a listing)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: int
    file_name: str
    size: int
    file_sha256: str | None = None


def remote_file(package_file: PackageFile, package_id: int) -> RemoteAsset:
    """The forge-neutral view of a file of package `package_id` (only finished ones list)."""
    digest = package_file.file_sha256
    return RemoteAsset(
        id=package_file.id,
        name=package_file.file_name,
        size=package_file.size,
        sha256=digest.lower() if digest else None,
        parent=package_id,
    )


class GenericPackage(BaseModel):
    """The fields of a package in `GET /projects/:id/packages`."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: int
    name: str
    version: str | None = None


class ExistingLink(BaseModel):
    """The fields of an existing release link."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: int
    name: str
    url: str


class ReleaseWebLinks(BaseModel):
    """A release's `_links`: its web page."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    self_url: str = Field(alias="self")


class GitLabRelease(BaseModel):
    """The fields of a GitLab release that isorunner reads."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    tag_name: str
    links: ReleaseWebLinks = Field(alias="_links")


class MemberAccess(BaseModel):
    """One `permissions.*_access` entry of a project."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    access_level: int


class ProjectPermissions(BaseModel):
    """The token user's access to a project, directly or through its group."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    project_access: MemberAccess | None = None
    group_access: MemberAccess | None = None


class Project(BaseModel):
    """The fields of a GitLab project that `isorunner check` reads."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: int
    path_with_namespace: str
    permissions: ProjectPermissions | None = None

    @property
    def access_level(self) -> int | None:
        """The highest access level the token has here, or None if not reported."""
        if self.permissions is None:
            return None
        levels = [
            access.access_level
            for access in (self.permissions.project_access, self.permissions.group_access)
            if access is not None
        ]
        return max(levels, default=None)


def headers(token: str) -> dict[str, str]:
    """Return the headers every GitLab API request carries, the token included."""
    return {"PRIVATE-TOKEN": token, "Accept": "application/json"}


def project_ref(project: str | int) -> str:
    """Return the `:id` path segment for a numeric id or a full project path.

    Raises:
        ValueError: The path is empty or has empty segments.
    """
    text = str(project).strip("/")
    if text.isdigit():
        return text
    if not text or "" in text.split("/"):
        raise ValueError(f"a GitLab project is a numeric id or group/project, not {project!r}")
    return quote(text, safe="")


def _project_url(api_url: str, project: str | int) -> str:
    return f"{api_url.rstrip('/')}/projects/{project_ref(project)}"


def transition_allowed(previous: GitLabState | None, new: GitLabState) -> bool:
    """Whether GitLab accepts `new` after `previous` (our last post for that status).

    After a final state (or nothing) GitLab starts a new status, so anything goes.
    From `pending` only `pending` is refused; from `running`, `pending` and `running`.
    """
    if previous is GitLabState.PENDING:
        return new is not GitLabState.PENDING
    if previous is GitLabState.RUNNING:
        return new not in (GitLabState.PENDING, GitLabState.RUNNING)
    return True


def _cut(text: str, limit: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def build_commit_status(
    api_url: str,
    token: str,
    project: str | int,
    sha: str,
    *,
    state: GitLabState,
    name: str,
    description: str,
    target_url: str | None,
    ref: str | None,
) -> ForgeRequest:
    """Build `POST /projects/:id/statuses/:sha`.

    A 409 (another update holds the commit's lock) is marked retryable. A target URL
    longer than GitLab's 255 characters is left out rather than cut into a broken link.

    Args:
        api_url: The API base URL.
        token: The token to send.
        project: Numeric id or full path.
        sha: The commit.
        state: The GitLab state.
        name: The status name (GitLab's `name`/`context`).
        description: Free text, cut to 255 characters.
        target_url: The build page, or None.
        ref: The branch or tag; without it GitLab may answer 404 for fork MR commits.

    Returns:
        The request.
    """
    body: dict[str, JSONValue] = {
        "state": state.value,
        "name": name,
        "description": _cut(description, DESCRIPTION_LIMIT),
    }
    if target_url is not None and len(target_url) <= TARGET_URL_LIMIT:
        body["target_url"] = target_url
    if ref is not None:
        body["ref"] = ref
    return ForgeRequest(
        "POST",
        f"{_project_url(api_url, project)}/statuses/{quote(sha, safe='')}",
        headers=headers(token),
        json=body,
        action=f"post the {state.value} commit status for {project}@{sha[:7]}",
        retry_statuses=frozenset({409}),
    )


def decode_commit_status(response: ForgeResponse) -> None:
    """Accept a posted status; raise `TransitionRefused` for GitLab's refusal.

    Raises:
        TransitionRefused: GitLab answered 400 "Cannot transition status": it already
            shows that state (callers treat this as success).
        ForgeError: Any other refusal.
    """
    if response.status == 400 and b"cannot transition status" in response.body.lower():
        raise TransitionRefused(
            f"could not {response.action}: GitLab already shows this state "
            f"({server_message(response.body)}); nothing to do",
            status_code=response.status,
            headers=response.headers,
        )
    check(response)


def build_archive(api_url: str, token: str, project: str | int, sha: str) -> ForgeRequest:
    """Build `GET /projects/:id/repository/archive.tar.gz?sha=<sha>`."""
    return ForgeRequest(
        "GET",
        f"{_project_url(api_url, project)}/repository/archive.tar.gz?{urlencode({'sha': sha})}",
        headers=headers(token),
        action=f"download the archive of {project}@{sha[:7]}",
    )


def build_get_project(api_url: str, token: str, project: str | int) -> ForgeRequest:
    """Build `GET /projects/:id`: read-only; proves the token can see the project."""
    return ForgeRequest(
        "GET",
        _project_url(api_url, project),
        headers=headers(token),
        action=f"look up the project {project}",
    )


def check_package_names(package: str, version: str, file_names: Sequence[str]) -> None:
    """Refuse names the generic package registry would refuse, before any upload.

    Both checks are single passes over capped lengths, never a backtracking pattern:
    the tag is chosen by whoever may push tags.

    Raises:
        ReleaseRefused: A name or the version has characters GitLab does not allow.
    """
    problem = package_version_problem(version)
    if problem is not None:
        raise ReleaseRefused(
            f"could not publish to GitLab: the tag {quoted(version)} is not a valid generic "
            f"package version: it {problem}; push a tag such as v1.2.3"
        )
    for name in (package, *file_names):
        if not name or len(name) > MAX_PACKAGE_NAME or not PACKAGE_NAME_CHARS.issuperset(name):
            raise ReleaseRefused(
                f"could not publish to GitLab: {quoted(name)} is not a valid generic package "
                f"or file name (1 to {MAX_PACKAGE_NAME} letters, digits, '.', '_' and '-'); "
                "rename it"
            )


def package_file_url(
    api_url: str, project: str | int, *, package: str, version: str, file_name: str
) -> str:
    """The API URL of a generic package file (upload with PUT, download with GET)."""
    segments = "/".join(quote(s, safe="") for s in (package, version, file_name))
    return f"{_project_url(api_url, project)}/packages/generic/{segments}"


def build_package_upload(
    api_url: str,
    token: str,
    project: str | int,
    *,
    package: str,
    version: str,
    file_name: str,
    size: int,
) -> ForgeRequest:
    """Build `PUT /projects/:id/packages/generic/:package/:version/:file?select=package_file`.

    The body is streamed by `ForgeTransport.upload_file`; the request fixes its length.
    """
    url = package_file_url(api_url, project, package=package, version=version, file_name=file_name)
    return ForgeRequest(
        "PUT",
        f"{url}?{urlencode({'select': 'package_file'})}",
        headers={
            **headers(token),
            "Content-Type": "application/octet-stream",
            "Content-Length": str(size),
        },
        action=f"upload {file_name} to package {package} {version} of {project}",
    )


def build_list_packages(
    api_url: str, token: str, project: str | int, *, package: str, version: str, page: int = 1
) -> ForgeRequest:
    """Build `GET /projects/:id/packages` for the generic package `package` at `version`.

    `package_name` is a fuzzy filter and `package_version` is only known to GitLab 16.6
    and later, so the caller keeps only the exact name and version from the answer.
    """
    query = urlencode(
        {
            "package_type": "generic",
            "package_name": package,
            "package_version": version,
            "per_page": PAGE_SIZE,
            "page": page,
        }
    )
    return ForgeRequest(
        "GET",
        f"{_project_url(api_url, project)}/packages?{query}",
        headers=headers(token),
        action=f"look up package {package} {version} of {project}",
    )


def build_list_package_files(
    api_url: str, token: str, project: str | int, package_id: int, *, page: int = 1
) -> ForgeRequest:
    """Build `GET /projects/:id/packages/:package_id/package_files`, oldest first."""
    query = urlencode({"per_page": PAGE_SIZE, "page": page})
    return ForgeRequest(
        "GET",
        f"{_project_url(api_url, project)}/packages/{package_id}/package_files?{query}",
        headers=headers(token),
        action=f"list the files of package {package_id} of {project}",
    )


def build_delete_package_file(
    api_url: str, token: str, project: str | int, package_id: int, file_id: int
) -> ForgeRequest:
    """Build `DELETE /projects/:id/packages/:package_id/package_files/:package_file_id`."""
    return ForgeRequest(
        "DELETE",
        f"{_project_url(api_url, project)}/packages/{package_id}/package_files/{file_id}",
        headers=headers(token),
        action=f"delete file {file_id} of package {package_id} of {project}",
    )


def _release_url(api_url: str, project: str | int, tag: str) -> str:
    return f"{_project_url(api_url, project)}/releases/{quote(tag, safe='')}"


def build_get_release(api_url: str, token: str, project: str | int, tag: str) -> ForgeRequest:
    """Build `GET /projects/:id/releases/:tag_name` (404 when the tag has no release)."""
    return ForgeRequest(
        "GET",
        _release_url(api_url, project, tag),
        headers=headers(token),
        action=f"look up the release for tag {tag} of {project}",
    )


def build_create_release(
    api_url: str,
    token: str,
    project: str | int,
    tag: str,
    *,
    name: str,
    description: str,
    links: Sequence[ReleaseLink],
) -> ForgeRequest:
    """Build `POST /projects/:id/releases` for an existing tag, with asset links."""
    body: dict[str, JSONValue] = {
        "tag_name": tag,
        "name": name,
        "description": description,
        "assets": {"links": [link.as_json() for link in links]},
    }
    return ForgeRequest(
        "POST",
        f"{_project_url(api_url, project)}/releases",
        headers=headers(token),
        json=body,
        action=f"create the release for tag {tag} of {project}",
        idempotent=False,
    )


def build_update_release(
    api_url: str, token: str, project: str | int, tag: str, *, name: str, description: str
) -> ForgeRequest:
    """Build `PUT /projects/:id/releases/:tag_name` (name and description)."""
    return ForgeRequest(
        "PUT",
        _release_url(api_url, project, tag),
        headers=headers(token),
        json={"name": name, "description": description},
        action=f"update the release for tag {tag} of {project}",
    )


def build_list_links(api_url: str, token: str, project: str | int, tag: str) -> ForgeRequest:
    """Build `GET /projects/:id/releases/:tag_name/assets/links`."""
    return ForgeRequest(
        "GET",
        f"{_release_url(api_url, project, tag)}/assets/links?{urlencode({'per_page': 100})}",
        headers=headers(token),
        action=f"list the asset links of release {tag} of {project}",
    )


def build_create_link(
    api_url: str, token: str, project: str | int, tag: str, link: ReleaseLink
) -> ForgeRequest:
    """Build `POST /projects/:id/releases/:tag_name/assets/links`."""
    return ForgeRequest(
        "POST",
        f"{_release_url(api_url, project, tag)}/assets/links",
        headers=headers(token),
        json=link.as_json(),
        action=f"add the link {link.name} to release {tag} of {project}",
        idempotent=False,
    )


def build_update_link(
    api_url: str,
    token: str,
    project: str | int,
    tag: str,
    *,
    link_id: int,
    link: ReleaseLink,
) -> ForgeRequest:
    """Build `PUT /projects/:id/releases/:tag_name/assets/links/:link_id`."""
    return ForgeRequest(
        "PUT",
        f"{_release_url(api_url, project, tag)}/assets/links/{link_id}",
        headers=headers(token),
        json=link.as_json(),
        action=f"update the link {link.name} of release {tag} of {project}",
    )


_ADVICE = "check gitlab.url (the API answers under <url>/api/v4)"


def decode_package_file(response: ForgeResponse) -> PackageFile:
    """Decode the answer to an upload made with `select=package_file`."""
    return decode_model(response, PackageFile, advice=_ADVICE)


def decode_package_files(response: ForgeResponse) -> list[PackageFile]:
    """Decode a page of a package's files."""
    return decode_model_list(response, PackageFile, advice=_ADVICE)


def decode_packages(response: ForgeResponse) -> list[GenericPackage]:
    """Decode a page of packages."""
    return decode_model_list(response, GenericPackage, advice=_ADVICE)


def decode_no_content(response: ForgeResponse) -> None:
    """Accept any 2xx (204 for deletions), raise for the rest."""
    check(response)


def decode_release(response: ForgeResponse) -> GitLabRelease:
    """Decode a release (from get, create or update)."""
    return decode_model(response, GitLabRelease, advice=_ADVICE)


def decode_links(response: ForgeResponse) -> list[ExistingLink]:
    """Decode a release's asset links."""
    return decode_model_list(response, ExistingLink, advice=_ADVICE)


def decode_link(response: ForgeResponse) -> ExistingLink:
    """Decode one release link (from create or update)."""
    return decode_model(response, ExistingLink, advice=_ADVICE)


def decode_project(response: ForgeResponse) -> Project:
    """Decode a project (the answer to `build_get_project`)."""
    return decode_model(response, Project, advice=_ADVICE)

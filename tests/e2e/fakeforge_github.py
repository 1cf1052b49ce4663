"""The GitHub side of the fake forge: REST API, uploads host and codeload.

I/O shell (Starlette requests, files on disk). `dispatch` routes on the raw path below
`/github/api`, `/github/uploads` or `/github/codeload`; behaviour follows
shared/reference/forge-apis.md §3.1 (statuses), §5.1 (tarball), §6.1 (releases) and
the recorded responses in tests/samples/forges/github/.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote, unquote

import anyio
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, RedirectResponse, Response

from tests.e2e.fakeforge_openapi import OpenApiCheck
from tests.e2e.fakeforge_state import (
    App,
    ForgeState,
    Release,
    Repo,
    StatusRecord,
    StoredFile,
    pack_profile,
    stream_to_file,
    utc_now,
)

GitHubArea = Literal["api", "uploads", "codeload"]
STATUS_STATES = ("error", "failure", "pending", "success")
MAX_DESCRIPTION = 140
MAX_STATUSES_PER_CONTEXT = 1000
API_VERSIONS = ("2022-11-28", "2026-03-10")
DOCS = "https://docs.github.com/rest"
# Recorded when the client disconnected mid-request (nginx's convention; never sent).
CLIENT_CLOSED = 499


@dataclass(frozen=True, slots=True)
class Call:
    """What a handler gets: the shared state, the request, its repo and path values."""

    state: ForgeState
    request: Request
    repo: Repo
    params: Mapping[str, str]
    body: object | None


Handler = Callable[[Call], Awaitable[Response]]


def answer(data: object, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    """Return a JSON answer with the headers GitHub's API host sends."""
    head = {
        "x-ratelimit-limit": "5000",
        "x-ratelimit-remaining": "4999",
        "x-ratelimit-used": "1",
        "x-ratelimit-reset": str(int(time.time()) + 3600),
        "x-ratelimit-resource": "core",
        "x-github-api-version-selected": "2022-11-28",
        **(headers or {}),
    }
    body = b"" if status == 204 else json.dumps(data).encode()
    return Response(body, status, head, media_type="application/json; charset=utf-8")


def invalid(resource: str, field: str, code: str, message: str | None = None) -> Response:
    """Return GitHub's 422 "Validation Failed" answer for one field."""
    error: dict[str, str] = {"resource": resource, "code": code, "field": field}
    if message:
        error["message"] = message
    return answer(
        {"message": "Validation Failed", "errors": [error], "documentation_url": DOCS}, 422
    )


def not_found() -> Response:
    """Return GitHub's 404."""
    return answer({"message": "Not Found", "documentation_url": DOCS}, 404)


def _repo_url(call: Call) -> str:
    return f"{call.state.base_url}/github/api/repos/{call.repo.name}"


def _asset_json(call: Call, release: Release, asset: StoredFile) -> dict[str, object]:
    return {
        "url": f"{_repo_url(call)}/releases/assets/{asset.id}",
        "browser_download_url": f"{call.state.base_url}/github/web/{call.repo.name}"
        f"/releases/download/{release.tag_name}/{asset.name}",
        "id": asset.id,
        "node_id": f"RA_{asset.id}",
        "name": asset.name,
        "label": asset.label,
        "state": asset.state,
        "content_type": asset.content_type,
        "size": asset.size,
        "digest": f"sha256:{asset.sha256}" if asset.state == "uploaded" else None,
        "download_count": 0,
        "created_at": release.created_at,
        "updated_at": release.created_at,
        "uploader": None,
    }


def _release_json(call: Call, release: Release) -> dict[str, object]:
    url = f"{_repo_url(call)}/releases/{release.id}"
    uploads = f"{call.state.base_url}/github/uploads/repos/{call.repo.name}/releases/{release.id}"
    web = f"{call.state.base_url}/github/web/{call.repo.name}"
    return {
        "url": url,
        "assets_url": f"{url}/assets",
        "upload_url": f"{uploads}/assets{{?name,label}}",
        "html_url": f"{web}/releases/tag/{release.tag_name}",
        "id": release.id,
        "node_id": f"RE_{release.id}",
        "tag_name": release.tag_name,
        "target_commitish": release.target_commitish,
        "name": release.name,
        "body": release.body,
        "draft": release.draft,
        "prerelease": release.prerelease,
        "immutable": False,
        "created_at": release.created_at,
        "published_at": release.published_at,
        "author": None,
        "assets": [_asset_json(call, release, a) for a in release.assets],
        "tarball_url": f"{_repo_url(call)}/tarball/{release.tag_name}",
        "zipball_url": f"{_repo_url(call)}/zipball/{release.tag_name}",
    }


def _find_release(call: Call) -> Release | None:
    wanted = int(call.params["release_id"])
    return next((r for r in call.repo.releases if r.id == wanted), None)


# -- statuses ------------------------------------------------------------------------------


async def create_status(call: Call) -> Response:
    """POST /repos/{o}/{r}/statuses/{sha}: validate and append a status."""
    body = call.body if isinstance(call.body, dict) else {}
    sha = call.params["sha"]
    if sha not in call.repo.commits:
        return answer(
            {"message": f"No commit found for SHA: {sha}", "documentation_url": DOCS}, 422
        )
    state, description = body.get("state"), body.get("description")
    if state not in STATUS_STATES:
        return invalid("Status", "state", "custom", "state is not included in the list")
    if description is not None and (
        not isinstance(description, str) or len(description) > MAX_DESCRIPTION
    ):
        message = f"description is too long (maximum is {MAX_DESCRIPTION} characters)"
        return invalid("Status", "description", "custom", message)
    context = str(body.get("context") or "default")
    target_url = body.get("target_url")
    with call.state.locked():
        history = call.repo.statuses.setdefault(sha, [])
        # Contexts compare case-insensitively (forge-apis.md §3.1).
        if sum(s.context.lower() == context.lower() for s in history) >= MAX_STATUSES_PER_CONTEXT:
            message = "This SHA and context has reached the maximum number of statuses."
            return invalid("Status", "context", "custom", message)
        record = StatusRecord(
            id=call.state.next_id(),
            state=str(state),
            context=context,
            description=description if isinstance(description, str) else None,
            target_url=target_url if isinstance(target_url, str) else None,
        )
        history.append(record)
    url = f"{_repo_url(call)}/statuses/{sha}"
    data = {"url": url, "id": record.id, "state": record.state, "context": record.context}
    data |= {"description": record.description, "target_url": record.target_url}
    data |= {"created_at": utc_now(), "updated_at": utc_now(), "creator": None}
    return answer(data, 201, {"location": url})


async def list_statuses(call: Call) -> Response:
    """GET /repos/{o}/{r}/commits/{ref}/statuses: newest first."""
    sha = call.repo.resolve(call.params["ref"])
    with call.state.locked():
        history = list(call.repo.statuses.get(sha or "", []))
    data = [{"id": s.id, "state": s.state, "context": s.context, "description": s.description,
             "target_url": s.target_url} for s in reversed(history)]  # fmt: skip
    return answer(data)


# -- archive -------------------------------------------------------------------------------


async def tarball(call: Call) -> Response:
    """GET /repos/{o}/{r}/tarball/{ref}: 302 to codeload on another host name."""
    ref = call.params["ref"]
    if call.repo.resolve(ref) is None:
        return not_found()
    location = (
        f"{call.state.other_host_url}/github/codeload/{call.repo.name}/legacy.tar.gz/"
        f"{quote(ref, safe='/')}?token={call.state.codeload_token}"
    )
    return RedirectResponse(location, 302, {"content-type": "text/html;charset=utf-8"})


async def codeload(state: ForgeState, request: Request, path: str) -> Response:
    """GET codeload /{o}/{r}/legacy.tar.gz/{ref}?token=: the archive, no API token needed."""
    match = re.fullmatch(r"/([^/]+)/([^/]+)/legacy\.tar\.gz/(.+)", path)
    if match is None or request.method != "GET":
        return Response("Not Found", 404)
    repo = state.repo("github", f"{unquote(match[1])}/{unquote(match[2])}")
    sha = repo.resolve(unquote(match[3])) if repo else None
    if repo is None or sha is None or request.query_params.get("token") != state.codeload_token:
        return Response("Not Found", 404)
    owner, name = repo.name.split("/", 1)
    top = f"{owner}-{name}-{sha[:7]}"
    dest = state.workdir / "archives" / f"github-{owner}-{name}-{sha}.tar.gz"
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        await anyio.to_thread.run_sync(pack_profile, repo.commits[sha], dest, top, sha)
    disposition = f"attachment; filename={top}.tar.gz"
    return FileResponse(
        dest, media_type="application/x-gzip", headers={"content-disposition": disposition}
    )


# -- releases ------------------------------------------------------------------------------


def _page(call: Call, items: list[object]) -> list[object]:
    """The `per_page`/`page` slice of a list, as GitHub paginates (30 per page by default)."""
    params = call.request.query_params
    per_page = min(int(params.get("per_page") or 30), 100)
    page = max(int(params.get("page") or 1), 1)
    return items[(page - 1) * per_page : page * per_page]


async def list_releases(call: Call) -> Response:
    """GET /repos/{o}/{r}/releases: newest first, drafts included (the token can push)."""
    with call.state.locked():
        releases = [_release_json(call, r) for r in reversed(call.repo.releases)]
        return answer(_page(call, list(releases)))


async def release_by_tag(call: Call) -> Response:
    """GET /repos/{o}/{r}/releases/tags/{tag}: published releases only (§6.1)."""
    with call.state.locked():
        for release in call.repo.releases:
            if release.tag_name == call.params["tag"] and not release.draft:
                return answer(_release_json(call, release))
    return not_found()


def _published(repo: Repo, tag: str, *, besides: int | None = None) -> bool:
    return any(r.tag_name == tag and not r.draft and r.id != besides for r in repo.releases)


async def create_release(call: Call) -> Response:
    """POST /repos/{o}/{r}/releases: 422 already_exists if the tag has a published release.

    Drafts do not hold their tag until published, so GitHub lets several drafts share
    one (forge-apis.md §9.13; what a blind retry of a create makes).
    """
    body = call.body if isinstance(call.body, dict) else {}
    tag = body.get("tag_name")
    if not isinstance(tag, str) or not tag:
        return invalid("Release", "tag_name", "missing_field")
    with call.state.locked():
        if _published(call.repo, tag):
            return invalid("Release", "tag_name", "already_exists")
        draft = bool(body.get("draft", False))
        release = Release(
            id=call.state.next_id(),
            tag_name=tag,
            name=body.get("name") if isinstance(body.get("name"), str) else None,
            body=body.get("body") if isinstance(body.get("body"), str) else None,
            target_commitish=str(body.get("target_commitish") or "main"),
            draft=draft,
            prerelease=bool(body.get("prerelease", False)),
            created_at=utc_now(),
            published_at=None if draft else utc_now(),
        )
        call.repo.releases.append(release)
        return answer(_release_json(call, release), 201)


async def get_release(call: Call) -> Response:
    """GET /repos/{o}/{r}/releases/{id}."""
    with call.state.locked():
        release = _find_release(call)
        return not_found() if release is None else answer(_release_json(call, release))


async def update_release(call: Call) -> Response:
    """PATCH /repos/{o}/{r}/releases/{id}: `draft: false` publishes."""
    body = call.body if isinstance(call.body, dict) else {}
    with call.state.locked():
        release = _find_release(call)
        if release is None:
            return not_found()
        for key in ("tag_name", "name", "body", "target_commitish"):
            if isinstance(body.get(key), str):
                setattr(release, key, body[key])
        if isinstance(body.get("prerelease"), bool):
            release.prerelease = body["prerelease"]
        if body.get("draft") is False and release.draft:
            if _published(call.repo, release.tag_name, besides=release.id):
                return invalid("Release", "tag_name", "already_exists")
            release.draft, release.published_at = False, utc_now()
        elif body.get("draft") is True:
            release.draft = True
        return answer(_release_json(call, release))


async def delete_release(call: Call) -> Response:
    """DELETE /repos/{o}/{r}/releases/{id}: the release and its assets go."""
    with call.state.locked():
        release = _find_release(call)
        if release is None:
            return not_found()
        call.repo.releases.remove(release)
    for asset in release.assets:
        asset.path.unlink(missing_ok=True)
    return answer(None, 204)


async def list_assets(call: Call) -> Response:
    """GET /repos/{o}/{r}/releases/{id}/assets: oldest first, paginated."""
    with call.state.locked():
        release = _find_release(call)
        if release is None:
            return not_found()
        return answer(_page(call, [_asset_json(call, release, a) for a in release.assets]))


def _find_asset(call: Call) -> tuple[Release, StoredFile] | None:
    wanted = int(call.params["asset_id"])
    for release in call.repo.releases:
        for asset in release.assets:
            if asset.id == wanted:
                return release, asset
    return None


async def get_asset(call: Call) -> Response:
    """GET /repos/{o}/{r}/releases/assets/{asset_id}."""
    with call.state.locked():
        found = _find_asset(call)
        return not_found() if found is None else answer(_asset_json(call, *found))


async def delete_asset(call: Call) -> Response:
    """DELETE /repos/{o}/{r}/releases/assets/{asset_id}: 204, and the stored file goes."""
    with call.state.locked():
        found = _find_asset(call)
        if found is None:
            return not_found()
        release, asset = found
        release.assets.remove(asset)
    asset.path.unlink(missing_ok=True)
    return answer(None, 204)


def _upload_refusal(request: Request, max_size: int) -> Response | None:
    """Return the answer to an upload whose headers GitHub refuses, else None."""
    length = request.headers.get("content-length", "")
    if not request.query_params.get("name"):
        return invalid("ReleaseAsset", "name", "missing_field")
    if not length.isdigit():
        return answer({"message": "Bad Content-Length", "documentation_url": DOCS}, 400)
    if "content-type" not in request.headers:
        # forge-apis.md §6.1: Content-Type is required; the exact message is not recorded.
        message = "Content-Type header is required"
        return answer({"message": message, "documentation_url": DOCS}, 400)
    if int(length) > max_size:
        return invalid("ReleaseAsset", "size", "custom", "size is not included in the list")
    return None


async def upload_asset(call: Call) -> Response:
    """POST uploads /repos/{o}/{r}/releases/{id}/assets?name=: body streamed to disk."""
    request, state = call.request, call.state
    refusal = _upload_refusal(request, state.max_asset_size)
    with state.locked():
        release = _find_release(call)
        if refusal is not None or release is None:
            return refusal or not_found()
        name = request.query_params["name"]
        length = int(request.headers["content-length"])
        duplicate = any(a.name == name for a in release.assets)
        asset_id = state.next_id()
        asset = StoredFile(
            id=asset_id,
            name=name,
            path=state.workdir / "github" / f"{asset_id}-{name}",
            size=0,
            sha256="",
            content_type=request.headers["content-type"],
            label=request.query_params.get("label"),
            state="open",
        )
        if not duplicate:
            release.assets.append(asset)
    asset.path.parent.mkdir(parents=True, exist_ok=True)
    if duplicate:
        # Read the body before refusing, so the client sees the 422 and not a reset.
        async for _ in request.stream():
            pass
        return invalid("ReleaseAsset", "name", "already_exists")
    try:
        size, digest = await stream_to_file(request.stream(), asset.path)
    except ClientDisconnect:
        # The client went away mid-body: leave a partial "open" asset, as GitHub can.
        with state.locked():
            asset.size = asset.path.stat().st_size
        return Response(status_code=CLIENT_CLOSED)
    with state.locked():
        asset.size, asset.sha256 = size, digest
        asset.state = "uploaded" if size == length else "open"
        return answer(_asset_json(call, release, asset), 201)


# -- GitHub App authentication (forge-apis.md §4.1) ----------------------------------------


def _b64decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def jwt_problem(app: App, jwt: str, now: float) -> str | None:
    """Return why GitHub would refuse `jwt` for `app`, or None when it is valid."""
    try:
        head, claims_part, signature = jwt.split(".")
        header, claims = json.loads(_b64decode(head)), json.loads(_b64decode(claims_part))
        key = serialization.load_pem_public_key(app.public_key_pem)
        if not isinstance(key, rsa.RSAPublicKey) or header.get("alg") != "RS256":
            return "the JWT must be signed with RS256"
        signed = f"{head}.{claims_part}".encode()
        key.verify(_b64decode(signature), signed, padding.PKCS1v15(), hashes.SHA256())
    except (ValueError, InvalidSignature) as exc:
        return f"A JSON web token could not be decoded ({type(exc).__name__})"
    exp, iat = claims.get("exp"), claims.get("iat")
    if not isinstance(exp, int) or not isinstance(iat, int):
        return "'exp' and 'iat' claims must be integers"
    checks = (
        (str(claims.get("iss")) in app.issuers, "'Issuer' claim ('iss') must be the app's ID"),
        (exp > now, "'Expiration time' claim ('exp') must be a numeric value in the future"),
        (exp <= now + 600, "'Expiration time' claim ('exp') is too far in the future"),
        (iat <= now + 60, "'Issued at' claim ('iat') must be a time in the past"),
    )
    return next((message for ok, message in checks if not ok), None)


def _jwt_refusal(request: Request, app: App) -> Response | None:
    scheme, _, jwt = request.headers.get("authorization", "").partition(" ")
    problem = "JWTs must use the Bearer scheme" if scheme.lower() != "bearer" else None
    problem = problem or jwt_problem(app, jwt, time.time())
    return None if problem is None else answer({"message": problem, "documentation_url": DOCS}, 401)


async def app_dispatch(state: ForgeState, request: Request, path: str) -> Response | None:
    """Answer the two GitHub App calls, or return None for any other path."""
    installation = re.fullmatch(r"/repos/([^/]+)/([^/]+)/installation", path)
    if installation and request.method == "GET":
        full_name = f"{unquote(installation[1])}/{unquote(installation[2])}".lower()
        app = next((a for a in state.apps.values() if full_name in a.repos), None)
        if app is None:
            return not_found()
        data = {"id": app.installation_id, "account": {"login": unquote(installation[1])}}
        return _jwt_refusal(request, app) or answer(data)
    token = re.fullmatch(r"/app/installations/(\d+)/access_tokens", path)
    if not token or request.method != "POST":
        return None
    app = state.apps.get(int(token[1]))
    if app is None:
        return not_found()
    refusal = _jwt_refusal(request, app)
    if refusal is not None:
        return refusal
    minted = f"ghs_{secrets.token_urlsafe(27)}"
    with state.locked():
        app.minted.append(minted)
        for name in app.repos:
            repo = state.repo("github", name)
            if repo is not None:
                repo.app_tokens.add(minted)
    expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
    data = {"token": minted, "expires_at": expires, "repository_selection": "selected"}
    return answer(data | {"permissions": {"contents": "write", "statuses": "write"}}, 201)


# Stands for a request body that is not JSON.
_BAD_JSON = object()
_NAME = r"(?P<owner>[^/]+)/(?P<repo>[^/]+)"
_ROUTES: tuple[tuple[str, str, re.Pattern[str], Handler], ...] = tuple(
    (area, method, re.compile(f"/repos/{_NAME}{tail}"), handler)
    for area, method, tail, handler in (
        ("api", "POST", r"/statuses/(?P<sha>.+)", create_status),
        ("api", "GET", r"/commits/(?P<ref>.+)/statuses", list_statuses),
        ("api", "GET", r"/tarball/(?P<ref>.+)", tarball),
        ("api", "GET", r"/releases", list_releases),
        ("api", "POST", r"/releases", create_release),
        ("api", "GET", r"/releases/tags/(?P<tag>.+)", release_by_tag),
        ("api", "GET", r"/releases/(?P<release_id>\d+)", get_release),
        ("api", "PATCH", r"/releases/(?P<release_id>\d+)", update_release),
        ("api", "DELETE", r"/releases/(?P<release_id>\d+)", delete_release),
        ("api", "GET", r"/releases/(?P<release_id>\d+)/assets", list_assets),
        ("api", "GET", r"/releases/assets/(?P<asset_id>\d+)", get_asset),
        ("api", "DELETE", r"/releases/assets/(?P<asset_id>\d+)", delete_asset),
        ("uploads", "POST", r"/releases/(?P<release_id>\d+)/assets", upload_asset),
    )
)


def _authorised(request: Request, repo: Repo) -> bool:
    # GitHub takes both schemes; JWTs must use Bearer (forge-apis.md §4.1).
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    known = token == repo.token or token in repo.app_tokens
    return scheme.lower() in ("bearer", "token") and known


async def dispatch(
    state: ForgeState, check: OpenApiCheck, request: Request, area: GitHubArea, path: str
) -> Response:
    """Answer one request below `/github/{area}`; `path` is still percent-encoded."""
    if area == "codeload":
        return await codeload(state, request, path)
    body: object | None = None
    if request.method in ("POST", "PATCH", "PUT") and area == "api":
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = _BAD_JSON
    decoded = unquote(path)
    query = dict(request.query_params)
    for problem in check.check(request.method, area, decoded, query, body):
        state.violate(problem)
    version = request.headers.get("x-github-api-version")
    if body is _BAD_JSON or (version is not None and version not in API_VERSIONS):
        message = (
            "Problems parsing JSON"
            if body is _BAD_JSON
            else f"API version {version!r} is not supported."
        )
        return answer({"message": message, "documentation_url": DOCS}, 400)
    app_answer = await app_dispatch(state, request, path) if area == "api" else None
    return app_answer or await _route(state, request, area, path, body)


async def _route(
    state: ForgeState, request: Request, area: GitHubArea, path: str, body: object | None
) -> Response:
    """Find the handler for a repository path, check the token and call it."""
    for route_area, method, pattern, handler in _ROUTES:
        match = pattern.fullmatch(path)
        if route_area != area or method != request.method or match is None:
            continue
        params = {key: unquote(value) for key, value in match.groupdict().items()}
        repo = state.repo("github", f"{params['owner']}/{params['repo']}")
        if repo is None:
            return not_found()
        if not _authorised(request, repo):
            return answer({"message": "Bad credentials", "documentation_url": DOCS}, 401)
        return await handler(Call(state, request, repo, params, body))
    return not_found()

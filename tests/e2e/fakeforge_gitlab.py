"""The GitLab side of the fake forge: statuses, archives, generic packages, releases.

I/O shell around one pure piece, `transition` (GitLab's commit-status state machine).
`dispatch` routes on the raw path below `/gitlab/api/v4`, because `:id` is a project
path encoded once (`group%2Fproj`): a raw `/` or a double encoding finds nothing, as on
GitLab (forge-apis.md §9.16). Behaviour follows forge-apis.md §3.3, §5.2 and §6.2.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from urllib.parse import quote, unquote

import anyio
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, Response

from tests.e2e.fakeforge_state import (
    AssetLink,
    ForgeState,
    Release,
    Repo,
    StatusRecord,
    StoredFile,
    pack_profile,
    stream_to_file,
    utc_now,
)

STATES = ("pending", "running", "success", "failed", "canceled", "skipped")
LINK_TYPES = ("other", "runbook", "image", "package")
MAX_FIELD = 255
PACKAGE_NAME = re.compile(r"[A-Za-z0-9._-]+")
# GitLab's `\A(\.?[\w\+-]+\.?)+\z` (ASCII \w), rewritten so that it cannot backtrack:
# runs of word characters separated by one or two dots, one more dot allowed at each end.
PACKAGE_VERSION = re.compile(r"\.?[\w+-]+(?:\.{1,2}[\w+-]+)*\.?", re.ASCII)
CLIENT_CLOSED = 499

# GitLab's CommitStatus state machine, the part an external status can reach: for each
# event, the states it may leave and the state it enters.
EVENTS: Mapping[str, tuple[frozenset[str], str]] = {
    "enqueue": (frozenset({"created", "skipped", "manual", "scheduled"}), "pending"),
    "run": (frozenset({"pending"}), "running"),
    "success": (frozenset({"created", "pending", "running"}), "success"),
    "drop": (frozenset({"created", "pending", "running", "manual", "scheduled"}), "failed"),
    "cancel": (frozenset({"created", "pending", "running", "manual", "scheduled"}), "canceled"),
    "skip": (frozenset({"created", "pending"}), "skipped"),
}
# What Ci::CreateCommitStatusService fires per requested state; `True` is the `!`
# form that raises on an illegal transition, `False` the form that quietly does nothing.
STATE_EVENTS: Mapping[str, tuple[tuple[str, bool], ...]] = {
    "pending": (("enqueue", True),),
    "running": (("enqueue", False), ("run", True)),
    "success": (("success", True),),
    "failed": (("drop", True),),
    "canceled": (("cancel", True),),
    "skipped": (("skip", True),),
}


class IllegalTransition(Exception):
    """GitLab refuses the requested state from the current one."""


def transition(current: str, requested: str) -> str:
    """Apply the events GitLab fires for `requested` to a status in state `current`.

    Raises:
        IllegalTransition: with GitLab's own message, e.g.
            "Cannot transition status via :run from :running".
    """
    state = current
    for event, bang in STATE_EVENTS[requested]:
        sources, target = EVENTS[event]
        if state in sources:
            state = target
        elif bang:
            raise IllegalTransition(f"Cannot transition status via :{event} from :{state}")
    return state


@dataclass(frozen=True, slots=True)
class Call:
    """What a handler gets: the shared state, the request, its project and parameters."""

    state: ForgeState
    request: Request
    repo: Repo
    params: Mapping[str, str]
    body: Mapping[str, object]


Handler = Callable[[Call], Awaitable[Response]]


def answer(data: object, status: int = 200) -> Response:
    """Return a JSON answer."""
    return JSONResponse(data, status)


def _str(body: Mapping[str, object], key: str) -> str | None:
    value = body.get(key)
    return value if isinstance(value, str) else None


async def create_status(call: Call) -> Response:
    """POST /projects/:id/statuses/:sha with GitLab's state machine."""
    body, sha, repo = call.body, call.params["sha"], call.repo
    state = body.get("state")
    if state not in STATES:
        return answer({"error": "state does not have a valid value"}, 400)
    for key in ("description", "target_url", "ref"):
        if len(_str(body, key) or "") > MAX_FIELD:
            return answer(
                {"message": {key: [f"is too long (maximum is {MAX_FIELD} characters)"]}}, 400
            )
    if sha not in repo.commits:
        return answer({"message": "404 Commit Not Found"}, 404)
    ref = _str(body, "ref") or next((r for r, s in repo.refs.items() if s == sha), None)
    if ref is None:
        return answer({"message": "404 References for commit Not Found"}, 404)
    name = _str(body, "name") or _str(body, "context") or "default"
    with call.state.locked():
        history = repo.statuses.setdefault(sha, [])
        same = [s for s in history if s.ref == ref and s.context == name]
        # Only a running or pending status is reused; after a final one a new job starts.
        current = same[-1].state if same and same[-1].state in ("pending", "running") else "created"
        try:
            new_state = transition(current, str(state))
        except IllegalTransition as exc:
            return answer({"message": str(exc)}, 400)
        record = StatusRecord(
            id=same[-1].id if current != "created" else call.state.next_id(),
            state=new_state,
            context=name,
            description=_str(body, "description"),
            target_url=_str(body, "target_url"),
            ref=ref,
        )
        history.append(record)
    data = {"id": record.id, "sha": sha, "ref": ref, "status": record.state, "name": name}
    data |= {"target_url": record.target_url, "description": record.description}
    data |= {"created_at": utc_now(), "allow_failure": False, "coverage": None}
    return answer(data, 201)


async def archive(call: Call) -> Response:
    """GET /projects/:id/repository/archive[.tar.gz]?sha=: top dir `{project}-{ref}-{sha}`."""
    repo = call.repo
    ref = call.request.query_params.get("sha") or "main"
    sha = repo.resolve(ref)
    if sha is None:
        return answer({"message": "404 File Not Found"}, 404)
    project = repo.name.rsplit("/", 1)[-1]
    top = f"{project}-{ref.replace('/', '-')}-{sha}"
    dest = call.state.workdir / "archives" / f"gitlab-{repo.name.replace('/', '-')}-{top}.tar.gz"
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        await anyio.to_thread.run_sync(pack_profile, repo.commits[sha], dest, top, sha)
    disposition = f'attachment; filename="{top}.tar.gz"'
    return FileResponse(
        dest, media_type="application/octet-stream", headers={"content-disposition": disposition}
    )


async def upload_package(call: Call) -> Response:
    """PUT /projects/:id/packages/generic/:name/:version/:file: body streamed to disk."""
    state, params = call.state, call.params
    if not PACKAGE_NAME.fullmatch(params["package"]):
        return answer({"error": "package_name is invalid"}, 400)
    if not PACKAGE_VERSION.fullmatch(params["version"]):
        return answer({"error": "package_version is invalid"}, 400)
    if not PACKAGE_NAME.fullmatch(params["file"]):
        return answer({"error": "file_name is invalid"}, 400)
    file_id = state.next_id()
    path = state.workdir / "gitlab" / f"{file_id}-{params['file']}"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        size, digest = await stream_to_file(call.request.stream(), path)
    except ClientDisconnect:
        # GitLab keeps nothing of a body that never finished arriving.
        path.unlink(missing_ok=True)
        return Response(status_code=CLIENT_CLOSED)
    stored = StoredFile(
        id=file_id,
        name=params["file"],
        path=path,
        size=size,
        sha256=digest,
        package=params["package"],
        version=params["version"],
    )
    key = (params["package"], params["version"])
    with state.locked():
        # Same name and version: the file joins the package, even beside one of its name.
        package_id = call.repo.package_ids.setdefault(key, state.next_id())
        call.repo.packages.append(stored)
    if call.request.query_params.get("select") != "package_file":
        return answer({"message": "201 Created"}, 201)
    return answer(_file_json(stored, package_id), 201)


def _file_json(stored: StoredFile, package_id: int) -> dict[str, object]:
    return {"id": stored.id, "package_id": package_id, "file_name": stored.name,
            "size": stored.size, "file_sha256": stored.sha256, "created_at": utc_now()}  # fmt: skip


def _page(call: Call, items: list[object]) -> list[object]:
    """The `per_page`/`page` slice of a list, as GitLab paginates (20 per page by default)."""
    params = call.request.query_params
    per_page = min(int(params.get("per_page") or 20), 100)
    page = max(int(params.get("page") or 1), 1)
    return items[(page - 1) * per_page : page * per_page]


async def list_packages(call: Call) -> Response:
    """GET /projects/:id/packages: `package_name` fuzzy, `package_version` exact (16.6+)."""
    query = call.request.query_params
    wanted_type = query.get("package_type")
    name_part, version = query.get("package_name", ""), query.get("package_version")
    with call.state.locked():
        found: list[object] = [
            {
                "id": package_id,
                "name": name,
                "version": ver,
                "package_type": "generic",
                "status": "default",
                "created_at": utc_now(),
            }
            for (name, ver), package_id in call.repo.package_ids.items()
            if name_part in name
            and (version is None or version == ver)
            and wanted_type in (None, "generic")
        ]
    return answer(_page(call, found))


def _package_key(call: Call) -> tuple[str, str] | None:
    wanted = int(call.params["package_id"])
    return next((k for k, v in call.repo.package_ids.items() if v == wanted), None)


async def list_package_files(call: Call) -> Response:
    """GET /projects/:id/packages/:package_id/package_files: oldest first, paginated."""
    with call.state.locked():
        key = _package_key(call)
        if key is None:
            return answer({"message": "404 Package Not Found"}, 404)
        package_id = call.repo.package_ids[key]
        files = [
            _file_json(f, package_id) for f in call.repo.packages if (f.package, f.version) == key
        ]
    return answer(_page(call, list(files)))


async def delete_package_file(call: Call) -> Response:
    """DELETE /projects/:id/packages/:package_id/package_files/:file_id: 204."""
    with call.state.locked():
        key = _package_key(call)
        wanted = int(call.params["file_id"])
        found = next(
            (f for f in call.repo.packages if f.id == wanted and (f.package, f.version) == key),
            None,
        )
        if found is None:
            return answer({"message": "404 Not found"}, 404)
        call.repo.packages.remove(found)
    found.path.unlink(missing_ok=True)
    return Response(status_code=204)


def _link_json(link: AssetLink) -> dict[str, object]:
    return {"id": link.id, "name": link.name, "url": link.url, "link_type": link.link_type,
            "direct_asset_url": link.url}  # fmt: skip


def _release_json(call: Call, release: Release) -> dict[str, object]:
    # GitLab's release answers carry the release page as `_links.self` (the client
    # reports it as the published release's URL).
    page = f"{call.state.base_url}/gitlab/{call.repo.name}/-/releases/{quote(release.tag_name)}"
    return {
        "tag_name": release.tag_name,
        "name": release.name,
        "description": release.body,
        "created_at": release.created_at,
        "released_at": release.published_at,
        "upcoming_release": False,
        "commit": {"id": release.target_commitish},
        "assets": {"count": len(release.links), "sources": [],
                   "links": [_link_json(link) for link in release.links]},
        "_links": {"self": page, "edit_url": f"{page}/edit"},
    }  # fmt: skip


def _find_release(call: Call) -> Release | None:
    return next((r for r in call.repo.releases if r.tag_name == call.params["tag"]), None)


def _add_link(call: Call, release: Release, spec: Mapping[str, object]) -> Response | AssetLink:
    name, url = _str(spec, "name"), _str(spec, "url")
    link_type = _str(spec, "link_type") or "other"
    if not name or not url:
        return answer({"error": "name, url are missing"}, 400)
    if link_type not in LINK_TYPES:
        return answer({"error": "link_type does not have a valid value"}, 400)
    for key, value in (("name", name), ("url", url)):
        if any(getattr(link, key) == value for link in release.links):
            return answer({"message": {key: ["has already been taken"]}}, 400)
    path = _str(spec, "direct_asset_path") or _str(spec, "filepath")
    link = AssetLink(call.state.next_id(), name, url, path, link_type)
    release.links.append(link)
    return link


async def list_releases(call: Call) -> Response:
    """GET /projects/:id/releases: newest first."""
    with call.state.locked():
        return answer([_release_json(call, r) for r in reversed(call.repo.releases)])


async def create_release(call: Call) -> Response:
    """POST /projects/:id/releases: 409 when the tag already has a release."""
    body, repo = call.body, call.repo
    tag = _str(body, "tag_name")
    if not tag:
        return answer({"error": "tag_name is missing"}, 400)
    with call.state.locked():
        if any(r.tag_name == tag for r in repo.releases):
            return answer({"message": "Release already exists"}, 409)
        ref = _str(body, "ref")
        sha = repo.refs.get(tag) or (repo.resolve(ref) if ref else None)
        if sha is None:
            return answer({"message": "Ref is not specified"}, 422)
        repo.refs.setdefault(tag, sha)
        release = Release(
            id=call.state.next_id(),
            tag_name=tag,
            name=_str(body, "name") or tag,
            body=_str(body, "description"),
            target_commitish=sha,
            created_at=utc_now(),
            published_at=_str(body, "released_at") or utc_now(),
        )
        assets = body.get("assets")
        links = assets.get("links", []) if isinstance(assets, dict) else []
        for spec in links if isinstance(links, list) else []:
            added = _add_link(call, release, spec if isinstance(spec, dict) else {})
            if isinstance(added, Response):
                return added
        repo.releases.append(release)
        return answer(_release_json(call, release), 201)


async def get_release(call: Call) -> Response:
    """GET /projects/:id/releases/:tag."""
    with call.state.locked():
        release = _find_release(call)
        return (
            answer({"message": "404 Not Found"}, 404)
            if release is None
            else answer(_release_json(call, release))
        )


async def update_release(call: Call) -> Response:
    """PUT /projects/:id/releases/:tag: name, description, released_at."""
    with call.state.locked():
        release = _find_release(call)
        if release is None:
            return answer({"message": "404 Not Found"}, 404)
        release.name = _str(call.body, "name") or release.name
        release.body = _str(call.body, "description") or release.body
        release.published_at = _str(call.body, "released_at") or release.published_at
        return answer(_release_json(call, release))


async def list_links(call: Call) -> Response:
    """GET /projects/:id/releases/:tag/assets/links."""
    with call.state.locked():
        release = _find_release(call)
        if release is None:
            return answer({"message": "404 Not Found"}, 404)
        return answer([_link_json(link) for link in release.links])


async def delete_release(call: Call) -> Response:
    """DELETE /projects/:id/releases/:tag: the release goes (the tag and packages stay)."""
    with call.state.locked():
        release = _find_release(call)
        if release is None:
            return answer({"message": "404 Not Found"}, 404)
        call.repo.releases.remove(release)
        return answer(_release_json(call, release))


async def update_link(call: Call) -> Response:
    """PUT /projects/:id/releases/:tag/assets/links/:link_id: name, url, type."""
    with call.state.locked():
        release = _find_release(call)
        wanted = int(call.params["link_id"])
        link = next((x for x in release.links if x.id == wanted), None) if release else None
        if link is None:
            return answer({"message": "404 Not Found"}, 404)
        link.name = _str(call.body, "name") or link.name
        link.url = _str(call.body, "url") or link.url
        link.link_type = _str(call.body, "link_type") or link.link_type
        return answer(_link_json(link))


async def create_link(call: Call) -> Response:
    """POST /projects/:id/releases/:tag/assets/links: name and url unique per release."""
    with call.state.locked():
        release = _find_release(call)
        if release is None:
            return answer({"message": "404 Not Found"}, 404)
        added = _add_link(call, release, call.body)
        return added if isinstance(added, Response) else answer(_link_json(added), 201)


_ID = r"/projects/(?P<id>[^/]+)"
_ROUTES: tuple[tuple[str, re.Pattern[str], Handler], ...] = tuple(
    (method, re.compile(_ID + tail), handler)
    for method, tail, handler in (
        ("POST", r"/statuses/(?P<sha>[^/]+)", create_status),
        ("GET", r"/repository/archive(?:\.tar\.gz)?", archive),
        (
            "PUT",
            r"/packages/generic/(?P<package>[^/]+)/(?P<version>[^/]+)/(?P<file>[^/]+)",
            upload_package,
        ),
        ("GET", r"/packages", list_packages),
        ("GET", r"/packages/(?P<package_id>\d+)/package_files", list_package_files),
        (
            "DELETE",
            r"/packages/(?P<package_id>\d+)/package_files/(?P<file_id>\d+)",
            delete_package_file,
        ),
        ("GET", r"/releases", list_releases),
        ("POST", r"/releases", create_release),
        ("GET", r"/releases/(?P<tag>[^/]+)", get_release),
        ("PUT", r"/releases/(?P<tag>[^/]+)", update_release),
        ("DELETE", r"/releases/(?P<tag>[^/]+)", delete_release),
        ("GET", r"/releases/(?P<tag>[^/]+)/assets/links", list_links),
        ("POST", r"/releases/(?P<tag>[^/]+)/assets/links", create_link),
        ("PUT", r"/releases/(?P<tag>[^/]+)/assets/links/(?P<link_id>\d+)", update_link),
    )
)


async def _parameters(request: Request) -> Mapping[str, object] | Response:
    # GitLab takes parameters from the query string, a JSON body or a form body.
    params: dict[str, object] = dict(request.query_params)
    content_type = request.headers.get("content-type", "")
    if request.method in ("POST", "PUT") and "json" in content_type:
        try:
            data = json.loads(await request.body() or b"{}")
        except ValueError:
            return answer({"message": "400 Bad request - invalid JSON"}, 400)
        if isinstance(data, dict):
            params |= data
    elif request.method in ("POST", "PUT") and "form-urlencoded" in content_type:
        params |= {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
    return params


async def dispatch(state: ForgeState, request: Request, path: str) -> Response:
    """Answer one request below `/gitlab/api/v4`; `path` is still percent-encoded."""
    for method, pattern, handler in _ROUTES:
        match = pattern.fullmatch(path)
        if method != request.method or match is None:
            continue
        params = {key: unquote(value) for key, value in match.groupdict().items()}
        repo = state.repo("gitlab", params["id"])
        if repo is None:
            return answer({"message": "404 Project Not Found"}, 404)
        if request.headers.get("private-token") != repo.token:
            return answer({"message": "401 Unauthorized"}, 401)
        # A package body is the file itself: never read it here.
        body: Mapping[str, object] | Response = {}
        if handler is not upload_package:
            body = await _parameters(request)
        if isinstance(body, Response):
            return body
        return await handler(Call(state, request, repo, params, body))
    return answer({"error": "404 Not Found"}, 404)

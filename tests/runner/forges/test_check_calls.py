"""Tests for the read-only calls `isorunner check` makes: builders and decoders.

`github.build_get_repo`/`build_rate_limit` and `gitlab.build_get_project` are sent
through the real `ForgeTransport` over `httpx.MockTransport` into a respx router. The
trimmed GitHub OpenAPI copy lacks these two operations, so these requests are not
validated against it (the shapes follow GitHub's `repos/get` and `rate-limit/get`).
"""

from __future__ import annotations

import httpx
import pytest
import respx

from runner.forges import github, gitlab
from runner.forges.client import ForgeTransport
from runner.forges.exceptions import MalformedResponse, NotFound, Unauthorized
from tests.runner.forges.conftest import GITHUB_API, GITLAB_API, FakeClock

pytestmark = pytest.mark.anyio

TOKEN = "ghp_check-test-token"
GL_TOKEN = "glpat-check-test-token"


@pytest.fixture
def plain(router: respx.Router, clock: FakeClock) -> ForgeTransport:
    """A transport answered by `router`, without the OpenAPI check."""
    http = httpx.AsyncClient(transport=httpx.MockTransport(router.async_handler))
    return ForgeTransport(http, sleep=clock.sleep, clock=clock)


def test_build_get_repo_is_a_get_of_the_repository_with_the_house_headers() -> None:
    """`GET /repos/{owner}/{repo}` with each part encoded, Bearer token, pinned version."""
    request = github.build_get_repo(GITHUB_API + "/", TOKEN, "octo/arch live")
    assert request.method == "GET"
    assert request.url == f"{GITHUB_API}/repos/octo/arch%20live"
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert request.headers["X-GitHub-Api-Version"] == github.API_VERSION
    assert TOKEN not in repr(request)


def test_build_get_project_encodes_the_path_once() -> None:
    """`GET /projects/:id` with `group%2Fproject` and the PRIVATE-TOKEN header."""
    request = gitlab.build_get_project(GITLAB_API, GL_TOKEN, "group/sub/proj")
    assert request.method == "GET"
    assert request.url == f"{GITLAB_API}/projects/group%2Fsub%2Fproj"
    assert request.headers["PRIVATE-TOKEN"] == GL_TOKEN


async def test_decode_repo_reads_name_and_permissions(
    router: respx.Router, plain: ForgeTransport
) -> None:
    """A user token's answer carries the repository's name and what the token may do."""
    router.get(f"{GITHUB_API}/repos/octo/archlive").respond(
        200,
        json={
            "id": 1,
            "full_name": "octo/archlive",
            "private": True,
            "permissions": {"admin": False, "maintain": False, "push": True, "pull": True},
        },
    )
    response = await plain.send(github.build_get_repo(GITHUB_API, TOKEN, "octo/archlive"))
    repo = github.decode_repo(response)
    assert repo.full_name == "octo/archlive"
    assert repo.permissions is not None
    assert repo.permissions.push


async def test_decode_repo_without_permissions_is_accepted(
    router: respx.Router, plain: ForgeTransport
) -> None:
    """An installation token's answer has no `permissions`; that is not an error."""
    router.get(f"{GITHUB_API}/repos/octo/archlive").respond(
        200, json={"full_name": "octo/archlive"}
    )
    response = await plain.send(github.build_get_repo(GITHUB_API, TOKEN, "octo/archlive"))
    assert github.decode_repo(response).permissions is None


async def test_decode_repo_maps_404_and_401_to_forge_errors(
    router: respx.Router, plain: ForgeTransport
) -> None:
    """A repository the token cannot see is NotFound; a bad token is Unauthorized."""
    router.get(f"{GITHUB_API}/repos/octo/secret").respond(404, json={"message": "Not Found"})
    router.get(f"{GITHUB_API}/repos/octo/other").respond(401, json={"message": "Bad credentials"})
    response = await plain.send(github.build_get_repo(GITHUB_API, TOKEN, "octo/secret"))
    with pytest.raises(NotFound, match="token can see the repository"):
        github.decode_repo(response)
    response = await plain.send(github.build_get_repo(GITHUB_API, TOKEN, "octo/other"))
    with pytest.raises(Unauthorized) as caught:
        github.decode_repo(response)
    assert TOKEN not in str(caught.value)


async def test_decode_rate_limit_reads_the_core_limit(
    router: respx.Router, plain: ForgeTransport
) -> None:
    """`GET /rate_limit` answers with `resources.core`; its numbers are read."""
    core = {"limit": 5000, "remaining": 4990, "reset": 1_700_000_000, "used": 10}
    router.get(f"{GITHUB_API}/rate_limit").respond(
        200, json={"resources": {"core": core}, "rate": core}
    )
    response = await plain.send(github.build_rate_limit(GITHUB_API, TOKEN))
    limit = github.decode_rate_limit(response)
    assert (limit.limit, limit.remaining) == (5000, 4990)


async def test_decode_rate_limit_refuses_an_answer_without_core(
    router: respx.Router, plain: ForgeTransport
) -> None:
    """A JSON answer without `resources.core` (a wrong base URL) is MalformedResponse."""
    router.get(f"{GITHUB_API}/rate_limit").respond(200, json={"hello": "world"})
    response = await plain.send(github.build_rate_limit(GITHUB_API, TOKEN))
    with pytest.raises(MalformedResponse, match=r"resources\.core"):
        github.decode_rate_limit(response)


@pytest.mark.parametrize(
    ("permissions", "level"),
    [
        ({"project_access": {"access_level": 40}, "group_access": None}, 40),
        ({"project_access": None, "group_access": {"access_level": 30}}, 30),
        ({"project_access": {"access_level": 20}, "group_access": {"access_level": 50}}, 50),
        ({"project_access": None, "group_access": None}, None),
        (None, None),
    ],
)
async def test_decode_project_reports_the_highest_access_level(
    router: respx.Router,
    plain: ForgeTransport,
    permissions: dict[str, object] | None,
    level: int | None,
) -> None:
    """The project's access level is the higher of direct and group membership."""
    body: dict[str, object] = {"id": 7, "path_with_namespace": "group/proj"}
    if permissions is not None:
        body["permissions"] = permissions
    router.get(f"{GITLAB_API}/projects/group%2Fproj").respond(200, json=body)
    response = await plain.send(gitlab.build_get_project(GITLAB_API, GL_TOKEN, "group/proj"))
    project = gitlab.decode_project(response)
    assert project.path_with_namespace == "group/proj"
    assert project.access_level == level


async def test_decode_project_maps_404(router: respx.Router, plain: ForgeTransport) -> None:
    """A project the token cannot see answers 404: NotFound, token not in the message."""
    router.get(f"{GITLAB_API}/projects/42").respond(404, json={"message": "404 Project Not Found"})
    response = await plain.send(gitlab.build_get_project(GITLAB_API, GL_TOKEN, 42))
    with pytest.raises(NotFound) as caught:
        gitlab.decode_project(response)
    assert GL_TOKEN not in str(caught.value)

"""Tests for `runner.forges.github_client.GitHubClient` over a mocked GitHub."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import respx

from runner.forges.client import ForgeTransport
from runner.forges.exceptions import Unauthorized
from runner.forges.github_client import GitHubClient
from runner.forges.protocol import CommitState, ForgeClient
from runner.forges.tokens import StaticToken
from tests.runner.forges.conftest import GITHUB_API
from tests.runner.forges.samples import sample

pytestmark = pytest.mark.anyio

TOKEN = "ghp_static-test-token"
REPO = "octo-org/profile"
SHA = "0123456789abcdef0123456789abcdef01234567"
API = f"{GITHUB_API}/repos/{REPO}"


@pytest.fixture
def client(transport: ForgeTransport) -> GitHubClient:
    """A GitHub client with a static token and the context `isorunner/build`."""
    return GitHubClient(transport, StaticToken(TOKEN), context="isorunner/build")


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

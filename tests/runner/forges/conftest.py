"""Fixtures for the forge client tests: a fake clock, a respx router, the transport.

Outbound HTTP goes through `httpx.MockTransport` into a `respx.Router` (no patching);
every request that reaches a GitHub API or upload host is first checked against
GitHub's OpenAPI description, and the router insists at teardown that every route it
was given was called.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import respx

from runner.forges.client import ForgeTransport
from tests.runner.forges.openapi import validate_github_request

GITHUB_API = "https://api.github.com"
GITHUB_UPLOADS = "https://uploads.github.com"
GITLAB_API = "https://gitlab.example.com/api/v4"
START = 1_700_000_000.0


class FakeClock:
    """A clock that only moves when the code under test sleeps; records the sleeps."""

    def __init__(self, start: float = START) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        """Record the wait and move time forward by it, without sleeping."""
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    """A fresh fake clock."""
    return FakeClock()


@pytest.fixture
def router() -> Iterator[respx.Router]:
    """A respx router whose routes must all have been called by the end of the test."""
    router = respx.Router(assert_all_mocked=True)
    yield router
    router.assert_all_called()


@pytest.fixture
def github_operations() -> list[str]:
    """The GitHub operation ids validated during the test, in order."""
    return []


@pytest.fixture
def http(router: respx.Router, github_operations: list[str]) -> httpx.AsyncClient:
    """An `httpx.AsyncClient` answered by `router`, validating GitHub requests."""
    github_hosts = {httpx.URL(GITHUB_API).host, httpx.URL(GITHUB_UPLOADS).host}

    async def handle(request: httpx.Request) -> httpx.Response:
        if request.url.host in github_hosts:
            github_operations.append(
                validate_github_request(
                    request.method,
                    str(request.url),
                    request.headers,
                    request.content,
                    bases=(GITHUB_API, GITHUB_UPLOADS),
                )
            )
        return await router.async_handler(request)

    return httpx.AsyncClient(transport=httpx.MockTransport(handle))


@pytest.fixture
def transport(http: httpx.AsyncClient, clock: FakeClock) -> ForgeTransport:
    """The transport under test, with the fake clock's sleep and time."""
    return ForgeTransport(http, sleep=clock.sleep, clock=clock)

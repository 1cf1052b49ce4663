"""Where the forge clients get their tokens: the `TokenProvider` seam and a static token.

Pure: no I/O here. A `TokenProvider` answers "which token for this repository?" each
time a client builds a request, so a GitHub App can hand out per-installation tokens
(`github_app.GitHubAppAuth`) while a personal or project token is just `StaticToken`.
"""

from __future__ import annotations

from typing import Protocol


class TokenProvider(Protocol):
    """Gives the token to use for a request concerning `repo`."""

    async def token_for(self, repo: str) -> str:
        """Return a token valid now for `repo` (`owner/name` or a GitLab project path)."""
        ...


class StaticToken:
    """One token for every repository (a PAT, or a GitLab project access token).

    Args:
        token: The token; kept out of `repr`.
    """

    __slots__ = ("_token",)

    def __init__(self, token: str) -> None:
        self._token = token

    def __repr__(self) -> str:
        return "StaticToken(<redacted>)"

    async def token_for(self, repo: str) -> str:
        """Return the token, whatever the repository."""
        return self._token

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

    async def forget(self, repo: str, token: str) -> bool:
        """Drop `token` after the forge refused it (401) for `repo`.

        Returns:
            True when the next `token_for(repo)` may give a different token, so a
            retry is worth it; False when it would give the same one.
        """
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

    async def forget(self, repo: str, token: str) -> bool:
        """Nothing to renew: a refused static token is the operator's to replace."""
        return False

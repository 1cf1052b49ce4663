"""GitHub App authentication: app JWTs, installation look-up, cached installation tokens.

Pure core and thin shell in one small module:

- pure: `app_jwt` (RS256 with `cryptography`; `iat` 60 s in the past for clock drift,
  `exp` 9 minutes ahead, under GitHub's 10-minute cap; `iss` = the app's client or app
  id, forge-apis.md §4.1), the builders `build_repo_installation`
  (`GET /repos/{o}/{r}/installation`) and `build_access_token`
  (`POST /app/installations/{id}/access_tokens`), and their decoders;
- I/O: `GitHubAppAuth`, a `TokenProvider` that sends those requests over a
  `ForgeTransport`, caches the installation of each repository and each installation's
  token, and mints a new token `refresh_margin` seconds (5 minutes) before the old one
  expires (installation tokens live one hour). Its clock is injectable.

Tokens are opaque: GitHub's new `ghs_`-style tokens are longer than 40 characters.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import anyio
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from pydantic import BaseModel, ConfigDict

from runner.forges import github
from runner.forges.client import ForgeTransport
from runner.forges.exceptions import NotFound
from runner.forges.request import ForgeRequest, ForgeResponse
from runner.forges.response import decode_model

#: How far `iat` is set in the past, against clock drift (GitHub's advice).
JWT_BACKDATE = 60
#: How far `exp` is set in the future; GitHub refuses more than 10 minutes.
JWT_LIFETIME = 9 * 60


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def app_jwt(app_id: str, private_key: rsa.RSAPrivateKey, *, now: float) -> str:
    """Return a JWT that authenticates as the GitHub App itself.

    Args:
        app_id: The app's client id (recommended by GitHub) or numeric app id.
        private_key: The app's RSA private key.
        now: The current Unix time.

    Returns:
        The compact JWT, signed RS256.
    """
    header = {"alg": "RS256", "typ": "JWT"}
    claims = {"iat": int(now) - JWT_BACKDATE, "exp": int(now) + JWT_LIFETIME, "iss": app_id}
    signing_input = ".".join(
        _b64url(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims)
    )
    signature = private_key.sign(signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{_b64url(signature)}"


def load_private_key(pem: bytes) -> rsa.RSAPrivateKey:
    """Load the app's PEM private key, refusing anything that is not RSA.

    Raises:
        ValueError: The data is not a PEM private key.
        TypeError: The key is not an RSA key.
    """
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise TypeError("a GitHub App private key is an RSA key (the .pem GitHub issued)")
    return key


def build_repo_installation(api_url: str, jwt: str, repo: str) -> ForgeRequest:
    """Build `GET /repos/{owner}/{repo}/installation`, authenticated with the app JWT."""
    owner, name = github.split_repo(repo)
    return ForgeRequest(
        "GET",
        f"{api_url.rstrip('/')}/repos/{owner}/{name}/installation",
        headers=github.headers(jwt),
        action=f"find the GitHub App installation for {repo}",
    )


def build_access_token(api_url: str, jwt: str, installation_id: int) -> ForgeRequest:
    """Build `POST /app/installations/{installation_id}/access_tokens`."""
    return ForgeRequest(
        "POST",
        f"{api_url.rstrip('/')}/app/installations/{installation_id}/access_tokens",
        headers=github.headers(jwt),
        action=f"create an access token for GitHub App installation {installation_id}",
    )


class _Installation(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")
    id: int


class _AccessToken(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")
    token: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class InstallationToken:
    """An installation access token and when it expires (Unix time).

    Attributes:
        token: The token; kept out of `repr`.
        expires_at: Its expiry.
    """

    token: str = field(repr=False)
    expires_at: float


_ADVICE = "check github.api_url and the GitHub App's installation"


def decode_installation(response: ForgeResponse) -> int:
    """Return the installation id from `GET /repos/{o}/{r}/installation`."""
    return decode_model(response, _Installation, advice=_ADVICE).id


def decode_access_token(response: ForgeResponse) -> InstallationToken:
    """Return the token and its expiry from `POST …/access_tokens`."""
    data = decode_model(response, _AccessToken, advice=_ADVICE)
    return InstallationToken(data.token, data.expires_at.timestamp())


class GitHubAppAuth:
    """A `TokenProvider` that authenticates as a GitHub App's installations.

    Args:
        transport: The shared transport.
        app_id: The app's client id or app id (the JWT's `iss`).
        private_key: The app's RSA private key (see `load_private_key`).
        api_url: The REST API base URL.
        clock: Current Unix time; defaults to the transport's clock.
        refresh_margin: Seconds before expiry at which a token is replaced.
    """

    def __init__(
        self,
        transport: ForgeTransport,
        *,
        app_id: str,
        private_key: rsa.RSAPrivateKey,
        api_url: str = "https://api.github.com",
        clock: Callable[[], float] | None = None,
        refresh_margin: float = 300.0,
    ) -> None:
        self._transport = transport
        self._app_id = app_id
        self._key = private_key
        self._api_url = api_url
        self._clock = clock or transport.clock
        self._margin = refresh_margin
        self._installations: dict[str, int] = {}
        self._tokens: dict[int, InstallationToken] = {}
        self._lock = anyio.Lock()

    def __repr__(self) -> str:
        return f"GitHubAppAuth(app_id={self._app_id!r})"

    async def token_for(self, repo: str) -> str:
        """Return an installation token valid for `repo` for at least `refresh_margin`.

        Raises:
            NotFound: The app is not installed on `repo`.
            ForgeError: GitHub refused the JWT or could not be reached.
        """
        async with self._lock:
            installation = self._installations.get(repo)
            if installation is None:
                installation = await self._find_installation(repo)
                self._installations[repo] = installation
            cached = self._tokens.get(installation)
            if cached is not None and cached.expires_at - self._margin > self._clock():
                return cached.token
            jwt = app_jwt(self._app_id, self._key, now=self._clock())
            request = build_access_token(self._api_url, jwt, installation)
            fresh = decode_access_token(await self._transport.send(request))
            self._tokens[installation] = fresh
            return fresh.token

    async def forget(self, repo: str, token: str) -> bool:
        """Drop a refused installation token (revoked, or the app was reinstalled).

        The repository's installation is looked up again too: a reinstalled app has a
        new installation id.

        Returns:
            True when `token` was the cached one for `repo`, so a retry gets a new one.
        """
        async with self._lock:
            installation = self._installations.pop(repo, None)
            if installation is None:
                return False
            cached = self._tokens.get(installation)
            if cached is None or cached.token != token:
                return False
            del self._tokens[installation]
            return True

    async def _find_installation(self, repo: str) -> int:
        jwt = app_jwt(self._app_id, self._key, now=self._clock())
        request = build_repo_installation(self._api_url, jwt, repo)
        try:
            return decode_installation(await self._transport.send(request))
        except NotFound as exc:
            raise NotFound(
                f"the GitHub App {self._app_id} is not installed on {repo}: install it on "
                "the repository (with commit statuses and contents write access)",
                status_code=exc.status_code,
                headers=exc.headers,
            ) from exc

"""Tests for `runner.forges.github_app`: the app JWT and the installation token cache."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import httpx
import pytest
import respx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from runner.forges.client import ForgeTransport
from runner.forges.exceptions import NotFound
from runner.forges.github_app import GitHubAppAuth, app_jwt, load_private_key
from runner.forges.github_client import GitHubClient
from runner.forges.protocol import CommitState
from tests.runner.forges.conftest import GITHUB_API, START, FakeClock

REPO = "octo-org/profile"
SHA = "0123456789abcdef0123456789abcdef01234567"
INSTALLATION_URL = f"{GITHUB_API}/repos/{REPO}/installation"
TOKENS_URL = f"{GITHUB_API}/app/installations/42/access_tokens"


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    """A throw-away RSA key standing in for the app's private key."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def unpad(part: str) -> bytes:
    """Decode one base64url JWT segment."""
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def verify(jwt: str, key: rsa.RSAPrivateKey) -> dict[str, object]:
    """Check the JWT's RS256 signature with the public key and return its claims."""
    header, claims, signature = jwt.split(".")
    key.public_key().verify(
        unpad(signature), f"{header}.{claims}".encode(), padding.PKCS1v15(), hashes.SHA256()
    )
    assert json.loads(unpad(header)) == {"alg": "RS256", "typ": "JWT"}
    data = json.loads(unpad(claims))
    assert isinstance(data, dict)
    return data


def test_app_jwt_is_verifiable_with_the_public_key(key: rsa.RSAPrivateKey) -> None:
    """The JWT verifies with the app's public key and carries GitHub's required claims."""
    claims = verify(app_jwt("Iv1.abc123", key, now=START), key)
    assert claims == {"iat": int(START) - 60, "exp": int(START) + 540, "iss": "Iv1.abc123"}


def test_app_jwt_fails_verification_with_another_key(key: rsa.RSAPrivateKey) -> None:
    """A JWT signed by one key does not verify with another."""
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(InvalidSignature):
        verify(app_jwt("1", other, now=START), key)


def test_app_jwt_lifetime_stays_under_ten_minutes(key: rsa.RSAPrivateKey) -> None:
    """`exp` is at most 10 minutes after now and `iat` is backdated for clock drift."""
    claims = verify(app_jwt("1", key, now=START + 0.9), key)
    assert isinstance(claims["exp"], int)
    assert isinstance(claims["iat"], int)
    assert claims["exp"] - START <= 600
    assert claims["iat"] < START


def test_load_private_key_reads_pem_and_refuses_other_keys(key: rsa.RSAPrivateKey) -> None:
    """A PEM RSA key loads; an EC key is refused with a `TypeError`."""
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    assert load_private_key(pem).public_key().public_numbers() == key.public_key().public_numbers()
    ec_pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(TypeError, match="RSA"):
        load_private_key(ec_pem)


def token_response(token: str, expires_at: float) -> httpx.Response:
    """GitHub's answer to an installation token request."""
    iso = datetime.fromtimestamp(expires_at, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return httpx.Response(201, json={"token": token, "expires_at": iso})


@pytest.fixture
def auth(transport: ForgeTransport, key: rsa.RSAPrivateKey) -> GitHubAppAuth:
    """App auth for app id 12345 over the mocked GitHub, on the fake clock."""
    return GitHubAppAuth(transport, app_id="12345", private_key=key)


@pytest.mark.anyio
async def test_token_for_caches_until_five_minutes_before_expiry(
    router: respx.Router,
    auth: GitHubAppAuth,
    clock: FakeClock,
    key: rsa.RSAPrivateKey,
    github_operations: list[str],
) -> None:
    """A token is reused while it has over 5 minutes left, then a new one is minted."""
    lookup = router.get(INSTALLATION_URL).mock(return_value=httpx.Response(200, json={"id": 42}))
    mint = router.post(TOKENS_URL).mock(
        side_effect=[
            token_response("ghs_first", START + 3600),
            token_response("ghs_second", START + 7200),
        ]
    )
    assert await auth.token_for(REPO) == "ghs_first"
    clock.now = START + 3600 - 301
    assert await auth.token_for(REPO) == "ghs_first"
    clock.now = START + 3600 - 299
    assert await auth.token_for(REPO) == "ghs_second"
    assert lookup.call_count == 1
    assert mint.call_count == 2
    jwt = mint.calls.last.request.headers["Authorization"].removeprefix("Bearer ")
    assert verify(jwt, key)["iat"] == int(START + 3600 - 299) - 60
    assert github_operations == [
        "apps/get-repo-installation",
        "apps/create-installation-access-token",
        "apps/create-installation-access-token",
    ]


@pytest.mark.anyio
async def test_token_for_reports_an_app_not_installed(
    router: respx.Router, auth: GitHubAppAuth
) -> None:
    """A 404 from the installation look-up says to install the app on the repository."""
    router.get(INSTALLATION_URL).mock(return_value=httpx.Response(404, json={"message": "x"}))
    with pytest.raises(NotFound, match="not installed on octo-org/profile"):
        await auth.token_for(REPO)


@pytest.mark.anyio
async def test_github_client_uses_the_installation_token(
    router: respx.Router, transport: ForgeTransport, auth: GitHubAppAuth
) -> None:
    """A client built on app auth sends the installation token, not the JWT."""
    router.get(INSTALLATION_URL).mock(return_value=httpx.Response(200, json={"id": 42}))
    router.post(TOKENS_URL).mock(return_value=token_response("ghs_install", START + 3600))
    status = router.post(f"{GITHUB_API}/repos/{REPO}/statuses/{SHA}").mock(
        return_value=httpx.Response(201)
    )
    client = GitHubClient(transport, auth)
    await client.set_status(REPO, SHA, CommitState.RUNNING, description="building", target_url=None)
    assert status.calls.last.request.headers["Authorization"] == "Bearer ghs_install"


def test_github_app_auth_repr_hides_the_key(
    transport: ForgeTransport, key: rsa.RSAPrivateKey
) -> None:
    """The provider's repr names the app and nothing secret."""
    auth = GitHubAppAuth(transport, app_id="12345", private_key=key)
    assert repr(auth) == "GitHubAppAuth(app_id='12345')"


@pytest.mark.anyio
async def test_forget_drops_a_refused_token_and_looks_the_installation_up_again(
    router: respx.Router, auth: GitHubAppAuth
) -> None:
    """After `forget`, the next token is newly minted for a freshly looked-up installation."""
    lookup = router.get(INSTALLATION_URL).mock(return_value=httpx.Response(200, json={"id": 42}))
    router.post(TOKENS_URL).mock(
        side_effect=[
            token_response("ghs_revoked", START + 3600),
            token_response("ghs_fresh", START + 3600),
        ]
    )
    assert await auth.token_for(REPO) == "ghs_revoked"
    assert await auth.forget(REPO, "ghs_someone_else") is False
    assert await auth.token_for(REPO) == "ghs_revoked"  # an unknown token drops nothing cached
    assert await auth.forget(REPO, "ghs_revoked") is True
    assert await auth.token_for(REPO) == "ghs_fresh"
    assert lookup.call_count == 3

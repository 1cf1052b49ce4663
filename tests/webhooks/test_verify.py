"""Tests for webhooks.verify: published vectors, refusals, the replay window."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from tests.webhooks.samples import GITLAB_SIGNING_KEY, standard_signature
from webhooks.exceptions import SignatureMismatch
from webhooks.verify import (
    decode_signing_key,
    verify_github,
    verify_gitlab_token,
    verify_standard_webhook,
)

# https://docs.github.com/webhooks/using-webhooks/validating-webhook-deliveries
GITHUB_DOC_SECRET = SecretStr("It's a Secret to Everybody")
GITHUB_DOC_SIGNATURE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"

# gidgethub 6.0.0 tests/test_sansio.py
GIDGETHUB_SECRET = SecretStr("123456")
GIDGETHUB_VECTORS = [
    (b"gidget", "sha256=091319196718d5bcb1c20ad25fc890597423ecdbad1f947f560afd643b5000de"),
    (
        b'{"action": "opened"}',
        "sha256=0340d06469a1b35662ebd7a67ea2c0c328239f319f1cfafb221451de629e0430",
    ),
]
GIDGETHUB_SHA1 = "sha1=c28e33b2e56e548956c446e890929a6cbec3ac89"

# Standard Webhooks reference (libraries/go/webhook_test.go, TestWebhookSign)
SW_KEY = SecretStr("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
SW_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SW_TS = 1614265330
SW_BODY = b'{"test": 2432232314}'
SW_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

# GitLab-shaped vector (32-byte key), forge-apis.md §2.2
GL_KEY = SecretStr(GITLAB_SIGNING_KEY)
GL_ID = "0b2bd3b2-5a46-4d8b-9d3a-6f0c3c1f2a10"
GL_TS = 1767225600
GL_BODY = b'{"object_kind":"push","ref":"refs/heads/main"}'
GL_SIGNATURE = "v1,OuH7Pb9AsY4oDYduz4e7ckIzrF60PzaRu80JJnXlee8="


def test_verify_github_accepts_documented_vector() -> None:
    """GitHub's documented test vector verifies."""
    verify_github(b"Hello, World!", GITHUB_DOC_SIGNATURE, GITHUB_DOC_SECRET)


@pytest.mark.parametrize(("body", "signature"), GIDGETHUB_VECTORS)
def test_verify_github_accepts_gidgethub_vectors(body: bytes, signature: str) -> None:
    """The SHA-256 vectors from gidgethub's tests verify."""
    verify_github(body, signature, GIDGETHUB_SECRET)


def test_verify_github_refuses_other_body() -> None:
    """A signature made for one body does not verify another."""
    with pytest.raises(SignatureMismatch, match="does not match"):
        verify_github(b"Hello, World?", GITHUB_DOC_SIGNATURE, GITHUB_DOC_SECRET)


def test_verify_github_refuses_other_secret() -> None:
    """A signature made with another secret does not verify."""
    with pytest.raises(SignatureMismatch):
        verify_github(b"Hello, World!", GITHUB_DOC_SIGNATURE, SecretStr("another secret"))


def test_verify_github_refuses_missing_signature() -> None:
    """A delivery without X-Hub-Signature-256 is refused, naming the header."""
    with pytest.raises(SignatureMismatch, match="missing X-Hub-Signature-256"):
        verify_github(b"gidget", None, GIDGETHUB_SECRET)


def test_verify_github_refuses_sha1_signature() -> None:
    """A valid legacy SHA-1 signature given in place of the SHA-256 one is refused."""
    with pytest.raises(SignatureMismatch):
        verify_github(b'{"action": "opened"}', GIDGETHUB_SHA1, GIDGETHUB_SECRET)


@pytest.mark.parametrize(
    "signature",
    [
        GITHUB_DOC_SIGNATURE.removeprefix("sha256="),
        GITHUB_DOC_SIGNATURE.upper(),
        GITHUB_DOC_SIGNATURE + " ",
        "sha256=é" + GITHUB_DOC_SIGNATURE[8:],
        "",
    ],
)
def test_verify_github_refuses_altered_header(signature: str) -> None:
    """Any alteration of the header, including non-ASCII text, is a mismatch."""
    with pytest.raises(SignatureMismatch):
        verify_github(b"Hello, World!", signature, GITHUB_DOC_SECRET)


def test_verify_github_message_holds_no_secret_or_signature() -> None:
    """The refusal message contains neither the secret nor the signatures."""
    with pytest.raises(SignatureMismatch) as caught:
        verify_github(b"Hello, World?", GITHUB_DOC_SIGNATURE, GITHUB_DOC_SECRET)
    message = str(caught.value)
    assert GITHUB_DOC_SECRET.get_secret_value() not in message
    assert GITHUB_DOC_SIGNATURE[7:] not in message
    assert "sha256=" not in message


def test_verify_gitlab_token_accepts_equal_token() -> None:
    """The configured secret token verifies."""
    verify_gitlab_token("s3cr3t-token", SecretStr("s3cr3t-token"))


@pytest.mark.parametrize("header", [None, "", "s3cr3t-toke", "s3cr3t-token ", "s3cr3t-tokén"])
def test_verify_gitlab_token_refuses_missing_or_different(header: str | None) -> None:
    """A missing, shorter, longer or different token is refused without echoing it."""
    with pytest.raises(SignatureMismatch) as caught:
        verify_gitlab_token(header, SecretStr("s3cr3t-token"))
    assert "s3cr3t" not in str(caught.value)


def _standard(
    body: bytes = SW_BODY,
    *,
    webhook_id: str | None = SW_ID,
    timestamp: str | None = str(SW_TS),
    signature: str | None = SW_SIGNATURE,
    key: SecretStr = SW_KEY,
    now: float = SW_TS,
    tolerance: int = 300,
) -> None:
    verify_standard_webhook(
        body,
        webhook_id=webhook_id,
        webhook_timestamp=timestamp,
        webhook_signature=signature,
        key=key,
        now=now,
        tolerance=tolerance,
    )


def test_verify_standard_webhook_accepts_reference_vector() -> None:
    """The Standard Webhooks reference vector verifies."""
    _standard()


def test_verify_standard_webhook_accepts_gitlab_shaped_vector() -> None:
    """The GitLab-shaped vector with a 32-byte key verifies."""
    _standard(
        GL_BODY,
        webhook_id=GL_ID,
        timestamp=str(GL_TS),
        signature=GL_SIGNATURE,
        key=GL_KEY,
        now=GL_TS,
    )


def test_verify_standard_webhook_accepts_key_without_prefix() -> None:
    """A signing key given without its `whsec_` prefix verifies the same."""
    _standard(key=SecretStr(SW_KEY.get_secret_value().removeprefix("whsec_")))


def test_verify_standard_webhook_accepts_any_matching_entry() -> None:
    """One matching `v1` entry among others (key rotation, other versions) is enough."""
    _standard(signature=f"v1a,bm90IGVkMjU1MTk= v1,AAAA{SW_SIGNATURE[7:]} {SW_SIGNATURE}")


@pytest.mark.parametrize(
    "signature",
    [
        SW_SIGNATURE.replace("v1,", "v2,"),
        SW_SIGNATURE[3:],
        "v1," + SW_SIGNATURE[4:],
        "v1,",
        "",
    ],
)
def test_verify_standard_webhook_refuses_wrong_signature(signature: str) -> None:
    """Another version, a bare or altered signature, or none at all is refused."""
    with pytest.raises(SignatureMismatch, match="does not match"):
        _standard(signature=signature)


def test_verify_standard_webhook_refuses_other_id() -> None:
    """The id is signed: the same signature under another id is refused."""
    with pytest.raises(SignatureMismatch):
        _standard(webhook_id="msg_other")


def test_verify_standard_webhook_refuses_other_body() -> None:
    """The body is signed: the same signature over another body is refused."""
    with pytest.raises(SignatureMismatch):
        _standard(b'{"test": 2432232315}')


@pytest.mark.parametrize("missing", ["webhook_id", "timestamp", "signature"])
def test_verify_standard_webhook_refuses_missing_header(missing: str) -> None:
    """Each of the three headers is required."""
    with pytest.raises(SignatureMismatch, match="missing webhook-id"):
        _standard(**{missing: None})  # type: ignore[arg-type]


@pytest.mark.parametrize("offset", [-301, 301, -(10**9), 10**9])
def test_verify_standard_webhook_refuses_outside_window(offset: int) -> None:
    """A timestamp more than the tolerance in the past or the future is a replay."""
    with pytest.raises(SignatureMismatch, match="more than 300 s"):
        _standard(now=SW_TS - offset)


@pytest.mark.parametrize("offset", [-300, 300])
def test_verify_standard_webhook_accepts_window_edges(offset: int) -> None:
    """A timestamp exactly at the tolerance, either way, is still accepted."""
    _standard(now=SW_TS + offset)


def test_verify_standard_webhook_refuses_replay_even_when_signed() -> None:
    """A correctly signed delivery from an hour ago is refused."""
    old = SW_TS - 3600
    signature = standard_signature(
        SW_BODY, key=SW_KEY.get_secret_value(), webhook_id=SW_ID, timestamp=old
    )
    with pytest.raises(SignatureMismatch, match="replayed"):
        _standard(timestamp=str(old), signature=signature)


@pytest.mark.parametrize("timestamp", ["", "-1614265330", "1614265330.0", "١٦١٤٢٦٥٣٣٠", "9" * 5000])
def test_verify_standard_webhook_refuses_non_integer_timestamp(timestamp: str) -> None:
    """A timestamp that is not plain ASCII digits of sane length is refused."""
    with pytest.raises(SignatureMismatch, match="not a Unix time"):
        _standard(timestamp=timestamp)


def test_verify_standard_webhook_refuses_undecodable_key() -> None:
    """A signing key that is not base64 refuses the delivery without naming the key."""
    with pytest.raises(SignatureMismatch, match="not `whsec_` followed by base64") as caught:
        _standard(key=SecretStr("whsec_not*base64"))
    assert "not*base64" not in str(caught.value)


def test_decode_signing_key_returns_raw_bytes() -> None:
    """The GitLab-shaped key decodes to the 32 bytes 0x00..0x1f."""
    assert decode_signing_key(GL_KEY) == bytes(range(32))


@pytest.mark.parametrize("key", ["whsec_", "whsec_%%%", "whsec_YWJ"])
def test_decode_signing_key_refuses_empty_or_invalid(key: str) -> None:
    """An empty key or one that is not valid base64 raises ValueError."""
    with pytest.raises(ValueError, match="signing token"):
        decode_signing_key(SecretStr(key))

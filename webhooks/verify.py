"""Webhook signature and token checks over the raw request body.

Pure: functions of bytes, strings and secrets, no I/O and no clock of their own (the
caller passes `now`). Every check fails closed: a missing header is a mismatch, the
secret is never optional, and comparisons are constant-time (`hmac.compare_digest`).
Error messages name the header and the setting to check, never a secret or a
signature.
"""

from __future__ import annotations

import base64
import binascii
import hmac

from pydantic import SecretStr

from webhooks.exceptions import SignatureMismatch

_SIGNING_KEY_PREFIX = "whsec_"
_MAX_TIMESTAMP_DIGITS = 12


def _header_bytes(value: str) -> bytes:
    # Header values may hold any character; compare_digest only takes ASCII str, so
    # compare bytes. surrogatepass keeps every str encodable.
    return value.encode("utf-8", "surrogatepass")


def verify_github(body: bytes, signature_256: str | None, secret: SecretStr) -> None:
    """Check GitHub's `X-Hub-Signature-256` over the raw body.

    Only the SHA-256 signature is accepted: a delivery carrying only the legacy SHA-1
    `X-Hub-Signature` is refused like an unsigned one.

    Args:
        body: The request body exactly as received (JSON or form-encoded).
        signature_256: The `X-Hub-Signature-256` header, or None when absent.
        secret: The webhook secret configured on GitHub.

    Raises:
        SignatureMismatch: The header is missing or does not match.
    """
    # https://docs.github.com/webhooks/using-webhooks/validating-webhook-deliveries
    # "sha256=" + hex HMAC-SHA256(secret, raw body), compared in constant time.
    if signature_256 is None:
        raise SignatureMismatch(
            "missing X-Hub-Signature-256: set a secret on the GitHub webhook "
            "(the SHA-1 X-Hub-Signature alone is not accepted)"
        )
    # hmac.digest is the one-shot C path: no HMAC object per delivery.
    digest = hmac.digest(secret.get_secret_value().encode(), body, "sha256").hex()
    expected = f"sha256={digest}".encode()
    if not hmac.compare_digest(expected, _header_bytes(signature_256)):
        raise SignatureMismatch(
            "X-Hub-Signature-256 does not match the body: check that the GitHub "
            "webhook secret equals isorunner's github.webhook_secret"
        )


def verify_gitlab_token(token_header: str | None, secret: SecretStr) -> None:
    """Check GitLab's `X-Gitlab-Token` (the hook's secret token, sent in clear).

    Args:
        token_header: The `X-Gitlab-Token` header, or None when absent.
        secret: The secret token configured on the GitLab webhook.

    Raises:
        SignatureMismatch: The header is missing or differs from the secret.
    """
    # https://docs.gitlab.com/user/project/integrations/webhooks/#create-a-webhook
    # GitLab sends the secret token itself; compare in constant time all the same.
    if token_header is None:
        raise SignatureMismatch(
            "missing X-Gitlab-Token: set the secret token on the GitLab webhook"
        )
    expected = secret.get_secret_value().encode()
    if not hmac.compare_digest(expected, _header_bytes(token_header)):
        raise SignatureMismatch(
            "X-Gitlab-Token does not match: check that the GitLab webhook's secret "
            "token equals isorunner's gitlab.webhook_secret"
        )


def decode_signing_key(key: SecretStr) -> bytes:
    """Return the raw HMAC key of a Standard Webhooks secret (`whsec_<base64>`).

    Args:
        key: The signing token, with or without its `whsec_` prefix.

    Returns:
        The decoded key bytes.

    Raises:
        ValueError: The key is not base64 (the message does not contain it).
    """
    # https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md#signature-scheme
    text = key.get_secret_value().removeprefix(_SIGNING_KEY_PREFIX)
    try:
        raw = base64.b64decode(text, validate=True)
    except binascii.Error as exc:
        raise ValueError(
            "the signing token is not `whsec_` followed by base64: copy it again from GitLab"
        ) from exc
    if not raw:
        raise ValueError("the signing token is empty: copy it again from GitLab")
    return raw


def require_standard_webhook_headers(
    webhook_id: str | None, webhook_timestamp: str | None, webhook_signature: str | None
) -> tuple[str, str, str]:
    """Refuse a delivery lacking any of the three Standard Webhooks headers.

    Header-only, so it can run before the body is read.

    Returns:
        The three values, none missing.

    Raises:
        SignatureMismatch: A header is missing.
    """
    if webhook_id is None or webhook_timestamp is None or webhook_signature is None:
        raise SignatureMismatch(
            "missing webhook-id, webhook-timestamp or webhook-signature: the GitLab "
            "webhook must have the signing token that isorunner's gitlab.signing_token holds"
        )
    return webhook_id, webhook_timestamp, webhook_signature


def verify_standard_webhook(
    body: bytes,
    *,
    webhook_id: str | None,
    webhook_timestamp: str | None,
    webhook_signature: str | None,
    key: SecretStr,
    now: float,
    tolerance: int,
) -> None:
    """Check a Standard Webhooks v1 signature (GitLab signing tokens).

    The signed content is `"{webhook-id}.{webhook-timestamp}.{body}"`, signed with
    HMAC-SHA256 under the base64-decoded key; `webhook-signature` is a space-separated
    list of `v1,<base64>` entries (several during key rotation) and one match is
    enough. Entries of other versions (`v1a` is ed25519) are skipped.

    Args:
        body: The request body exactly as received.
        webhook_id: The `webhook-id` header, or None.
        webhook_timestamp: The `webhook-timestamp` header (Unix seconds), or None.
        webhook_signature: The `webhook-signature` header, or None.
        key: The signing token (`whsec_...`).
        now: The current Unix time.
        tolerance: How many seconds the timestamp may differ from `now`, either way.

    Raises:
        SignatureMismatch: A header is missing, the timestamp is outside the window,
            or no `v1` entry matches.
    """
    # https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md#verifying-webhook-authenticity
    # https://docs.gitlab.com/user/project/integrations/webhooks/#signing-tokens
    webhook_id, webhook_timestamp, webhook_signature = require_standard_webhook_headers(
        webhook_id, webhook_timestamp, webhook_signature
    )
    if not (
        webhook_timestamp.isascii()
        and webhook_timestamp.isdigit()
        and len(webhook_timestamp) <= _MAX_TIMESTAMP_DIGITS
    ):
        raise SignatureMismatch("webhook-timestamp is not a Unix time in seconds")
    # The spec's replay protection: refuse old deliveries and ones from the future.
    if abs(now - int(webhook_timestamp)) > tolerance:
        raise SignatureMismatch(
            f"webhook-timestamp is more than {tolerance} s away from this host's clock: "
            "a replayed delivery, or a clock out of sync (check NTP on both hosts)"
        )
    try:
        raw_key = decode_signing_key(key)
    except ValueError as exc:
        raise SignatureMismatch(str(exc)) from exc
    signed = _header_bytes(f"{webhook_id}.{webhook_timestamp}.") + body
    expected = base64.b64encode(hmac.digest(raw_key, signed, "sha256"))
    for entry in webhook_signature.split(" "):
        version, _, signature = entry.partition(",")
        if version == "v1" and hmac.compare_digest(expected, _header_bytes(signature)):
            return
    raise SignatureMismatch(
        "webhook-signature does not match the body: check that the GitLab webhook's "
        "signing token equals isorunner's gitlab.signing_token"
    )

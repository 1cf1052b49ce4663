"""Recorded deliveries from tests/samples/, and signing them the way the forges do.

Reads sample files; otherwise pure. Bodies are the recorded bytes; signatures are
computed here with test secrets, so they cover exactly what is sent.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path

SAMPLES = Path(__file__).parent.parent / "samples"

GITHUB_SECRET = "github-test-secret"
GITLAB_TOKEN = "gitlab-test-token"
# 32 bytes 0x00..0x1f, the key of forge-apis.md §2.2's GitLab-shaped vector.
GITLAB_SIGNING_KEY = "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="


def load(forge: str, case: str) -> tuple[dict[str, str], bytes]:
    """Return the recorded headers and raw body of `tests/samples/<forge>/<case>`."""
    folder = SAMPLES / forge / case
    headers: dict[str, str] = json.loads((folder / "headers.json").read_text())
    return headers, (folder / "body").read_bytes()


def github_signature(body: bytes, secret: str = GITHUB_SECRET) -> str:
    """Return the `X-Hub-Signature-256` GitHub sends for `body`."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def github_signed(
    case: str, body: bytes | None = None, secret: str = GITHUB_SECRET
) -> tuple[dict[str, str], bytes]:
    """Return a recorded GitHub delivery (or `body` under its headers), signed."""
    headers, recorded = load("github", case)
    body = recorded if body is None else body
    return {**headers, "x-hub-signature-256": github_signature(body, secret)}, body


def standard_signature(body: bytes, *, key: str, webhook_id: str, timestamp: int) -> str:
    """Return the `webhook-signature` a Standard Webhooks sender computes."""
    raw_key = base64.b64decode(key.removeprefix("whsec_"))
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(raw_key, signed, hashlib.sha256).digest()).decode()


def gitlab_signed(
    case: str,
    body: bytes | None = None,
    *,
    timestamp: int,
    token: str | None = GITLAB_TOKEN,
    key: str | None = GITLAB_SIGNING_KEY,
) -> tuple[dict[str, str], bytes]:
    """Return a recorded GitLab delivery (or `body` under its headers), authenticated.

    With `token` the secret token header is set; with `key` the Standard Webhooks
    headers are, `webhook-id` being the delivery's `Idempotency-Key` as GitLab does.
    """
    headers, recorded = load("gitlab", case)
    body = recorded if body is None else body
    if token is not None:
        headers["x-gitlab-token"] = token
    if key is not None:
        webhook_id = headers["idempotency-key"]
        headers["webhook-id"] = webhook_id
        headers["webhook-timestamp"] = str(timestamp)
        headers["webhook-signature"] = standard_signature(
            body, key=key, webhook_id=webhook_id, timestamp=timestamp
        )
    return headers, body


def edited(body: bytes, **changes: object) -> bytes:
    """Return the JSON `body`, compact, with `a__b=value` setting `data["a"]["b"]`."""
    data = json.loads(body)
    for path, value in changes.items():
        *parents, leaf = path.split("__")
        target = data
        for part in parents:
            target = target[part]
        target[leaf] = value
    return json.dumps(data, separators=(",", ":")).encode()

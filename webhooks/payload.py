"""What the GitHub and GitLab intake modules share: payload models and their errors.

Pure: no I/O. Payload models are frozen and ignore unknown fields, so new forge fields
never break intake; a body that does not fit a model becomes a `MalformedPayload`
naming the first bad field, never echoing its value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from webhooks.exceptions import MalformedPayload


class PayloadModel(BaseModel):
    """Base of the forge payload models: frozen, unknown fields ignored."""

    model_config = ConfigDict(frozen=True, extra="ignore")


M = TypeVar("M", bound=PayloadModel)


def parse_payload(model: type[M], body: bytes, what: str) -> M:
    """Validate a JSON body against `model`.

    Args:
        model: The payload model.
        body: The raw JSON bytes.
        what: Names the payload in the error, e.g. "GitHub push".

    Raises:
        MalformedPayload: The body is not JSON or does not fit; the message names the
            first bad field, without its value.
    """
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        raise MalformedPayload(f"{what} payload is not valid at {where}: {first['msg']}") from exc


SHA_PATTERN = r"[0-9a-f]{40}(?:[0-9a-f]{24})?"
"""A full commit id: SHA-1 (40 hex digits) or SHA-256 (64)."""

Sha = Annotated[str, StringConstraints(pattern=f"^{SHA_PATTERN}$")]
"""A payload field that must hold a full commit id."""

_SHA = re.compile(SHA_PATTERN)

Count = Annotated[int, Field(ge=0, le=2**63 - 1)]
"""A payload number the store keeps (ids, PR numbers): what SQLite's INTEGER holds.

A larger one would fail at the store (503) on every redelivery; it is refused at once.
"""


def previous_commit(sha: str | None) -> str | None:
    """A forge's "before" commit, or None when it names none.

    Forges send 40 zeros for a branch that did not exist before the push; anything
    that is not a commit id is treated as unknown rather than refused, because the
    field only orders builds and never decides whether one is made.
    """
    if sha is None or not _SHA.fullmatch(sha) or not sha.strip("0"):
        return None
    return sha


def lower_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The headers with lower-case names, for case-insensitive look-ups."""
    return {name.lower(): value for name, value in headers.items()}

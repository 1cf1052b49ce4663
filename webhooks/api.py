"""The JSON API's pure core: query parameters, the admin check, response bodies.

Pure: no I/O. `webhooks.routes` reads the request and calls these; the shapes here
are the ones `webhooks.openapi` documents.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final
from urllib.parse import urlencode

from pydantic import SecretStr

from webhooks.artifacts import download_path
from webhooks.build import Artifact, BuildControl, BuildRecord, BuildState, Release, Trust
from webhooks.exceptions import AdminDisabled, AdminTokenRequired, InvalidParameter

MAX_LIMIT: Final = 100
DEFAULT_LIMIT: Final = 25
_MAX_ID: Final = 2**63 - 1
_MAX_REPO: Final = 255


@dataclass(frozen=True, slots=True)
class ListingQuery:
    """Which builds a list shows.

    Attributes:
        repo: Only this repository, or all.
        state: Only this state, or all.
        before: Only builds with smaller ids (keyset pagination), or the newest.
        limit: How many builds at most.
    """

    repo: str | None
    state: BuildState | None
    before: int | None
    limit: int

    def next_query(self, records: Sequence[BuildRecord]) -> str | None:
        """Return the query string of the next (older) page, or None on the last one."""
        if len(records) < self.limit or not records:
            return None
        params: dict[str, str | int] = {}
        if self.repo:
            params["repo"] = self.repo
        if self.state:
            params["state"] = str(self.state)
        params["before"] = records[-1].id
        params["limit"] = self.limit
        return urlencode(params)


def _integer(params: Mapping[str, str], name: str, low: int, high: int) -> int | None:
    raw = params.get(name, "")
    if raw == "":
        return None
    # The length first: int() of a few thousand digits raises (Python's digit limit).
    digits = raw.isascii() and raw.isdigit() and len(raw) <= len(str(high))
    if not digits or not low <= int(raw) <= high:
        raise InvalidParameter(f"{name} must be a whole number from {low} to {high}")
    return int(raw)


def parse_listing(params: Mapping[str, str], *, default_limit: int = DEFAULT_LIMIT) -> ListingQuery:
    """Read `repo`, `state`, `before` and `limit` from query parameters.

    Empty values count as absent (an unfilled form field).

    Raises:
        InvalidParameter: A value is not valid; the message names the parameter.
    """
    repo = params.get("repo", "").strip() or None
    if repo is not None and len(repo) > _MAX_REPO:
        raise InvalidParameter(f"repo must be at most {_MAX_REPO} characters")
    raw_state = params.get("state", "")
    state = None
    if raw_state:
        try:
            state = BuildState(raw_state)
        except ValueError:
            names = ", ".join(s.value for s in BuildState)
            raise InvalidParameter(f"state must be one of {names}") from None
    before = _integer(params, "before", 1, _MAX_ID)
    limit = _integer(params, "limit", 1, MAX_LIMIT)
    return ListingQuery(repo, state, before, default_limit if limit is None else limit)


def check_admin(authorization: str | None, token: SecretStr | None) -> None:
    """Allow an admin call only with `Authorization: Bearer <the admin token>`.

    Args:
        authorization: The request's `Authorization` header, if any.
        token: The configured admin token; None (or a blank one) disables admin calls.

    Raises:
        AdminDisabled: No admin token is configured.
        AdminTokenRequired: The header is missing, not a bearer token, or wrong.
    """
    expected = token.get_secret_value().strip().encode() if token is not None else b""
    if not expected:
        # An empty token would match `Bearer ` with nothing after it: none is configured.
        raise AdminDisabled(
            "no admin token configured: set server.admin_token to use the admin API"
        )
    scheme, _, given = (authorization or "").partition(" ")
    # Constant time: the comparison must not tell how much of a guess was right.
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
        raise AdminTokenRequired(
            "this call needs the header `Authorization: Bearer <server.admin_token>`"
        )


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def release_json(release: Release | None) -> dict[str, Any] | None:
    """Return the JSON form of a build's release (progress and result), or None."""
    if release is None:
        return None
    return {
        "tag": release.tag,
        "state": str(release.state),
        "attempts": release.attempts,
        "refusals": release.refusals,
        "next_attempt_at": _iso(release.next_attempt_at),
        "last_error": release.last_error,
        "url": release.url or None,
        "updated_at": _iso(release.updated_at),
        "files": [
            {"name": f.name, "size": f.size, "sha256": f.sha256, "uploaded": f.uploaded}
            for f in release.files
        ],
    }


def record_json(record: BuildRecord) -> dict[str, Any]:
    """Return the JSON form of a stored build, as `GET /api/builds/{id}` sends it."""
    build = record.request
    return {
        "id": record.id,
        "state": str(record.state),
        "detail": record.detail,
        "created_at": _iso(record.created_at),
        "started_at": _iso(record.started_at),
        "finished_at": _iso(record.finished_at),
        "request": {
            "forge": str(build.forge),
            "repo": build.repo,
            "commit_sha": build.commit_sha,
            "ref": build.ref,
            "ref_name": build.ref_name,
            "kind": str(build.kind),
            "pr_number": build.pr_number,
            "trusted": build.trusted,
            "commit_time": _iso(build.commit_time),
            "delivery_id": build.delivery_id,
            "source_repo": build.source_repo,
            "project_id": build.project_id,
            "web_url": build.web_url,
            "title": build.title,
            "sender": build.sender,
            "previous_sha": build.previous_sha,
        },
        "packages": None
        if record.packages is None
        else [
            {"name": p.name, "version": p.version, "repo": p.repo, "sha256": p.sha256}
            for p in record.packages
        ],
        "release": release_json(record.release),
    }


def admin_control(
    authorization: str | None, token: SecretStr | None, control: BuildControl | None
) -> BuildControl:
    """Return `control` for an admin call that `check_admin` allows.

    Raises:
        AdminDisabled: No admin token is configured, or no worker is attached.
        AdminTokenRequired: The `Authorization` header does not carry the token.
    """
    check_admin(authorization, token)
    if control is None:
        raise AdminDisabled("this server cannot cancel or retry builds (no worker attached)")
    return control


def trust_json(trust: Trust | None) -> dict[str, Any] | None:
    """Return the JSON form of a build's trust file: signature and rebuild check."""
    if trust is None:
        return None
    return {
        "signed_by": trust.signed_by,
        "public_key_url": "/signing-key.pub" if trust.signed_by else None,
        "reproducibility": trust.reproducibility,
        "differences": list(trust.differences),
        "difference_count": trust.difference_count,
    }


def artifact_json(build_id: int, artifact: Artifact, *, trusted: bool) -> dict[str, Any]:
    """Return the JSON form of one artifact, with its download path (see `download_path`)."""
    return {
        "name": artifact.name,
        "size": artifact.size,
        "sha256": artifact.sha256 or None,
        "b2": artifact.b2 or None,
        "url": download_path(build_id, artifact.name, trusted=trusted),
    }

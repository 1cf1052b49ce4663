"""Reading forge answers: rate-limit headers, retry advice, errors and JSON bodies.

Pure: functions of a `ForgeResponse` (status, headers, body) and of the current time;
no I/O. This is the one place where HTTP statuses become `ForgeError`s, shared by the
GitHub and GitLab decoders and by the transport's retry loop.

Header semantics (forge-apis.md §7): `Retry-After` is relative seconds (or an HTTP
date); GitHub's `x-ratelimit-reset` and GitLab's `RateLimit-Reset` are absolute Unix
epochs. GitHub signals an exhausted limit with 403 *or* 429; a 403 is a rate limit only
when `x-ratelimit-remaining` is 0 or the body names a (secondary) rate limit.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from runner.forges.exceptions import (
    Conflict,
    Forbidden,
    ForgeError,
    ForgeUnavailable,
    MalformedResponse,
    NotFound,
    RateLimit,
    RateLimited,
    Rejected,
    Unauthorized,
)
from runner.forges.request import ForgeResponse

#: GitHub's advice when a rate limit gives no time: wait at least a minute (GH-rl).
DEFAULT_RATE_LIMIT_WAIT = 60.0

_MESSAGE_LIMIT = 200


def _first(headers: Mapping[str, str], *names: str) -> str | None:
    lowered = {key.lower(): value for key, value in headers.items()}
    for name in names:
        if name in lowered:
            return lowered[name]
    return None


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value.strip())
    except ValueError:
        return None


def parse_retry_after(value: str, *, now: float) -> float | None:
    """Return the seconds a `Retry-After` value asks for, or None if it is unreadable.

    Args:
        value: Either delta-seconds or an HTTP date (RFC 9110 §10.2.3).
        now: The current Unix time, to turn a date into a delay.

    Returns:
        A delay of zero or more seconds, or None.
    """
    seconds = _number(value)
    if seconds is not None:
        return max(seconds, 0.0)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(when.timestamp() - now, 0.0)


def parse_rate_limit(headers: Mapping[str, str], *, now: float) -> RateLimit | None:
    """Collect GitHub's and GitLab's rate-limit headers, or None when there are none.

    Args:
        headers: The response headers (any case).
        now: The current Unix time, used for an HTTP-date `Retry-After`.

    Returns:
        The rate-limit information, or None if the response carried none.
    """
    raw_retry = _first(headers, "retry-after")
    retry_after = parse_retry_after(raw_retry, now=now) if raw_retry is not None else None
    reset_at = _number(_first(headers, "x-ratelimit-reset", "ratelimit-reset"))
    remaining = _number(_first(headers, "x-ratelimit-remaining", "ratelimit-remaining"))
    limit = _number(_first(headers, "x-ratelimit-limit", "ratelimit-limit"))
    resource = _first(headers, "x-ratelimit-resource", "ratelimit-name")
    if retry_after is None and reset_at is None and remaining is None and limit is None:
        return None
    return RateLimit(
        retry_after=retry_after,
        reset_at=reset_at,
        remaining=int(remaining) if remaining is not None else None,
        limit=int(limit) if limit is not None else None,
        resource=resource,
    )


def is_rate_limited(response: ForgeResponse) -> bool:
    """Whether the response says "rate limit exceeded" (429, or GitHub's special 403)."""
    if response.status == 429:
        return True
    if response.status != 403:
        return False
    if _first(response.headers, "x-ratelimit-remaining") == "0":
        return True
    # Secondary limits answer 403 with remaining > 0 and a message naming them (GH-rl).
    return b"rate limit" in response.body.lower()


@dataclass(frozen=True, slots=True)
class RetryAdvice:
    """Why a response deserves another attempt, and how long the forge asked to wait.

    Attributes:
        rate_limited: True for a rate limit, False for an outage or a busy lock.
        wait: Seconds the forge asked for; None means "back off as you see fit".
    """

    rate_limited: bool
    wait: float | None


def retry_advice(
    response: ForgeResponse, *, now: float, extra_statuses: frozenset[int] = frozenset()
) -> RetryAdvice | None:
    """Decide whether a response is worth retrying, and after how long.

    Rate limits wait for `Retry-After`, else until the reset epoch when nothing is
    left, else a minute (GitHub's advice). 5xx and `extra_statuses` honour
    `Retry-After` and otherwise leave the delay to the caller's backoff.

    Args:
        response: The forge's answer.
        now: The current Unix time.
        extra_statuses: Statuses this request treats as transient (GitLab's 409).

    Returns:
        The advice, or None when the response is final (success or a real error).
    """
    limit = parse_rate_limit(response.headers, now=now)
    if is_rate_limited(response):
        if limit is not None and limit.retry_after is not None:
            return RetryAdvice(rate_limited=True, wait=limit.retry_after)
        if limit is not None and limit.remaining == 0 and limit.reset_at is not None:
            return RetryAdvice(rate_limited=True, wait=max(limit.reset_at - now, 0.0) + 1.0)
        return RetryAdvice(rate_limited=True, wait=DEFAULT_RATE_LIMIT_WAIT)
    if response.status >= 500 or response.status in extra_statuses:
        wait = limit.retry_after if limit is not None else None
        return RetryAdvice(rate_limited=False, wait=wait)
    return None


def server_message(body: bytes) -> str:
    """The forge's own short explanation from an error body, or an empty string."""
    try:
        data: Any = json.loads(body)
    except ValueError:
        text = body.decode("utf-8", "replace").strip()
        return text[:_MESSAGE_LIMIT] if len(text) < _MESSAGE_LIMIT * 5 else ""
    if isinstance(data, dict):
        for key in ("message", "error", "error_description"):
            value = data.get(key)
            if isinstance(value, str | list | dict) and value:
                text = value if isinstance(value, str) else json.dumps(value)
                return text[:_MESSAGE_LIMIT]
    return ""


def _already_exists(body: bytes) -> bool:
    try:
        data: Any = json.loads(body)
    except ValueError:
        return False
    errors = data.get("errors") if isinstance(data, dict) else None
    return isinstance(errors, list) and any(
        isinstance(item, dict) and item.get("code") == "already_exists" for item in errors
    )


def error_for(response: ForgeResponse, *, now: float, note: str = "") -> ForgeError:
    """Turn a non-successful response into the `ForgeError` a caller can act on.

    Args:
        response: The final (not retried, or no longer retried) answer.
        now: The current Unix time, for rate-limit information.
        note: What was tried already ("gave up after 4 attempts over 118 s").

    Returns:
        The error to raise; the caller raises it.
    """
    status = response.status
    said = server_message(response.body)
    head = f"could not {response.action}: the forge answered {status}"
    head = f"{head} ({said})" if said else head
    head = f"{head} [{note}]" if note else head
    limit = parse_rate_limit(response.headers, now=now)

    def make(kind: type[ForgeError], text: str) -> ForgeError:
        return kind(text, status_code=status, headers=response.headers, rate_limit=limit)

    if is_rate_limited(response):
        when = "later"
        if limit is not None and limit.reset_at is not None:
            reset = datetime.fromtimestamp(limit.reset_at, tz=UTC)
            when = f"after {reset:%Y-%m-%d %H:%M:%S} UTC"
        return make(
            RateLimited,
            f"{head}; the rate limit is exhausted: retry {when}, or use a token with a "
            "higher limit (a GitHub App installation)",
        )
    if status >= 500:
        return make(ForgeUnavailable, f"{head}; the forge is failing or overloaded: retry later")
    if status == 409 or (status == 422 and _already_exists(response.body)):
        return make(Conflict, f"{head}; it exists already or is being changed right now")
    kind, hint = _CLIENT_ERRORS.get(status, _INVALID)
    return make(kind, f"{head}; {hint}")


_INVALID: tuple[type[ForgeError], str] = (
    Rejected,
    "the forge refused the request as invalid: check the values above, "
    "or report a bug in isorunner if they look right",
)
_CLIENT_ERRORS: dict[int, tuple[type[ForgeError], str]] = {
    401: (Unauthorized, "check that the token is valid and not expired or revoked"),
    403: (
        Forbidden,
        "give the token the permission this needs (GitHub: statuses and contents write; "
        "GitLab: the api scope with the Developer role)",
    ),
    404: (
        NotFound,
        "check the repository, commit or tag name and that the token can see the "
        "repository (private ones answer 404 to tokens without access)",
    ),
}


def check(response: ForgeResponse, *, now: float = 0.0) -> None:
    """Raise the matching `ForgeError` unless the response is a 2xx."""
    if not 200 <= response.status < 300:
        raise error_for(response, now=now)


def decode_json(response: ForgeResponse) -> Any:
    """Check the status and parse the body as JSON; the caller narrows the result.

    Raises:
        ForgeError: A non-2xx status, mapped by `error_for`.
        MalformedResponse: The body is not JSON.
    """
    check(response)
    try:
        return json.loads(response.body)
    except ValueError as exc:
        raise MalformedResponse(
            f"could not {response.action}: the forge answered {response.status} with a "
            "body that is not JSON; check the API base URL points at the API",
            status_code=response.status,
            headers=response.headers,
        ) from exc


_M = TypeVar("_M", bound=BaseModel)


def _undocumented(response: ForgeResponse, problem: str, advice: str) -> MalformedResponse:
    return MalformedResponse(
        f"could not {response.action}: the forge's answer {problem}; {advice}",
        status_code=response.status,
        headers=response.headers,
    )


def decode_model(response: ForgeResponse, model: type[_M], *, advice: str) -> _M:
    """Check the status, parse the JSON object and validate it as `model`.

    Args:
        response: The forge's answer.
        model: The frozen model holding the fields isorunner uses.
        advice: What the user should check when the answer does not fit (e.g. the
            configured API base URL).

    Raises:
        ForgeError: A non-2xx status (see `error_for`).
        MalformedResponse: Not JSON, or missing fields the model needs.
    """
    data = decode_json(response)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problem = f"lacks fields isorunner needs ({exc.error_count()} problems)"
        raise _undocumented(response, problem, advice) from exc


def decode_model_list(response: ForgeResponse, model: type[_M], *, advice: str) -> list[_M]:
    """As `decode_model`, for an answer that is a JSON list of `model` objects."""
    data = decode_json(response)
    if not isinstance(data, list):
        raise _undocumented(response, "is not a list", advice)
    try:
        return [model.model_validate(item) for item in data]
    except ValidationError as exc:
        problem = f"lacks fields isorunner needs ({exc.error_count()} problems)"
        raise _undocumented(response, problem, advice) from exc

"""Tests for `runner.forges.response`: rate-limit headers, retry advice, error mapping."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

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
from runner.forges.response import (
    RetryAdvice,
    decode_model,
    decode_model_list,
    error_for,
    parse_rate_limit,
    parse_retry_after,
    retry_advice,
)

NOW = 1_700_000_000.0


def test_parse_retry_after_reads_seconds_and_dates() -> None:
    """`Retry-After` is relative seconds or an HTTP date turned into seconds from now."""
    assert parse_retry_after("30", now=NOW) == 30.0
    assert parse_retry_after("Tue, 14 Nov 2023 22:13:27 GMT", now=NOW) == 7.0
    assert parse_retry_after("Tue, 14 Nov 2023 22:00:00 GMT", now=NOW) == 0.0
    assert parse_retry_after("soon", now=NOW) is None


def test_parse_rate_limit_reads_github_headers() -> None:
    """GitHub's `x-ratelimit-*` headers become a `RateLimit` with an absolute reset."""
    headers = {
        "X-RateLimit-Limit": "5000",
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": "1700000300",
        "X-RateLimit-Resource": "core",
    }
    assert parse_rate_limit(headers, now=NOW) == RateLimit(
        retry_after=None, reset_at=1_700_000_300.0, remaining=0, limit=5000, resource="core"
    )


def test_parse_rate_limit_reads_gitlab_headers() -> None:
    """GitLab's `RateLimit-*` headers and `Retry-After` are read the same way."""
    headers = {
        "RateLimit-Limit": "2000",
        "RateLimit-Remaining": "0",
        "RateLimit-Reset": "1700000060",
        "RateLimit-Name": "throttle_authenticated_api",
        "Retry-After": "60",
    }
    limit = parse_rate_limit(headers, now=NOW)
    assert limit is not None
    assert limit.retry_after == 60.0
    assert limit.reset_at == 1_700_000_060.0
    assert limit.resource == "throttle_authenticated_api"


def test_parse_rate_limit_is_none_without_headers() -> None:
    """A response without rate-limit headers has no `RateLimit`."""
    assert parse_rate_limit({"content-type": "application/json"}, now=NOW) is None


@pytest.mark.parametrize(
    ("status", "headers", "body", "advice"),
    [
        (200, {}, b"", None),
        (404, {}, b"", None),
        (422, {}, b"", None),
        (403, {}, b'{"message":"Resource not accessible by integration"}', None),
        (500, {}, b"", RetryAdvice(rate_limited=False, wait=None)),
        (503, {"retry-after": "5"}, b"", RetryAdvice(rate_limited=False, wait=5.0)),
        (429, {"retry-after": "12"}, b"", RetryAdvice(rate_limited=True, wait=12.0)),
        (429, {}, b"Retry later", RetryAdvice(rate_limited=True, wait=60.0)),
        (
            403,
            {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "1700000100"},
            b"",
            RetryAdvice(rate_limited=True, wait=101.0),
        ),
        (
            403,
            {"x-ratelimit-remaining": "10"},
            b'{"message":"You have exceeded a secondary rate limit"}',
            RetryAdvice(rate_limited=True, wait=60.0),
        ),
    ],
)
def test_retry_advice_decides_by_status_and_headers(
    status: int, headers: dict[str, str], body: bytes, advice: RetryAdvice | None
) -> None:
    """Only outages and rate limits are retried, waiting as long as the forge asks."""
    assert retry_advice(ForgeResponse(status, headers, body), now=NOW) == advice


def test_retry_advice_honours_extra_statuses() -> None:
    """A request's own transient status (GitLab's 409) is retried with backoff."""
    response = ForgeResponse(409, {}, b"")
    assert retry_advice(response, now=NOW) is None
    assert retry_advice(response, now=NOW, extra_statuses=frozenset({409})) == RetryAdvice(
        rate_limited=False, wait=None
    )


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (401, b'{"message":"Bad credentials"}', Unauthorized),
        (403, b'{"message":"Resource not accessible"}', Forbidden),
        (404, b'{"message":"Not Found"}', NotFound),
        (409, b'{"message":"exists"}', Conflict),
        (422, b'{"errors":[{"code":"already_exists"}]}', Conflict),
        (422, b'{"errors":[{"code":"invalid"}]}', Rejected),
        (400, b"", Rejected),
        (502, b"<html>Bad gateway</html>", ForgeUnavailable),
        (429, b"Retry later", RateLimited),
    ],
)
def test_error_for_maps_statuses_to_the_tree(
    status: int, body: bytes, kind: type[ForgeError]
) -> None:
    """Each failing status becomes the matching `ForgeError`, carrying the status."""
    response = ForgeResponse(status, {"x-github-request-id": "1"}, body, "do the thing")
    error = error_for(response, now=NOW)
    assert type(error) is kind
    assert error.status_code == status
    assert error.headers == {"x-github-request-id": "1"}
    assert str(error).startswith(f"could not do the thing: the forge answered {status}")


def test_error_for_rate_limit_says_when_to_retry() -> None:
    """A rate-limit error names the reset time in UTC and carries the rate limit."""
    headers = {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "1700003600"}
    error = error_for(ForgeResponse(403, headers, b""), now=NOW)
    assert isinstance(error, RateLimited)
    assert "retry after 2023-11-14 23:13:20 UTC" in str(error)
    assert error.rate_limit is not None
    assert error.rate_limit.remaining == 0


def test_error_for_marks_outages_and_rate_limits_as_transient() -> None:
    """Only outages and rate limits tell the caller to keep the work and retry later."""
    assert error_for(ForgeResponse(503, {}, b""), now=NOW).transient
    assert error_for(ForgeResponse(429, {}, b""), now=NOW).transient
    assert not error_for(ForgeResponse(404, {}, b""), now=NOW).transient
    assert not error_for(ForgeResponse(401, {}, b""), now=NOW).transient


class _Thing(BaseModel):
    name: str


def test_decode_model_validates_and_names_what_to_check() -> None:
    """An object missing a needed field is MalformedResponse carrying the caller's advice."""
    good = ForgeResponse(200, {}, b'{"name": "x", "extra": 1}', action="get a thing")
    assert decode_model(good, _Thing, advice="check the URL") == _Thing(name="x")
    bad = ForgeResponse(200, {}, b'{"nome": "x"}', action="get a thing")
    with pytest.raises(
        MalformedResponse, match=r"could not get a thing: .*lacks fields.*check the URL"
    ):
        decode_model(bad, _Thing, advice="check the URL")


def test_decode_model_list_refuses_an_object_where_a_list_is_due() -> None:
    """A list decoder refuses a JSON object, and decodes a list item by item."""
    listed = ForgeResponse(200, {}, b'[{"name": "a"}, {"name": "b"}]')
    assert [t.name for t in decode_model_list(listed, _Thing, advice="x")] == ["a", "b"]
    with pytest.raises(MalformedResponse, match="is not a list"):
        decode_model_list(ForgeResponse(200, {}, b'{"name": "a"}'), _Thing, advice="x")

"""Errors raised by the forge clients, and the rate-limit data they carry.

Pure: values only, no I/O. Kept apart from the modules that raise them so that the
builders, the transport and the clients can all import it without cycles. Messages say
what failed and what to do; they never carry a token, and URLs in them are stripped of
their user part and query string (GitHub's codeload redirects put a temporary token
there).

```
RunnerError (runner.exceptions)
 └── ForgeError               a forge call failed; carries status_code, headers, rate_limit
      ├── ForgeUnavailable     5xx, timeout or connection error that outlasted the retries
      ├── RateLimited          429 / GitHub rate-limit 403 that outlasted the retry budget
      ├── Unauthorized         401: the token is missing, expired or revoked
      ├── Forbidden            403 that is not a rate limit: the token lacks a permission
      ├── NotFound             404: no such repository, commit, release or asset
      │    └── ReleaseGone      the release vanished while files went into it (deleted)
      ├── Conflict             409, or 422 "already_exists"
      │    └── ImmutableRelease  a published immutable release lacks files: never fixable
      ├── Rejected             any other 4xx: the forge refused the request as invalid
      │    └── TransitionRefused  GitLab refused a commit-status transition (400)
      ├── ReleaseRefused       a tag or file name the forge would refuse; raised before
      │    │                   any request: the repository or profile must change it
      │    └── AssetTooLarge   a file the forge cannot take
      ├── DownloadTooLarge     a download went over its size cap
      └── MalformedResponse    a 2xx answer whose body is not what the API documents
```
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from runner.exceptions import RunnerError


@dataclass(frozen=True, slots=True)
class RateLimit:
    """What the forge said about its rate limit in one response.

    Attributes:
        retry_after: Seconds to wait, from `Retry-After`, else None.
        reset_at: When the limit resets (Unix epoch seconds), from GitHub's
            `x-ratelimit-reset` or GitLab's `RateLimit-Reset`, else None.
        remaining: Requests left in the window, else None.
        limit: Size of the window, else None.
        resource: Which limit (GitHub `x-ratelimit-resource`, GitLab `RateLimit-Name`).
    """

    retry_after: float | None = None
    reset_at: float | None = None
    remaining: int | None = None
    limit: int | None = None
    resource: str | None = None


def safe_url(url: str) -> str:
    """Return `url` without its user part, query string and fragment, fit for a message."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, safe_host(url), parts.path, "", ""))


def safe_host(url: str) -> str:
    """Return the `host[:port]` of `url`, without any `user:password@` before it."""
    return urlsplit(url).netloc.rpartition("@")[2]


class ForgeError(RunnerError):
    """A forge call failed; the message says what failed and what to do.

    Attributes:
        status_code: The HTTP status of the last response, None if there was none.
        headers: The headers of the last response (empty if none).
        rate_limit: The rate-limit information of the last response, if any.
        transient: True when the same call may well succeed later (an outage, a rate
            limit): the caller should keep the work and try again, not give up.
        final: True when no later attempt can succeed whatever changes on the forge's
            side (a file too large for it, a release that can take no more files): the
            caller should give up at once. Neither flag: a refusal that a person may
            fix (a token, a permission), worth a few more attempts.
    """

    transient: bool = False
    final: bool = False

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        headers: Mapping[str, str] | None = None,
        rate_limit: RateLimit | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.headers: Mapping[str, str] = dict(headers or {})
        self.rate_limit = rate_limit


class ForgeUnavailable(ForgeError):
    """The forge answered 5xx, timed out or could not be reached, even after retries."""

    transient = True


class RateLimited(ForgeError):
    """The forge's rate limit outlasted the retry budget; `rate_limit` says until when."""

    transient = True


class Unauthorized(ForgeError):
    """The forge rejected the credentials (401)."""


class Forbidden(ForgeError):
    """The token is valid but lacks a permission (403 that is not a rate limit)."""


class NotFound(ForgeError):
    """The forge has no such resource, or hides it from this token (404)."""


class ReleaseGone(NotFound):
    """The release disappeared while isorunner published into it (someone deleted it).

    Raised inside an attempt to start it over from what the forge has; raised out of
    one when it kept happening, to be tried again later.
    """

    transient = True


class Conflict(ForgeError):
    """The resource exists already or is being changed concurrently (409/422)."""


class ImmutableRelease(Conflict):
    """The tag's release is published and immutable and lacks files: it takes no more."""

    final = True


class Rejected(ForgeError):
    """The forge refused the request as invalid (400/422 and other 4xx)."""


class TransitionRefused(Rejected):
    """GitLab refused a commit-status transition (400 "Cannot transition status")."""


class ReleaseRefused(ForgeError):
    """The forge would refuse a release's tag or file: a problem of the repository.

    Raised before any request is sent. Final: the release is refused at once (the
    build's files stay); retrying cannot help, a new tag or a changed profile can.
    """

    final = True


class AssetTooLarge(ReleaseRefused):
    """A file is too large for the forge; raised before any request is sent.

    Final: the same file is as large at every attempt.

    Attributes:
        path: The file concerned.
        size: Its size in bytes.
        limit: The forge's limit in bytes (the file must be smaller).
    """

    final = True

    def __init__(self, message: str, *, path: str, size: int, limit: int) -> None:
        super().__init__(message)
        self.path = path
        self.size = size
        self.limit = limit


class DownloadTooLarge(ForgeError):
    """A download went over its size cap; the partial file was removed.

    Attributes:
        max_bytes: The cap that was exceeded.
    """

    def __init__(self, message: str, *, max_bytes: int) -> None:
        super().__init__(message)
        self.max_bytes = max_bytes


class MalformedResponse(ForgeError):
    """A successful answer whose body does not match what the API documents."""

"""The values that cross the seam between the request builders and the transport.

Pure: frozen values, no I/O. The builders in `github.py`, `gitlab.py` and
`github_app.py` return a `ForgeRequest`; `client.ForgeTransport` sends it and hands
back a `ForgeResponse`, which the builders' decoders turn into data or an error.

A `ForgeRequest` carries the token in its headers, so its `repr` redacts every
credential header and the URL's query string: printing or logging one is safe.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeAlias
from urllib.parse import urlsplit

from runner.forges.exceptions import safe_url

JSONValue: TypeAlias = "str | int | float | bool | list[JSONValue] | dict[str, JSONValue] | None"

#: Headers that carry credentials: never logged, never sent to another host.
CREDENTIAL_HEADERS = frozenset({"authorization", "private-token", "job-token"})


@dataclass(frozen=True, slots=True, repr=False)
class ForgeRequest:
    """One HTTP request to a forge, fully built: method, absolute URL, headers, body.

    Attributes:
        method: The HTTP method (`GET`, `POST`, …).
        url: The absolute URL, query string included.
        headers: Every header to send, credentials included.
        json: A JSON body, or None.
        content: A raw body, or None (uploads stream from a file instead).
        action: What the request does, in words, for error messages ("post the commit
            status for owner/repo@abc1234").
        retry_statuses: Extra statuses that mean "try again shortly" for this request
            (GitLab answers 409 while another status update holds its lock).
        idempotent: False for a request that creates something each time it is
            received (a release, a release link). The transport never sends such a
            request again after an ambiguous failure (a 5xx, or a connection lost
            after the request may have arrived), because the forge may have done it:
            the caller looks up what the forge has before creating again.
    """

    method: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    json: JSONValue | None = None
    content: bytes | None = None
    action: str = "call the forge API"
    retry_statuses: frozenset[int] = frozenset()
    idempotent: bool = True

    def __repr__(self) -> str:
        shown = {
            name: ("<redacted>" if name.lower() in CREDENTIAL_HEADERS else value)
            for name, value in self.headers.items()
        }
        return f"ForgeRequest({self.method} {safe_url(self.url)} headers={shown})"

    @property
    def origin(self) -> tuple[str, str]:
        """The scheme and host (with port) the request goes to."""
        parts = urlsplit(self.url)
        return parts.scheme, parts.netloc


@dataclass(frozen=True, slots=True)
class ForgeResponse:
    """A forge's answer: status, headers (lower-case names) and the whole body.

    Attributes:
        status: The HTTP status code.
        headers: The response headers, names in lower case.
        body: The body (empty for streamed downloads, which went to a file).
        action: The `action` of the request this answers.
    """

    status: int
    headers: Mapping[str, str]
    body: bytes
    action: str = "call the forge API"

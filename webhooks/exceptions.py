"""The webhook intake's error tree; each error carries the HTTP status it maps to.

Pure: no I/O. Kept apart from the modules that raise these errors so that they can
all import it without cycles. `webhooks.routes` maps every `WebhookError` to a JSON
response `{"error": message}` with its `status_code`, in one place.

```
WebhookError                 status_code hint (default 400)
├── SignatureMismatch        401  signature or token missing, wrong, or out of its time window
├── MalformedPayload         400  body or required header cannot be read as the forge's format
├── UnsupportedEvent         400  the delivery names no event we could dispatch on
├── UnsupportedMediaType     415  a content type the forge endpoint does not accept
├── PayloadTooLarge          413  body over the configured cap (refused before it is all read)
├── BodyTimeout              408  the body did not arrive within the time limit
├── BodiesInFlight           503  the bodies in flight fill their budget (with Retry-After)
├── ForgeNotConfigured       404  a webhook for a forge this runner has no secret for
├── BuildNotFound            404  no stored build with that id
├── ArtifactNotFound         404  no such file among a build's artifacts
├── InvalidParameter         400  a query parameter of a page or API call is not valid
├── AdminTokenRequired       401  an admin call without the right bearer token
├── AdminDisabled            403  an admin call while no admin token is configured
├── BuildConflict            409  the build's state does not allow the action
└── StoreUnavailable         503  the build store failed; the forge should redeliver
```

Messages say what failed and what to do. They never contain a secret, a token, a
signature or a body: those are attacker-controlled or confidential.
"""

from __future__ import annotations


class WebhookError(Exception):
    """Root of the intake's errors: a delivery or API request that cannot be served.

    Attributes:
        status_code: The HTTP status the error maps to.
        message: What failed and what to do, safe to send back and to log.
    """

    status_code: int = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class SignatureMismatch(WebhookError):
    """The delivery is not signed with the configured secret (or not signed at all)."""

    status_code = 401


class MalformedPayload(WebhookError):
    """The body or a required header cannot be read as the forge's delivery format."""

    status_code = 400


class UnsupportedEvent(WebhookError):
    """The delivery does not say which event it carries, so it cannot be dispatched.

    Events that are named but not built (e.g. `issues`) are not errors: they are
    answered 200 with the reason they were ignored.
    """

    status_code = 400


class UnsupportedMediaType(WebhookError):
    """The delivery's content type is not one the endpoint accepts."""

    status_code = 415


class PayloadTooLarge(WebhookError):
    """The body is over the configured limit."""

    status_code = 413


class BodyTimeout(WebhookError):
    """The body did not arrive within the time limit (a sender holding a connection)."""

    status_code = 408


class BodiesInFlight(WebhookError):
    """The bodies being received at once already fill their budget; retry shortly.

    Attributes:
        retry_after: Seconds the sender should wait (sent as `Retry-After`).
    """

    status_code = 503
    retry_after = 5


class ForgeNotConfigured(WebhookError):
    """A delivery arrived for a forge that has no webhook secret configured."""

    status_code = 404


class BuildNotFound(WebhookError):
    """No build is stored under the requested id."""

    status_code = 404


class ArtifactNotFound(WebhookError):
    """The build has no downloadable file of that name (or the name is not plain)."""

    status_code = 404


class InvalidParameter(WebhookError):
    """A query parameter of a page or API request is not valid."""

    status_code = 400


class AdminTokenRequired(WebhookError):
    """An admin API call without the configured bearer token (missing or wrong).

    Answered with `WWW-Authenticate: Bearer` (RFC 6750 section 3).
    """

    status_code = 401


class AdminDisabled(WebhookError):
    """An admin API call while no admin token is configured: nobody may make it."""

    status_code = 403


class BuildConflict(WebhookError):
    """The build's state does not allow the action (e.g. cancel a finished build)."""

    status_code = 409


class StoreUnavailable(WebhookError):
    """The build store failed: a delivery is answered 503 so that the forge redelivers.

    The only deliberate 5xx: nothing is acknowledged that was not stored.
    """

    status_code = 503

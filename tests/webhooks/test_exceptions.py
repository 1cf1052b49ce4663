"""Tests for webhooks.exceptions: status hints and the documented tree."""

from __future__ import annotations

import re

from webhooks import exceptions
from webhooks.exceptions import WebhookError

EXPECTED_STATUS = {
    "WebhookError": 400,
    "SignatureMismatch": 401,
    "MalformedPayload": 400,
    "UnsupportedEvent": 400,
    "UnsupportedMediaType": 415,
    "PayloadTooLarge": 413,
    "BodyTimeout": 408,
    "BodiesInFlight": 503,
    "ForgeNotConfigured": 404,
    "BuildNotFound": 404,
    "ArtifactNotFound": 404,
    "InvalidParameter": 400,
    "AdminTokenRequired": 401,
    "AdminDisabled": 403,
    "BuildConflict": 409,
    "StoreUnavailable": 503,
}


def _error_classes() -> list[type[WebhookError]]:
    return [
        value
        for value in vars(exceptions).values()
        if isinstance(value, type) and issubclass(value, WebhookError)
    ]


def test_webhook_errors_carry_their_status() -> None:
    """Every error class maps to the status the routes promise."""
    assert {cls.__name__: cls.status_code for cls in _error_classes()} == EXPECTED_STATUS


def test_webhook_error_tree_in_docstring_matches_classes() -> None:
    """The tree drawn in the module docstring lists every subclass with its status."""
    drawn = {
        match.group(1): int(match.group(2))
        for match in re.finditer(r"── (\w+)\s+(\d{3})", exceptions.__doc__ or "")
    }
    subclasses = {
        cls.__name__: cls.status_code for cls in _error_classes() if cls is not WebhookError
    }
    assert drawn == subclasses


def test_webhook_error_keeps_message() -> None:
    """The message is kept as given, for the JSON answer and the log."""
    error = exceptions.PayloadTooLarge("the body is over the 10-byte limit")
    assert error.message == str(error) == "the body is over the 10-byte limit"

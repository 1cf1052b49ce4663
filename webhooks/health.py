"""The readiness answer: which checks ran, which failed, and the HTTP status.

Pure: no I/O. The checks themselves run behind `webhooks.build.ReadinessProbe`
(implemented in `runner.web`); `webhooks.routes` runs the probe and answers with
`readiness`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from webhooks.build import ReadinessCheck


def readiness(checks: Sequence[ReadinessCheck]) -> tuple[int, dict[str, Any]]:
    """Return the status code (200 or 503) and JSON body of `GET /readyz`.

    The body is `{"status": "ready"|"not ready", "checks": [{name, ok, detail}]}`;
    any failed check makes the service not ready.
    """
    ready = all(check.ok for check in checks)
    body = {
        "status": "ready" if ready else "not ready",
        "checks": [
            {"name": check.name, "ok": check.ok, "detail": check.detail} for check in checks
        ],
    }
    return (200 if ready else 503), body

"""The web app's own Prometheus metrics, registered on the registry it is given.

No I/O. The registry is created by the composition root and shared with the runner,
which registers its own metrics on it; nothing here touches prometheus_client's
global default registry.
"""

from __future__ import annotations

import enum

from prometheus_client import CollectorRegistry, Counter

from webhooks.build import Forge


class DeliveryOutcome(enum.StrEnum):
    """What became of a webhook delivery."""

    ACCEPTED = "accepted"  # stored as a new build (202)
    DUPLICATE = "duplicate"  # the store already had it (200)
    IGNORED = "ignored"  # verified, deliberately not built (200)
    REFUSED = "refused"  # signature, format or size refused (4xx)
    ERROR = "error"  # the store failed (503)


class DeliveryMetrics:
    """`isorunner_webhook_deliveries_total{forge, outcome}`, every series from zero.

    Args:
        registry: Where the counter is registered.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self._counter = Counter(
            "isorunner_webhook_deliveries",
            "Webhook deliveries received, by forge and outcome.",
            ["forge", "outcome"],
            registry=registry,
        )
        # Every series exists from zero; the children are looked up once, not per
        # delivery (`labels()` builds and hashes a key each time).
        self._series = {
            (forge, outcome): self._counter.labels(forge=forge.value, outcome=outcome.value)
            for forge in Forge
            for outcome in DeliveryOutcome
        }

    def count(self, forge: Forge, outcome: DeliveryOutcome) -> None:
        """Count one delivery."""
        self._series[forge, outcome].inc()

"""`AppState`: what the app's lifespan yields and every handler reads from `request.state`.

Pure: a type only. `webhooks.app` fills it once at start-up; `webhooks.routes` reads it
through `Request[AppState]`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import NotRequired, TypedDict

from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from webhooks.body import BodyBudget
from webhooks.build import (
    ArtifactSource,
    BootTestSource,
    BuildBrowser,
    BuildCatalog,
    BuildControl,
    BuildLogSource,
    BuildSink,
    ReadinessProbe,
    SigningKey,
)
from webhooks.config import WebhookConfig
from webhooks.live import LogFollowers
from webhooks.metrics import DeliveryMetrics
from webhooks.pages import Pages


class AppState(TypedDict):
    """What the lifespan yields and every handler reads from `request.state`."""

    config: WebhookConfig
    sink: BuildSink
    catalog: BuildCatalog
    logs: BuildLogSource | None
    clock: Callable[[], datetime]
    deliveries: DeliveryMetrics
    bodies: BodyBudget
    # The keys below are always set by `create_app`; NotRequired lets a test drive
    # the intake at the ASGI level with only the keys above.
    browser: NotRequired[BuildBrowser | None]
    control: NotRequired[BuildControl | None]
    artifacts: NotRequired[ArtifactSource | None]
    boot_tests: NotRequired[BootTestSource | None]
    readiness: NotRequired[ReadinessProbe | None]
    admin_token: NotRequired[SecretStr | None]
    registry: NotRequired[CollectorRegistry]
    pages: NotRequired[Pages]
    followers: NotRequired[LogFollowers]
    signing_key: NotRequired[SigningKey | None]

"""Tests for webhooks.app: the lifespan enters the caller's resources around serving."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import UTC

import pytest

from tests.webhooks.fakes import MemoryStore
from tests.webhooks.testclient import TestClient
from webhooks.app import create_app, utc_now
from webhooks.config import WebhookConfig

CONFIG = WebhookConfig(public_url="https://ci.example.org", repos=())


def _recording_hook(
    name: str, events: list[str], *, fail: bool = False
) -> Callable[[], contextlib.AbstractAsyncContextManager[object]]:
    @contextlib.asynccontextmanager
    async def hook() -> AsyncIterator[object]:
        events.append(f"enter {name}")
        if fail:
            raise RuntimeError(f"{name} could not start")
        try:
            yield name
        finally:
            events.append(f"exit {name}")

    return hook


def test_create_app_enters_hooks_in_order_and_exits_in_reverse() -> None:
    """Hooks are entered before the first request and exited in reverse order at shutdown."""
    events: list[str] = []
    store = MemoryStore()
    app = create_app(
        CONFIG,
        sink=store,
        catalog=store,
        lifespan_hooks=[_recording_hook("store", events), _recording_hook("worker", events)],
    )
    with TestClient(app) as client:
        events.append("serving")
        assert client.get("/api/builds/1").status_code == 404
    assert events == ["enter store", "enter worker", "serving", "exit worker", "exit store"]


def test_create_app_unwinds_started_hooks_when_one_fails() -> None:
    """When a hook fails to start, the app does not start and earlier hooks are exited."""
    events: list[str] = []
    store = MemoryStore()
    app = create_app(
        CONFIG,
        sink=store,
        catalog=store,
        lifespan_hooks=[
            _recording_hook("store", events),
            _recording_hook("bad", events, fail=True),
        ],
    )
    with pytest.raises(RuntimeError, match="bad could not start"), TestClient(app):
        pass
    assert events == ["enter store", "enter bad", "exit store"]


def test_utc_now_is_aware_utc() -> None:
    """The default clock returns timezone-aware UTC times."""
    assert utc_now().tzinfo is UTC

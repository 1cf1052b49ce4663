"""Shared test fixtures and the capability rule for integration tests.

Integration tests call `require(...)` for what the host must offer (root, a tool,
the stand-in base). Locally a missing capability skips the test and names it; under
CI (`CI=true`) nothing may skip for that reason, so the same call fails the test.
"""

from __future__ import annotations

import os
import shutil

import pytest
import stamina
from hypothesis import settings

# No per-example deadline: it is a timing assert, and timing belongs in bench/ (a busy
# CI machine must not turn a slow example into a failure).
settings.register_profile("isorunner", deadline=None, print_blob=True)
settings.load_profile("isorunner")


def require(condition: bool, capability: str) -> None:
    """Skip (locally) or fail (under CI) when the host lacks `capability`.

    Args:
        condition: True when the capability is present.
        capability: What is missing, in words a developer can act on.
    """
    if condition:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must provide: {capability} (scripts/install should have set it up)")
    pytest.skip(f"host lacks: {capability}")


def require_root() -> None:
    """Require running as root."""
    require(os.geteuid() == 0, "root privileges")


def require_tool(name: str) -> str:
    """Require an executable on PATH and return its path."""
    path = shutil.which(name)
    require(path is not None, f"the `{name}` command")
    assert path is not None
    return path


@pytest.fixture(autouse=True)
def _stamina_testing() -> object:
    """Retries run once, without backoff, in every test."""
    with stamina.set_testing(True, attempts=1):
        yield None


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio, the loop uvicorn uses."""
    return "asyncio"

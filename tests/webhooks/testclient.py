"""Starlette's `TestClient`, imported without its httpx deprecation warning.

Starlette 1.10 warns at import when its test client runs on `httpx` instead of the
`httpx2` fork; the project's dependencies (pyproject.toml) pin `httpx`, and pytest
turns warnings into errors. That one warning, and only it, is silenced here; all
app tests import `TestClient` from this module.
"""

from __future__ import annotations

import warnings

from starlette.exceptions import StarletteDeprecationWarning

with warnings.catch_warnings():
    warnings.filterwarnings(
        "ignore",
        message="Using `httpx` with `starlette.testclient` is deprecated",
        category=StarletteDeprecationWarning,
    )
    from starlette.testclient import TestClient

__all__ = ["TestClient"]

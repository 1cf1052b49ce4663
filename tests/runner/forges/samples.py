"""Test helper: load recorded forge responses from `tests/samples/forges/`.

Pure apart from reading the sample files. Each case is a directory holding
`<status>.json` (response headers) and `body` (the raw response bytes).
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx

SAMPLES = Path(__file__).parents[2] / "samples" / "forges"


def sample(forge: str, case: str, status: int) -> httpx.Response:
    """Return the recorded response `forge/case/status` as an `httpx.Response`."""
    folder = SAMPLES / forge / case
    headers: dict[str, str] = json.loads((folder / f"{status}.json").read_text())
    return httpx.Response(status, headers=headers, content=(folder / "body").read_bytes())

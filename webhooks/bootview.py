"""How a build's boot tests are shown: on its page, in the JSON API, and the screenshot.

Pure: values to template and JSON data, and the screenshot's name check. The files
themselves are opened by `webhooks.artifacts` (relative to the build's `boot/`
directory, never following a link); serial console lines are the guest's text and are
escaped by the templates like every other value.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from webhooks.artifacts import is_plain_name
from webhooks.build import BootTestRecord

OUTCOME_WORDS = {
    "passed": "booted",
    "failed": "failed",
    "timed_out": "timed out",
    "error": "could not run",
}


def is_screenshot_name(name: str) -> bool:
    """Whether `name` can be a boot test screenshot: a plain file name ending in .png."""
    return is_plain_name(name) and name.endswith(".png")


def screenshot_url(build_id: int, test: BootTestRecord) -> str | None:
    """Where the page and the API link the test's screenshot, or None without one."""
    if not is_screenshot_name(test.screenshot):
        return None
    return f"/builds/{int(build_id)}/boot/{quote(test.screenshot)}"


def boot_json(build_id: int, test: BootTestRecord) -> dict[str, Any]:
    """One boot test as the JSON API shows it."""
    return {
        "name": test.name,
        "firmware": test.firmware,
        "medium": test.medium,
        "mode": test.mode,
        "outcome": test.outcome,
        "required": test.required,
        "accelerator": test.accelerator,
        "seconds": test.seconds,
        "reason": test.reason,
        "command_line": test.command_line,
        "screenshot_url": screenshot_url(build_id, test),
        "serial_tail": list(test.serial_tail),
    }


def boot_context(build_id: int, tests: Sequence[BootTestRecord]) -> list[dict[str, Any]]:
    """The build page's values for each boot test (the picture first, then the console)."""
    return [
        {
            **boot_json(build_id, test),
            "outcome_text": OUTCOME_WORDS.get(test.outcome, test.outcome),
            "policy": "required" if test.required else "advisory",
            "seconds_text": f"{test.seconds:.1f} s",
            "serial_text": "\n".join(test.serial_tail),
        }
        for test in tests
    ]

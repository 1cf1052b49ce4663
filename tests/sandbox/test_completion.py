"""Tests for sandbox.sandbox.run_to_completion: clean-up outlives cancellation."""

from __future__ import annotations

import asyncio

import anyio
import pytest

from sandbox.sandbox import run_to_completion


async def slow_cleanup(done: list[str]) -> str:
    """Clean-up work that needs several awaits to finish."""
    for step in range(5):
        await asyncio.sleep(0.01)
        done.append(f"step {step}")
    return "clean"


@pytest.mark.anyio
async def test_run_to_completion_finishes_before_an_anyio_cancel_propagates() -> None:
    """Cancelling the caller's anyio scope waits for the work, then cancels."""
    done: list[str] = []
    finished_first = False
    with anyio.CancelScope() as scope:
        scope.cancel()
        try:
            await anyio.sleep(1)
        finally:
            await run_to_completion(slow_cleanup(done))
            finished_first = len(done) == 5
    assert scope.cancelled_caught
    assert finished_first


@pytest.mark.anyio
async def test_run_to_completion_survives_native_task_cancel() -> None:
    """A plain task.cancel() during the work is delivered only after the work is done."""
    done: list[str] = []

    async def caller() -> None:
        await run_to_completion(slow_cleanup(done))

    task = asyncio.ensure_future(caller())
    await asyncio.sleep(0.015)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert done == [f"step {n}" for n in range(5)]


@pytest.mark.anyio
async def test_run_to_completion_returns_the_result() -> None:
    """Without cancellation it is a plain await."""
    assert await run_to_completion(slow_cleanup([])) == "clean"

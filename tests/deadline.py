"""A hang guard for checks on hostile input: the check runs in a child process.

I/O: starts one `spawn` child per call. A backtracking pattern on the inputs these
tests build runs for hours or days; a linear check returns in microseconds. The guard
waits `HANG_SECONDS` (a million times the expected cost, so a busy machine never trips
it) and then kills the child and fails, instead of hanging the test run. It measures
nothing: how fast a check is belongs in `bench/`.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from typing import Final, TypeVar

HANG_SECONDS: Final = 60.0
"""How long a child may run before the check is called hung."""

_T = TypeVar("_T")


def returns(function: Callable[..., _T], *args: object, **kwargs: object) -> _T:
    """Call `function(*args, **kwargs)` in a child process and return its result.

    Args:
        function: A module-level function or a bound method of a picklable object.
        args: Its positional arguments (pickled to the child).
        kwargs: Its keyword arguments (pickled to the child).

    Raises:
        AssertionError: The call did not return within `HANG_SECONDS`; the child is
            killed.
    """
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        pending = pool.apply_async(function, args, kwargs)
        try:
            result: _T = pending.get(timeout=HANG_SECONDS)
        except multiprocessing.TimeoutError:
            raise AssertionError(
                f"{function.__module__}.{function.__qualname__} did not return within "
                f"{HANG_SECONDS:.0f} s on a hostile input: it backtracks"
            ) from None
    return result

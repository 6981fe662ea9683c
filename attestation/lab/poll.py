"""Waiting on the world with a deadline: the one poll of the lab, the tests and the benches.

Never ``sleep`` for a condition: poll it, and fail naming what did not happen and what was seen
last. ``hold_for`` is the other half: a condition that must stay true for a while (a node that
must stay Trusted while its neighbour is attacked), checked on every tick, not once at the end.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

__all__ = ["hold_for", "wait_for"]


def wait_for(what: str, check: Callable[[], Any], timeout: float = 30, every: float = 0.05) -> Any:
    """Poll ``check`` until it returns something truthy and return that; raise TimeoutError
    naming ``what`` and the last value seen. ``check`` may raise to give up early."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise TimeoutError(f"{what}: not within {timeout:.0f}s (last seen: {last!r})")


def hold_for(seconds: float, check: Callable[[], object], every: float = 0.1) -> int:
    """Call ``check`` every ``every`` seconds for ``seconds``; it asserts what must hold (an
    AssertionError ends the wait at once). Returns how many times it was checked (at least 1)."""
    deadline = time.monotonic() + seconds
    checks = 0
    while True:
        check()
        checks += 1
        if time.monotonic() >= deadline:
            return checks
        time.sleep(every)

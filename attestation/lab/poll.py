"""Waiting on the world with a deadline: the one poll of the lab, the tests and the benches.

Never ``sleep`` for a condition: poll it, and fail naming what did not happen and what was seen
last. ``hold_for`` is the other half: a condition that must stay true for a while (a node that
must stay Trusted while its neighbour is attacked), checked on every tick, not once at the end.
``Lapses`` is the same while something else happens: a thread records every moment a condition
did not hold (a verdict that expired during a failover), to be judged afterwards.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any

__all__ = ["Lapses", "hold_for", "wait_for"]


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


class Lapses:
    """While the ``with`` block runs, a thread calls ``check`` every ``every`` seconds (for at
    most ``limit``); every name it returns (a node whose verdict lapsed, say) is recorded in
    ``seen`` with the monotonic time. ``polls`` counts the checks made."""

    def __init__(
        self, check: Callable[[], Iterable[str]], every: float = 0.1, limit: float = 300.0
    ) -> None:
        self._check, self._every, self._limit = check, every, limit
        self.seen: list[tuple[float, str]] = []
        self.polls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="lapses")

    def __enter__(self) -> Lapses:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        deadline = time.monotonic() + self._limit
        while not self._stop.is_set() and time.monotonic() < deadline:
            now = time.monotonic()
            self.seen.extend((now, name) for name in self._check())
            self.polls += 1
            self._stop.wait(self._every)

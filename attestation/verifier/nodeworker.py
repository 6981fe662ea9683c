"""One node's attestation loop: what the verifier keeps per node, and when its rounds run.

A round runs when the pull interval passes or a push from the node's agent wakes it, only while
this replica is active (the leader, or no election), at most ``concurrency`` at once across
nodes; a round that raises is logged and the loop goes on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime

from prometheus_client import Gauge

from attestation.core.verdict import AttestationState

__all__ = ["NodeWorker", "run_node"]

log = logging.getLogger(__name__)


@dataclass
class NodeWorker:
    name: str
    #: This node's evidence-age gauge (prometheus' labels() takes a lock and a lookup per call).
    evidence_age: Gauge
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    state: AttestationState | None = None
    ak_name: bytes = b""
    task: asyncio.Task[None] | None = None
    #: When the last verdict on fresh evidence was reached (None: not yet).
    last_verified: datetime | None = None
    #: Whether this process has judged a round of the node's log. The first round reads what was
    #: written while it did not watch pods (before it started, from zero or its checkpoint):
    #: there, a uid no pod has may be a pod deleted meanwhile, not one made up.
    watched: bool = False


async def run_node(
    worker: NodeWorker,
    round_: Callable[[NodeWorker], Awaitable[None]],
    interval: float,
    active: asyncio.Event,
    stop: asyncio.Event,
    semaphore: asyncio.Semaphore,
) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        if not active.is_set():
            await active.wait()
        # Sleep until the interval passes or a push wakes the node. A timer handle, not
        # asyncio.wait_for, which wraps the wait in a task of its own every round.
        timer = loop.call_later(interval, worker.wake.set)
        try:
            await worker.wake.wait()
        finally:
            timer.cancel()
        worker.wake.clear()
        if not active.is_set():
            continue
        try:
            async with semaphore:
                await round_(worker)
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug must not stop the node's attestation forever
            log.exception("round for node %s failed", worker.name)

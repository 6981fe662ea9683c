"""Which agents' pushes may wake a node's round, and when: the verifier's side of
``core.pushauth`` and a token bucket per node (``core.ratelimit``).

Keys live in this process's memory only. Every enrollment this verifier makes installs a fresh
one (the agent derives the same key from the credential it activated), and a verifier that
starts, takes the lead over or gets it back re-enrolls every node before attesting it; until
then a node's pushes are refused (``push.not_enrolled``), which costs latency only: pull rounds
run every interval regardless.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from attestation.core.pushauth import Push, check_push
from attestation.core.ratelimit import TokenBucket

__all__ = ["Admission", "PushGate"]


@dataclass(frozen=True, slots=True)
class Admission:
    """What to do with a push: refused (a failure id), or wake the node now (``wake``), or
    after ``delay`` seconds (the node's rate is spent), or not at all (a wake is pending)."""

    refused: str | None = None
    wake: bool = False
    delay: float = 0.0


@dataclass(slots=True)
class _Node:
    key: bytes
    last_counter: int = 0
    bucket: TokenBucket | None = None
    #: A deferred wake is scheduled: later pushes join it instead of adding their own.
    pending: bool = False


@dataclass
class PushGate:
    """Per-node push keys, replay counters and rate. ``rate`` accepted pushes a second wake a
    node, ``burst`` at once; pushes past that are coalesced into one deferred wake."""

    rate: float = 5.0
    burst: float = 5.0
    clock: Callable[[], float] = time.monotonic
    _nodes: dict[str, _Node] = field(default_factory=dict)

    def install(self, node: str, key: bytes) -> None:
        """A new enrollment's key: the counter starts over, the bucket is kept (a node must
        not get a fresh burst by making the verifier re-enroll it)."""
        before = self._nodes.get(node)
        self._nodes[node] = _Node(key, bucket=before.bucket if before else None)

    def forget(self, node: str) -> None:
        self._nodes.pop(node, None)

    def tracked(self) -> int:
        return len(self._nodes)

    def admit(self, push: Push) -> Admission:
        entry = self._nodes.get(push.node)
        refused = check_push(entry.key if entry else None, entry.last_counter if entry else 0, push)
        if refused is not None or entry is None:
            return Admission(refused=refused or "push.not_enrolled")
        entry.last_counter = push.counter
        if entry.pending:
            return Admission()
        now = self.clock()
        bucket = entry.bucket or TokenBucket.full(self.rate, self.burst, now)
        entry.bucket, delay = bucket.take(now)
        if delay > 0:
            entry.pending = True
            return Admission(delay=delay)
        return Admission(wake=True)

    def fired(self, node: str) -> None:
        """The deferred wake of ``node`` ran."""
        entry = self._nodes.get(node)
        if entry is not None:
            entry.pending = False

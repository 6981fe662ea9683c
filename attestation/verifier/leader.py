"""Leader election on a coordination.k8s.io/v1 Lease: only the leader attests and writes.

The leader renews every ``duration / 3``; a standby takes the lease once ``renewTime +
leaseDurationSeconds`` has passed, so it takes over within ``duration + duration / 3`` of the
leader's last renewal. Updates carry the lease's resourceVersion: two candidates racing for an
expired lease cannot both win (the loser gets a 409).

Every write the leader makes is fenced (``Fence``): ``holds`` answers from memory whether the last
successful renewal is recent enough that no standby can have taken the lease (a leader paused —
SIGSTOP, a stalled node, a long GC — resumes believing it leads); ``confirm`` asks the API server
when a write finds the object changed under it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime, timedelta
from typing import Any, Protocol

from attestation.adapters.kube import Kube, KubeError, lease_path
from attestation.core.clock import Clock, format_time, utcnow
from attestation.core.freshness import lease_expired

__all__ = ["Fence", "LeaderElector", "Unfenced"]

log = logging.getLogger(__name__)

#: A leader stops writing once its last renewal is this share of the lease old (client-go's
#: renewDeadline: 10 s of a 15 s lease): the margin for a standby's clock running ahead.
_RENEW_DEADLINE = 2 / 3


class Fence(Protocol):
    """May this replica write as the leader now?"""

    def holds(self) -> bool:
        """From memory, cheap: checked before every write."""
        ...

    def confirm(self) -> bool:
        """From the API server, blocking: checked when a write found the object changed."""
        ...


class Unfenced:
    """One verifier without election: every write is its own."""

    def holds(self) -> bool:
        return True

    def confirm(self) -> bool:
        return True


class LeaderElector:
    def __init__(
        self,
        kube: Kube,
        namespace: str,
        name: str,
        identity: str,
        duration: float,
        *,
        clock: Clock = utcnow,
    ) -> None:
        self._kube = kube
        self._namespace = namespace
        self._name = name
        self.identity = identity
        self._duration = duration
        self._clock = clock
        self.is_leader = asyncio.Event()
        self.lost = asyncio.Event()
        #: When the last acquire or renew that succeeded was sent (this replica's clock).
        self._renewed: datetime | None = None

    def holds(self) -> bool:
        """Leader, and renewed recently enough that no standby can have taken over since."""
        renewed = self._renewed
        deadline = timedelta(seconds=self._duration * _RENEW_DEADLINE)
        return (
            self.is_leader.is_set() and renewed is not None and self._clock() - renewed < deadline
        )

    def confirm(self) -> bool:
        """The Lease in the API server names this replica and has not expired."""
        try:
            lease = self._kube.get(lease_path(self._namespace, self._name))
        except KubeError as e:
            log.warning("leader election: cannot confirm the lease: %s", e)
            return False
        spec = (lease or {}).get("spec") or {}
        return spec.get("holderIdentity") == self.identity and not lease_expired(
            spec, self._clock(), self._duration
        )

    async def run(self, stop: asyncio.Event) -> None:
        period = self._duration / 3
        while not stop.is_set():
            try:
                leading = await asyncio.to_thread(self._try_acquire_or_renew)
            except KubeError as e:
                log.warning("leader election: %s", e)
                leading = False
            if not leading:
                self._renewed = None
            if leading and not self.is_leader.is_set():
                log.info("%s became the leader", self.identity)
                self.lost.clear()
                self.is_leader.set()
            elif not leading and self.is_leader.is_set():
                log.warning("%s lost the leadership", self.identity)
                self.is_leader.clear()
                self.lost.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), period)

    def _try_acquire_or_renew(self) -> bool:
        now = self._clock()
        leading = self._acquire_or_renew(now)
        if leading:
            self._renewed = now  # when it was sent: the lease may be older than the answer
        return leading

    def _acquire_or_renew(self, now: datetime) -> bool:
        stamp = format_time(now, "microseconds")  # the API's MicroTime
        path = lease_path(self._namespace, self._name)
        lease = self._kube.get(path)
        spec: dict[str, Any] = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": max(1, int(self._duration)),
            "renewTime": stamp,
        }
        if lease is None:
            spec["acquireTime"] = stamp
            try:
                self._kube.create(
                    lease_path(self._namespace),
                    {"metadata": {"name": self._name, "namespace": self._namespace}, "spec": spec},
                )
            except KubeError as e:
                if e.status == 409:
                    return False
                raise
            return True
        current = lease.get("spec") or {}
        holder = current.get("holderIdentity")
        if holder != self.identity:
            if not lease_expired(current, now, self._duration):
                return False
            spec["acquireTime"] = stamp
            spec["leaseTransitions"] = int(current.get("leaseTransitions") or 0) + 1
        else:
            spec["acquireTime"] = current.get("acquireTime") or stamp
            spec["leaseTransitions"] = int(current.get("leaseTransitions") or 0)
        lease["spec"] = spec
        try:
            self._kube.replace(path, lease)
        except KubeError as e:
            if e.status == 409:
                return False
            raise
        return True

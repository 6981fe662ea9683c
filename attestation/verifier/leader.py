"""Leader election on a coordination.k8s.io/v1 Lease: only the leader attests and writes.

The leader renews every ``duration / 3``; a standby takes the lease once ``renewTime +
leaseDurationSeconds`` has passed, so it takes over within ``duration + duration / 3`` of the
leader's last renewal. Updates carry the lease's resourceVersion: two candidates racing for an
expired lease cannot both win (the loser gets a 409).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from attestation.adapters.kube import Kube, KubeError, lease_path
from attestation.core.clock import Clock, format_time, utcnow
from attestation.core.freshness import lease_expired

__all__ = ["LeaderElector"]

log = logging.getLogger(__name__)


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

    async def run(self, stop: asyncio.Event) -> None:
        period = self._duration / 3
        while not stop.is_set():
            try:
                leading = await asyncio.to_thread(self._try_acquire_or_renew)
            except KubeError as e:
                log.warning("leader election: %s", e)
                leading = False
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

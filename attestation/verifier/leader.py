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
from datetime import UTC, datetime, timedelta
from typing import Any

from attestation.core.clock import parse_time
from attestation.kube.client import Kube, KubeError, lease_path

log = logging.getLogger(__name__)


def _micro(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    def __init__(self, kube: Kube, namespace: str, name: str, identity: str, duration: float):
        self._kube = kube
        self._namespace = namespace
        self._name = name
        self.identity = identity
        self._duration = duration
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
        now = datetime.now(UTC)
        path = lease_path(self._namespace, self._name)
        lease = self._kube.get(path)
        spec: dict[str, Any] = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": max(1, int(self._duration)),
            "renewTime": _micro(now),
        }
        if lease is None:
            spec["acquireTime"] = _micro(now)
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
            renewed = current.get("renewTime")
            try:
                expired = (
                    renewed is None
                    or parse_time(renewed, "renewTime")
                    + timedelta(
                        seconds=float(current.get("leaseDurationSeconds") or self._duration)
                    )
                    < now
                )
            except ValueError:
                expired = True
            if not expired:
                return False
            spec["acquireTime"] = _micro(now)
            spec["leaseTransitions"] = int(current.get("leaseTransitions") or 0) + 1
        else:
            spec["acquireTime"] = current.get("acquireTime") or _micro(now)
            spec["leaseTransitions"] = int(current.get("leaseTransitions") or 0)
        lease["spec"] = spec
        try:
            self._kube.replace(path, lease)
        except KubeError as e:
            if e.status == 409:
                return False
            raise
        return True

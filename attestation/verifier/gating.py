"""Scheduling gates: the webhook gates every NF pod at creation (``trustgate.io/attestation``);
the verifier lifts a pod's gate once some node is trusted and a policy for the pod's network
function is loaded. Until then the scheduler has nowhere safe to put it, so it does not try.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable

from attestation.core.kubeobject import KubeObject
from attestation.core.names import SCHEDULING_GATE
from attestation.core.verdict import PodInfo, PolicySet
from attestation.verifier.publisher import Publisher

__all__ = ["Gates"]


class Gates:
    """Lifts gates when woken (an NF pod changed) or every second, while ``active``."""

    def __init__(
        self,
        pods: Callable[[], Iterable[KubeObject]],
        publisher: Publisher,
        policies: PolicySet,
        active: asyncio.Event,
    ) -> None:
        self._pods = pods
        self._publisher = publisher
        self._policies = policies
        self._active = active
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 1.0)
            self._wake.clear()
            if self._active.is_set() and self._publisher.any_trusted():
                await self._lift()

    async def _lift(self) -> None:
        for pod in list(self._pods()):
            gates = [g.get("name") for g in (pod.get("spec") or {}).get("schedulingGates") or []]
            info = PodInfo.of(pod)
            if SCHEDULING_GATE not in gates or info is None:
                continue
            if info.network_function not in self._policies.by_network_function:
                continue
            await self._publisher.ungate(pod, gates.index(SCHEDULING_GATE))

"""Scheduling gates: the webhook gates every NF pod at creation (``trustgate.io/attestation``);
the verifier lifts a pod's gate once some node is trusted and a policy for the pod's network
function is loaded. Until then the scheduler has nowhere safe to put it, so it does not try.

A pod whose network function has no loaded policy would otherwise wait without a word: it gets
the ``trustgate.io/gated`` annotation and a ``TrustgateNoPolicy`` Event saying so, once (the
annotation is the memory, so a restarted verifier does not repeat the Event); both the policy's
arrival and the lifted gate clear the annotation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable

from attestation.adapters.kube import KubeError, event_path, pod_path
from attestation.core.clock import Clock, utcnow
from attestation.core.enforcement import actions
from attestation.core.kubeobject import KubeObject
from attestation.core.names import (
    GATED_ANNOTATION,
    SCHEDULING_GATE,
)
from attestation.core.verdict import PodInfo, PolicySet
from attestation.verifier.events import no_policy_event, no_policy_message
from attestation.verifier.publisher import Publisher

__all__ = ["Gates"]

log = logging.getLogger(__name__)


class Gates:
    """Lifts gates when woken (an NF pod changed) or every second, while ``active``.

    ``policies`` is the loaded set, or a callable returning the current one (the live set the
    RuntimePolicy watch swaps)."""

    def __init__(
        self,
        pods: Callable[[], Iterable[KubeObject]],
        publisher: Publisher,
        policies: PolicySet | Callable[[], PolicySet],
        active: asyncio.Event,
        *,
        clock: Clock = utcnow,
    ) -> None:
        self._pods = pods
        self._publisher = publisher
        self._policies = policies if callable(policies) else (lambda: policies)
        self._active = active
        self._clock = clock
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        #: pods told since their annotation may not be in the informer yet (uids; pruned)
        self._told: set[str] = set()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 1.0)
            self._wake.clear()
            if self._active.is_set():
                await self._lift(self._publisher.any_trusted())

    async def _lift(self, any_trusted: bool) -> None:
        loaded = self._policies().by_network_function
        pods = list(self._pods())
        self._told &= {str((p.get("metadata") or {}).get("uid", "")) for p in pods}
        for pod in pods:
            gates = [g.get("name") for g in (pod.get("spec") or {}).get("schedulingGates") or []]
            info = PodInfo.of(pod)
            if SCHEDULING_GATE not in gates or info is None:
                continue
            if not actions(self._publisher.remediator.mode_of(info.namespace)).gate:
                # gated while its namespace enforced, now warn/audit: nothing is gated there
                await self._publisher.ungate(pod, gates.index(SCHEDULING_GATE))
                continue
            said = ((pod.get("metadata") or {}).get("annotations") or {}).get(GATED_ANNOTATION)
            if info.network_function not in loaded:
                if said is None and info.uid not in self._told:
                    self._told.add(info.uid)
                    await self._tell_no_policy(pod, info.network_function)
                continue
            self._told.discard(info.uid)
            if said is not None:
                await self._annotate(pod, None)
            if any_trusted:
                await self._publisher.ungate(pod, gates.index(SCHEDULING_GATE))

    async def _tell_no_policy(self, pod: KubeObject, nf: str) -> None:
        if not await self._annotate(pod, no_policy_message(nf)):
            return
        meta = pod.get("metadata") or {}
        _ns, body = no_policy_event(
            pod, nf, instance=self._publisher.settings.identity, now=self._clock()
        )
        try:
            await asyncio.to_thread(
                self._publisher.kube.create, event_path(meta.get("namespace", "")), body
            )
        except KubeError as e:
            log.warning("event not written: %s", e)

    async def _annotate(self, pod: KubeObject, value: str | None) -> bool:
        meta = pod.get("metadata") or {}
        ns, name = meta.get("namespace", ""), meta.get("name", "")
        patch = {"metadata": {"annotations": {GATED_ANNOTATION: value}}}
        try:
            await asyncio.to_thread(self._publisher.kube.merge_patch, pod_path(ns, name), patch)
        except KubeError as e:
            if e.status != 404:
                log.warning("pod %s/%s: %s not written: %s", ns, name, GATED_ANNOTATION, e)
            return False
        return True

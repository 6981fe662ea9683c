"""The pod side and the Events of what the publisher writes: a pod's trust annotations and its
Events, a node's Events, the remediation's outcome, a lifted scheduling gate. A base class of
``Publisher`` (which decides when); kept apart so each file stays readable on its own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from attestation.adapters.kube import Kube, KubeError, event_path, node_path, pod_path
from attestation.core.clock import Clock
from attestation.core.names import SCHEDULING_GATE, NodeState
from attestation.core.status import PodTrustView, pod_annotations
from attestation.core.verdict import PodInfo
from attestation.verifier.events import Event, node_event, pod_event, remediation_event
from attestation.verifier.metrics import VerifierMetrics
from attestation.verifier.remediate import Outcome, PodTarget
from attestation.verifier.settings import VerifierSettings

__all__ = ["PodSide"]

log = logging.getLogger(__name__)


class PodSide:
    """What the publisher writes about pods (and its Events); the attributes are the
    publisher's, set in its ``__init__``."""

    kube: Kube
    settings: VerifierSettings
    _metrics: VerifierMetrics
    _clock: Clock

    async def audit(self, record: Mapping[str, Any]) -> None:
        raise NotImplementedError

    async def _call(self, fn: Any, *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)

    # -- events, annotations, remediation ---------------------------------------------------------

    async def _emit(self, ev: Event | None) -> None:
        if ev is None:
            return
        ns, body = ev
        try:
            await self._call(self.kube.create, event_path(ns), body)
        except KubeError as e:
            log.warning("event not written: %s", e)

    async def _node_event(self, node: str, state: NodeState, node_reason: str) -> None:
        obj = await self._call(self.kube.get, node_path(node))
        uid = (obj or {}).get("metadata", {}).get("uid", "")
        instance = self.settings.identity
        await self._emit(
            node_event(node, uid, state, node_reason, instance=instance, now=self._clock())
        )

    async def _pod_changed(
        self, info: PodInfo, before: PodTrustView | None, view: PodTrustView, now: datetime
    ) -> None:
        try:
            await self._call(
                self.kube.merge_patch,
                pod_path(info.namespace, info.name),
                {"metadata": {"annotations": pod_annotations(view, now)}},
            )
        except KubeError as e:
            if e.status != 404:
                log.warning("pod %s/%s: annotations not written: %s", info.namespace, info.name, e)
            return
        instance = self.settings.identity
        await self._emit(pod_event(info, before, view, instance=instance, now=self._clock()))

    async def _remediated(self, target: PodTarget, outcome: Outcome, detail: str) -> None:
        self._metrics.evictions.labels(outcome).inc()
        await self.audit(
            {
                "kind": "action",
                "action": "remediate",
                "outcome": outcome,
                "namespace": target.namespace,
                "pod": target.name,
                "uid": target.uid,
                "detail": detail,
            }
        )
        instance = self.settings.identity
        await self._emit(
            remediation_event(target, outcome, detail, instance=instance, now=self._clock())
        )

    async def ungate(self, pod: Mapping[str, Any], index: int) -> None:
        meta = pod.get("metadata") or {}
        ns, name = meta.get("namespace", ""), meta.get("name", "")
        ops = [
            {"op": "test", "path": f"/spec/schedulingGates/{index}/name", "value": SCHEDULING_GATE},
            {"op": "remove", "path": f"/spec/schedulingGates/{index}"},
        ]
        try:
            await self._call(self.kube.json_patch, pod_path(ns, name), ops)
        except KubeError as e:
            if e.status not in (404, 409, 422):
                log.warning("pod %s/%s: gate not lifted: %s", ns, name, e)
            return
        await self.audit(
            {
                "kind": "action",
                "action": "ungate",
                "namespace": ns,
                "pod": name,
                "uid": meta.get("uid", ""),
            }
        )

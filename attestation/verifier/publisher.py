"""Make a verdict visible in Kubernetes, writing only what changed.

Per node: the signed NodeAttestation status (rewritten on change, and every ``refresh`` seconds so
``expiresAt`` keeps moving), the ``trustgate.io/attested`` label and ``trustgate.io/untrusted``
taint, Events on transitions. Per protected pod: the trust annotations (patched only when the
state or reason changes), Events, and remediation of a divergent pod. Every change and action
goes to the audit trail first.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from attestation.core.clock import parse_time
from attestation.core.names import (
    ATTESTED_LABEL,
    NODEATTESTATION_API_VERSION,
    NODEATTESTATION_KIND,
    SCHEDULING_GATE,
    UNTRUSTED_TAINT,
    NodeState,
)
from attestation.core.signing import sign_status
from attestation.core.status import (
    PodTrustView,
    node_status,
    pod_annotations,
    pod_trust,
    reason,
)
from attestation.core.types import Failure, NodeVerdict
from attestation.core.verdict import PodInfo
from attestation.kube.client import (
    Kube,
    KubeError,
    event_path,
    node_path,
    nodeattestation_path,
    pod_path,
)
from attestation.verifier.auditlog import AuditLog, audit_time
from attestation.verifier.events import event
from attestation.verifier.metrics import VerifierMetrics
from attestation.verifier.remediate import Outcome, PodTarget, Remediator
from attestation.verifier.settings import VerifierSettings

log = logging.getLogger(__name__)


@dataclass
class Published:
    """What this verifier last wrote for a node (or found in the cluster at start)."""

    state: NodeState
    reason: str
    verified_at: datetime
    expires_at: datetime
    sequence: int
    pods: dict[str, PodTrustView] = field(default_factory=dict)
    labelled: bool = False


class Publisher:
    def __init__(
        self,
        kube: Kube,
        settings: VerifierSettings,
        signing_key: Ed25519PrivateKey,
        audit_log: AuditLog,
        metrics: VerifierMetrics,
    ) -> None:
        self.kube = kube
        self.settings = settings
        self._key = signing_key
        self._audit = audit_log
        self._metrics = metrics
        self.published: dict[str, Published] = {}
        self._unknown_since: dict[str, datetime] = {}
        self._audit_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit")
        self._sequence = 0
        self.remediator = Remediator(
            kube, settings.remediation, settings.eviction_deadline, self._remediated
        )

    async def close(self) -> None:
        await self.remediator.close()
        self._audit_thread.shutdown(wait=True)

    async def audit(self, record: Mapping[str, Any]) -> None:
        """Append and fsync on the audit log's own thread: records stay in order and never wait
        behind API writes in the shared pool. The time is when it happened, not when written."""
        stamped = {"time": audit_time(), **record}
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._audit_thread, self._audit.append, stamped)

    async def _call(self, fn: Any, *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)

    # -- start-up --------------------------------------------------------------------------------

    async def load_existing(self) -> None:
        """Continue the sequence numbers of the NodeAttestations already in the cluster. Their
        states are remembered only to avoid needless writes; nothing is trusted from them that
        this verifier did not sign and that has not expired."""
        items, _ = await self._call(self.kube.list, nodeattestation_path())
        for obj in items:
            status = obj.get("status") or {}
            try:
                seq = int(status.get("sequence") or 0)
                verified = parse_time(status.get("verifiedAt"), "verifiedAt")
                expires = parse_time(status.get("expiresAt"), "expiresAt")
            except (TypeError, ValueError):
                continue
            self._sequence = max(self._sequence, seq)
            state = status.get("state")
            if state in ("Trusted", "Untrusted", "Pending", "Unknown"):
                name = obj["metadata"]["name"]
                self.published[name] = Published(
                    state, str(status.get("reason", "")), verified, expires, seq
                )

    def any_trusted(self) -> bool:
        now = datetime.now(UTC)
        return any(p.state == "Trusted" and now < p.expires_at for p in self.published.values())

    # -- verdicts --------------------------------------------------------------------------------

    async def publish(
        self, node: str, verdict: NodeVerdict, pods: Mapping[str, PodInfo], ak_name: bytes
    ) -> None:
        state: NodeState = "Trusted" if verdict.trusted else "Untrusted"
        await self._publish(node, state, reason(verdict.failures, pods), verdict, pods, ak_name)

    async def pending(self, node: str) -> None:
        """A node seen for the first time starts untrusted (label false, tainted) until its
        first verdict, so nothing lands on it in between."""
        if node in self.published:
            return
        why = Failure("node.pending", "awaiting the first attestation", severity="warning")
        verdict = NodeVerdict(node=node, trusted=False, failures=(why,))
        await self._publish(node, "Pending", "awaiting the first attestation", verdict, {}, b"")

    async def no_evidence(self, node: str, why: Failure, pods: Mapping[str, PodInfo]) -> None:
        now = datetime.now(UTC)
        prev = self.published.get(node)
        if prev is not None and prev.state == "Trusted" and now < prev.expires_at:
            return  # the last verdict holds until it expires
        text = f"{why.id}: {why.message}"[:1024]
        if prev is None or prev.state != "Unknown" or prev.reason != text:
            verdict = NodeVerdict(node=node, trusted=False, failures=(why,))
            await self._publish(node, "Unknown", text, verdict, pods, b"")
        since = self._unknown_since.setdefault(node, now)
        grace = self.settings.unknown_grace
        if self.settings.untrusted_node_action == "evict" and now - since >= timedelta(
            seconds=grace
        ):
            for uid, info in pods.items():
                why_evict = f"node {node} has had no fresh evidence for {grace:g}s: {text}"
                self.remediator.request(PodTarget(info.namespace, info.name, uid, why_evict))

    async def _publish(
        self,
        node: str,
        state: NodeState,
        node_reason: str,
        verdict: NodeVerdict,
        pods: Mapping[str, PodInfo],
        ak_name: bytes,
    ) -> None:
        now = datetime.now(UTC)
        prev = self.published.get(node)
        if state != "Unknown":
            self._unknown_since.pop(node, None)
        views = {uid: pod_trust(state, node_reason, verdict.pod(uid), pods) for uid in sorted(pods)}
        changed = prev is None or (prev.state, prev.reason) != (state, node_reason)
        pods_changed = prev is None or prev.pods != views
        due = prev is None or now - prev.verified_at >= timedelta(
            seconds=self.settings.refresh_every
        )
        if not (changed or pods_changed or due):
            return
        if changed or pods_changed:
            await self.audit(
                {
                    "kind": "verdict",
                    "node": node,
                    "state": state,
                    "reason": node_reason,
                    "failures": [f.as_dict() for f in verdict.failures[:16]],
                    "pods": {uid: v.state for uid, v in views.items()},
                    "quoteDigest": verdict.quote_digest,
                }
            )
        # Remove divergent pods first: every write below is visibility, not protection. Their
        # annotations go just before the eviction, not during it: the API server's eviction
        # updates the pod too, and on a conflict retries 200 ms later (seen as 0.5 s outliers).
        annotated = set()
        for uid in self._to_remediate(state, verdict, views):
            before = prev.pods.get(uid) if prev is not None else None
            if before != views[uid]:
                await self._pod_changed(pods[uid], before, views[uid], now)
            annotated.add(uid)
            info = pods[uid]
            self.remediator.request(PodTarget(info.namespace, info.name, uid, views[uid].reason))
        self._sequence += 1
        status = node_status(
            verdict, state, node_reason, pods, verified_at=now,
            max_age=timedelta(seconds=self.settings.max_age), ak_name=ak_name,
            sequence=self._sequence,
        )  # fmt: skip
        signed = sign_status(node, status, self._key)
        await self._call(self._write_status, node, signed)
        expires = parse_time(status["expiresAt"], "expiresAt")
        labelled = prev.labelled if prev is not None and not changed else False
        published = Published(state, node_reason, now, expires, self._sequence, views, labelled)
        self.published[node] = published
        if not published.labelled:
            published.labelled = await self._label_node(node, state == "Trusted")
        if changed:
            await self._node_event(node, prev, state, node_reason)
        for uid, view in views.items():
            before = prev.pods.get(uid) if prev is not None else None
            if before != view and uid not in annotated:
                await self._pod_changed(pods[uid], before, view, now)

    def _to_remediate(
        self, state: NodeState, verdict: NodeVerdict, views: Mapping[str, PodTrustView]
    ) -> list[str]:
        """The untrusted pods to remove: each that diverged itself, and every one on an
        Untrusted node when the configured action says so (the remediator skips repeats)."""
        node_failed = state == "Untrusted" and self.settings.untrusted_node_action == "evict"
        out = []
        for uid, view in views.items():
            if view.state != "untrusted":
                continue
            pod_verdict = verdict.pod(uid)
            if node_failed or (pod_verdict is not None and not pod_verdict.trusted):
                out.append(uid)
        return out

    def _write_status(self, node: str, status: dict[str, Any]) -> None:
        path = nodeattestation_path(node)
        try:
            self.kube.call(
                "PATCH",
                f"{path}/status",
                body={"status": status},
                content_type="application/merge-patch+json",
            )
            return
        except KubeError as e:
            if e.status != 404:
                raise
        try:
            self.kube.create(
                nodeattestation_path(),
                {
                    "apiVersion": NODEATTESTATION_API_VERSION,
                    "kind": NODEATTESTATION_KIND,
                    "metadata": {"name": node},
                    "spec": {},
                },
            )
        except KubeError as e:
            if e.status != 409:
                raise
        self.kube.call(
            "PATCH",
            f"{path}/status",
            body={"status": status},
            content_type="application/merge-patch+json",
        )

    async def _label_node(self, node: str, trusted: bool) -> bool:
        try:
            await self._call(self._write_node, node, trusted)
            return True
        except KubeError as e:
            log.warning("node %s: label/taint not written (%s); retrying next round", node, e)
            return False

    def _write_node(self, node: str, trusted: bool) -> None:
        for _ in range(3):  # optimistic concurrency on the taints list
            obj = self.kube.get(node_path(node))
            if obj is None:
                return
            taints = [
                t
                for t in (obj.get("spec") or {}).get("taints") or []
                if t.get("key") != UNTRUSTED_TAINT
            ]
            if not trusted:
                taints.append({"key": UNTRUSTED_TAINT, "value": "true", "effect": "NoSchedule"})
            labels = (obj.get("metadata") or {}).get("labels") or {}
            want = "true" if trusted else "false"
            current = (obj.get("spec") or {}).get("taints") or []
            if labels.get(ATTESTED_LABEL) == want and current == taints:
                return
            patch = {
                "metadata": {
                    "labels": {ATTESTED_LABEL: want},
                    "resourceVersion": obj["metadata"]["resourceVersion"],
                },
                "spec": {"taints": taints or None},
            }
            try:
                self.kube.merge_patch(node_path(node), patch)
                return
            except KubeError as e:
                if e.status != 409:
                    raise
        raise KubeError(f"node {node}: kept conflicting while updating label and taint", 409)

    # -- events, annotations, remediation ---------------------------------------------------------

    async def _emit(self, namespace: str | None, body_args: dict[str, Any]) -> None:
        ns, body = event(namespace=namespace, instance=self.settings.identity, **body_args)
        try:
            await self._call(self.kube.create, event_path(ns), body)
        except KubeError as e:
            log.warning("event not written: %s", e)

    async def _node_event(
        self, node: str, prev: Published | None, state: NodeState, node_reason: str
    ) -> None:
        if prev is not None and prev.state == state:
            return
        obj = await self._call(self.kube.get, node_path(node))
        uid = (obj or {}).get("metadata", {}).get("uid", "")
        if state == "Trusted":
            args = {
                "reason": "Attested",
                "message": "TPM quote and IMA log verified",
                "type_": "Normal",
            }
        else:
            args = {"reason": f"Attestation{state}", "message": node_reason, "type_": "Warning"}
        await self._emit(None, {"kind": "Node", "name": node, "uid": uid, **args})

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
        if before is None and view.state == "trusted":
            return  # first sight of a healthy pod: the annotation says it; no Event noise
        if before is not None and before.state == view.state:
            return
        type_ = "Normal" if view.state == "trusted" else "Warning"
        message = view.reason or f"trust state {view.state}"
        await self._emit(
            info.namespace,
            {
                "kind": "Pod",
                "name": info.name,
                "uid": info.uid,
                "reason": f"Attestation{view.state.capitalize()}",
                "message": message,
                "type_": type_,
            },
        )

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
        reasons = {
            "evicted": "Evicted",
            "deleted": "Deleted",
            "audit-only": "WouldEvict",
            "failed": "EvictionFailed",
        }
        if outcome in reasons:
            await self._emit(
                target.namespace,
                {
                    "kind": "Pod",
                    "name": target.name,
                    "uid": target.uid,
                    "reason": f"Trustgate{reasons[outcome]}",
                    "message": f"{outcome}: {detail}",
                    "type_": "Warning",
                },
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

"""Make a verdict visible in Kubernetes, writing only what changed.

Per node: the signed NodeAttestation status (rewritten on change, and every ``refresh`` seconds so
``expiresAt`` keeps moving), the ``trustgate.io/attested`` label and ``trustgate.io/untrusted``
taint, Events on transitions. Per protected pod: the trust annotations (patched only when the
state or reason changes), Events, and remediation of a divergent pod. Every change and action
goes to the audit trail first.

This module decides and orders; the writes themselves are in ``nodewrites`` (status, label,
taint), ``podside`` (pod annotations, Events, remediation outcomes, gates) and ``events`` (which
Event, its body), and what was last written is ``published``. A status is bounded
(``status.fit_status``) and bound to its cluster and object (``nodeattestation.bind``).
Writes are fenced: a replica can lose a node without knowing it yet (``nodewrites.write_fenced``,
``published.epoch_sequence``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from attestation.adapters.kube import (
    Kube,
    KubeError,
    nodeattestation_path,
)
from attestation.core.checkpoint import read_checkpoints
from attestation.core.clock import Clock, parse_time, utcnow
from attestation.core.enforcement import taints_nodes
from attestation.core.freshness import refresh_due, unknown_too_long
from attestation.core.names import NodeState
from attestation.core.nodeattestation import Binding, CheckpointWire, NodeTrust, bind
from attestation.core.signing import key_id, public_keys_by_id, sign_status
from attestation.core.status import (
    MAX_REASON,
    PodTrustView,
    fit_status,
    node_status,
    pod_trust,
    reason,
)
from attestation.core.types import Failure, NodeVerdict
from attestation.core.verdict import PodInfo
from attestation.verifier.auditlog import AuditLog, audit_time
from attestation.verifier.metrics import VerifierMetrics
from attestation.verifier.nodewrites import read_approval, write_fenced, write_label_and_taint
from attestation.verifier.podside import PodSide
from attestation.verifier.policyreport import PolicyReports
from attestation.verifier.published import Published, epoch_sequence, read_published
from attestation.verifier.remediate import PodTarget, Remediator
from attestation.verifier.settings import VerifierSettings
from attestation.verifier.shards import Fence, Unfenced

__all__ = ["Publisher"]

log = logging.getLogger(__name__)

#: Failures an audit record keeps of one verdict.
_AUDITED_FAILURES = 16
#: Pods whose annotations one round patches at most (see ``Publisher._annotate``).
_POD_WRITES = 32


class Publisher(PodSide):
    def __init__(
        self,
        kube: Kube,
        settings: VerifierSettings,
        signing_key: Ed25519PrivateKey,
        audit_log: AuditLog,
        metrics: VerifierMetrics,
        *,
        cluster_id: str,
        clock: Clock = utcnow,
    ) -> None:
        self.kube = kube
        #: The cluster every verdict is bound to (``core.nodeattestation.bind``).
        self.cluster_id = cluster_id
        self.settings = settings
        self._key = signing_key
        self._keys = public_keys_by_id([signing_key.public_key()])
        #: Whether this replica may write about a node now (its shard membership, if any).
        self.fence: Fence = Unfenced()
        #: Node -> the EK digest it is bound to (``enroll.bind_ek``), carried in every status.
        self.ek_pins: dict[str, str] = {}
        #: Node -> where a verifier may resume its log (``core.checkpoint``), carried in every
        #: status; None: read it from zero.
        self.checkpoints: dict[str, CheckpointWire | None] = {}
        #: This verifier's keyId: a NodeAttestation signed by another is another verifier's.
        self.key_id = key_id(signing_key.public_key())
        self._audit = audit_log
        self._metrics = metrics
        self._clock = clock
        self.published: dict[str, Published] = {}
        #: Whether a namespace is protected (``trustgate.io/protected``): only its NF pods are
        #: listed in a status. The controller sets it from its namespace watch.
        self.protected: Callable[[str], bool] = lambda _namespace: True
        #: Node -> the verdict last audited: not audited again while its status write is
        #: refused, or while its pods' annotations are written a batch per round.
        self._audited: dict[str, tuple[object, ...]] = {}
        self._unknown_since: dict[str, datetime] = {}
        self._audit_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit")
        self._sequence = 0
        self.remediator = Remediator(
            kube, settings.remediation, settings.eviction_deadline, self._remediated,
            grace=settings.eviction_grace,
        )  # fmt: skip
        self.remediator.may_act = lambda node: self.fence.holds(node)
        #: Each namespace's PolicyReport (staged rollout, docs/rollout.md).
        self.reports = PolicyReports(kube, clock=clock)

    def forget(self, node: str) -> None:
        """Drop what was kept for ``node`` once it is no longer attested (deleted, released):
        a cluster whose nodes come and go must not grow this process forever."""
        self.published.pop(node, None)
        self._unknown_since.pop(node, None)
        self.checkpoints.pop(node, None)
        self._audited.pop(node, None)
        self.reports.forget_node(node)

    def tracked(self) -> dict[str, int]:
        """How many nodes and pods this publisher keeps something for (see ``forget``)."""
        return {
            "published": len(self.published),
            "unknown_since": len(self._unknown_since),
            "evictions": self.remediator.tracked(),
        }

    async def close(self) -> None:
        await self.remediator.close()
        await self.reports.close()
        self._audit_thread.shutdown(wait=True)

    async def audit(self, record: Mapping[str, Any]) -> None:
        """Append and fsync on the audit log's own thread: records stay in order and never wait
        behind API writes in the shared pool. The time is when it happened, not when written."""
        stamped = {"time": audit_time(self._clock()), **record}
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._audit_thread, self._audit.append, stamped)

    # -- start-up --------------------------------------------------------------------------------

    async def load_existing(self) -> None:
        """Continue after the NodeAttestations already in the cluster that this verifier signed:
        their sequence numbers, their nodes' EK bindings, and their states to avoid needless
        writes (see ``published``)."""
        items, _ = await self._call(self.kube.list, nodeattestation_path())
        binding = Binding(self.cluster_id, require_bound=False)  # an older verifier's too
        found, sequence = read_published(items, self._keys, binding)
        self._sequence = max(self._sequence, sequence, epoch_sequence(self._clock()))
        self.published.update(found)
        for node, published in found.items():
            if published.trust.ek_digest:
                self.ek_pins[node] = published.trust.ek_digest
        self.checkpoints.update(read_checkpoints(items, self._keys))

    async def take_over(self) -> None:
        """On taking nodes over, what their previous owner wrote is the base."""
        try:
            await self.load_existing()
        except KubeError as e:
            self._sequence = max(self._sequence, epoch_sequence(self._clock()))
            log.warning("taking over without re-reading the NodeAttestations: %s", e)

    async def approved_ek(self, node: str) -> str:
        """The EK an operator approved for ``node`` ("" when none, or unreadable now)."""
        approved: str = await self._call(read_approval, self.kube, node)
        return approved

    def any_trusted(self) -> bool:
        now = self._clock()
        return any(p.trust.trusted_at(now) for p in self.published.values())

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
        now = self._clock()
        prev = self.published.get(node)
        if prev is not None and prev.trust.trusted_at(now):
            return  # the last verdict holds until it expires
        text = f"{why.id}: {why.message}"[:MAX_REASON]
        if prev is None or (prev.trust.state, prev.trust.reason) != ("Unknown", text):
            verdict = NodeVerdict(node=node, trusted=False, failures=(why,))
            await self._publish(node, "Unknown", text, verdict, pods, b"")
        since = self._unknown_since.setdefault(node, now)
        grace = self.settings.unknown_grace
        evicts = self.settings.evict_on_unknown and self.settings.untrusted_node_action == "evict"
        if evicts and unknown_too_long(since, now, timedelta(seconds=grace)):
            for uid, info in pods.items():
                why_evict = f"node {node} has had no fresh evidence for {grace:g}s: {text}"
                self.remediator.request(PodTarget(info.namespace, info.name, uid, why_evict, node))

    async def _publish(
        self,
        node: str,
        state: NodeState,
        node_reason: str,
        verdict: NodeVerdict,
        pods: Mapping[str, PodInfo],
        ak_name: bytes,
    ) -> None:
        if not self.fence.holds(node):
            log.warning("node %s: not this replica's (any more): verdict %s not written", node,
                        state)  # fmt: skip
            return
        now = self._clock()
        prev = self.published.get(node)
        if state != "Unknown":
            self._unknown_since.pop(node, None)
        views = {uid: pod_trust(state, node_reason, verdict.pod(uid), pods) for uid in sorted(pods)}
        pin = self.ek_pins.get(node, "")
        was = None if prev is None else (prev.trust.state, prev.trust.reason, prev.trust.ek_digest)
        changed = was != (state, node_reason, pin)
        pods_changed = prev is None or prev.pods != views
        every = timedelta(seconds=self.settings.refresh_every)
        due = refresh_due(prev.trust.verified_at if prev else None, now, every) or (
            prev is not None and prev.owner != self.settings.identity  # taken over: say so
        )
        if not (changed or pods_changed or due):
            return
        self.reports.observe(node, pods, views, verdict)
        audited = (state, node_reason, pin, views)
        if (changed or pods_changed) and self._audited.get(node) != audited:
            self._audited[node] = audited
            await self._audit_verdict(node, state, node_reason, verdict, views)
        # Remove divergent pods first: every write below is visibility, not protection.
        annotated = await self._remove_divergent(state, verdict, views, prev, pods, now)
        self._sequence += 1
        listed = {uid: info for uid, info in pods.items() if self.protected(info.namespace)}
        status = node_status(
            verdict, state, node_reason, listed, verified_at=now,
            max_age=timedelta(seconds=self.settings.max_age), ak_name=ak_name,
            sequence=self._sequence, ek_digest=pin,
        )  # fmt: skip
        if (checkpoint := self.checkpoints.get(node)) is not None:
            status["checkpoint"] = checkpoint
        status["owner"] = self.settings.identity  # which replica attests the node (its shard)
        fitted = fit_status(status)

        signed: dict[str, dict[str, Any]] = {}

        def sign(uid: str) -> dict[str, Any]:
            signed[uid] = sign_status(node, bind(fitted, self.cluster_id, uid), self._key)
            return signed[uid]

        base = (prev.version, prev.uid, prev.status) if prev else ("", "", None)
        try:
            written = await self._call(write_fenced, self.kube, self.fence, node, sign, *base)
        except KubeError as e:
            await self._status_refused(node, state, prev, e)
            return
        if written is None:
            return
        expires = parse_time(status["expiresAt"], "expiresAt")
        trust = NodeTrust(node, state, node_reason, now, expires, self._sequence, ek_digest=pin)
        labelled = prev.labelled if prev is not None and not changed else False
        version, uid = written
        published = Published(trust, dict(views), labelled, version, uid, self.settings.identity,
                              signed.get(uid))  # fmt: skip
        self.published[node] = published
        if not published.labelled:
            published.labelled = await self._label_node(node, state == "Trusted")
        if changed and (prev is None or prev.trust.state != state):
            await self._node_event(node, state, node_reason)
        await self._annotate(published, prev, pods, annotated, now)

    async def _annotate(
        self,
        published: Published,
        prev: Published | None,
        pods: Mapping[str, PodInfo],
        annotated: set[str],
        now: datetime,
    ) -> None:
        """Patch the annotations of the pods whose view changed, at most ``_POD_WRITES`` per
        round (protected namespaces' untrusted pods first): a thousand pods bound to the node
        must not hold its round, and so its refresh, for a minute. The others keep their
        previous view in ``published`` and are patched in the next rounds."""
        todo = []
        for uid, view in published.pods.items():
            before = prev.pods.get(uid) if prev is not None else None
            if before != view and uid not in annotated:
                todo.append((not self.protected(pods[uid].namespace), view.state != "untrusted",
                             uid, before))  # fmt: skip
        todo.sort(key=lambda t: t[:2])
        for _, _, uid, before in todo[_POD_WRITES:]:
            if before is None:
                del published.pods[uid]
            else:
                published.pods[uid] = before
        for _, _, uid, before in todo[:_POD_WRITES]:
            await self._pod_changed(pods[uid], before, published.pods[uid], now)

    async def _status_refused(
        self,
        node: str,
        state: NodeState,
        prev: Published | None,
        error: KubeError,
    ) -> None:
        """The status could not be written (refused, too big, a conflict that would not clear):
        the label and taint follow the verdict all the same, so a node that is no longer
        trusted is tainted even while its status cannot say so. The next round writes again."""
        log.warning("node %s: status not written (%s); label and taint follow %s", node, error,
                    state)  # fmt: skip
        if prev is not None:
            prev.labelled = False  # label again once a status is written
        await self._label_node(node, state == "Trusted")

    async def _audit_verdict(
        self,
        node: str,
        state: NodeState,
        node_reason: str,
        verdict: NodeVerdict,
        views: Mapping[str, PodTrustView],
    ) -> None:
        await self.audit(
            {
                "kind": "verdict",
                "node": node,
                "state": state,
                "reason": node_reason,
                "failures": [f.as_dict() for f in verdict.failures[:_AUDITED_FAILURES]],
                "pods": {uid: v.state for uid, v in views.items()},
                "quoteDigest": verdict.quote_digest,
            }
        )

    async def _remove_divergent(
        self,
        state: NodeState,
        verdict: NodeVerdict,
        views: Mapping[str, PodTrustView],
        prev: Published | None,
        pods: Mapping[str, PodInfo],
        now: datetime,
    ) -> set[str]:
        """Ask for the removal of the pods to remediate; return the uids annotated on the way.
        Their annotations go just before the eviction, not during it: the API server's eviction
        updates the pod too, and on a conflict retries 200 ms later (seen as 0.5 s outliers)."""
        annotated = set()
        for uid in self._to_remediate(state, verdict, views):
            before = prev.pods.get(uid) if prev is not None else None
            if before != views[uid]:
                await self._pod_changed(pods[uid], before, views[uid], now)
            annotated.add(uid)
            info = pods[uid]
            self.remediator.request(
                PodTarget(info.namespace, info.name, uid, views[uid].reason, verdict.node)
            )
        return annotated

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

    async def _label_node(self, node: str, trusted: bool) -> bool:
        if not self.fence.holds(node):
            return False
        try:
            taint = taints_nodes(self.settings.enforcement_default)
            await self._call(write_label_and_taint, self.kube, node, trusted, taint)
            return True
        except KubeError as e:
            log.warning("node %s: label/taint not written (%s); retrying next round", node, e)
            return False

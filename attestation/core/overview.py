"""What ``trustgate status`` shows: each attested node's verdict and its age, and each NF pod
with where it runs and — when it does not — why it waits or why it was evicted.

Pure: the command lists the objects (NodeAttestations checked with ``node_trust``, the NF pods,
trustgate's eviction Events) and passes them here with the time; this module decides each line.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from attestation.core.names import (
    GATED_ANNOTATION,
    NF_LABEL,
    REASON_ANNOTATION,
    SCHEDULING_GATE,
    TRUST_STATE_ANNOTATION,
)
from attestation.core.nodeattestation import NodeTrust

__all__ = ["NodeLine", "PodLine", "node_lines", "pod_lines", "render"]

#: The Event reasons of evictions (``verifier.events``), the only ones ``status`` shows.
EVICTION_REASONS = frozenset({"TrustgateEvicted", "TrustgateDeleted", "TrustgateWouldEvict"})


@dataclass(frozen=True, slots=True)
class NodeLine:
    node: str
    state: str  # the verdict, or "Expired" / "Invalid" when it cannot be relied on now
    age: str  # since the verdict was signed
    reason: str


@dataclass(frozen=True, slots=True)
class PodLine:
    namespace: str
    name: str
    network_function: str
    node: str
    state: str  # Running, Waiting, Evicted, ...
    why: str


def _age(then: datetime | None, now: datetime) -> str:
    if then is None:
        return "-"
    seconds = max(0, int((now - then).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def node_lines(nodes: Iterable[NodeTrust], now: datetime) -> list[NodeLine]:
    """One line a node, sorted by name. A verdict whose signature does not check is "Invalid"
    with the defect as its reason; a Trusted one past ``expiresAt`` is "Expired": the webhook
    refuses both, so the line says what the webhook will do."""
    out = []
    for n in sorted(nodes, key=lambda n: n.node):
        if n.defect is not None:
            state, reason = "Invalid", f"{n.defect.id}: {n.defect.message}"
        elif n.state == "Trusted" and not n.trusted_at(now):
            state, reason = "Expired", f"verdict expired {_age(n.expires_at, now)} ago"
        else:
            state, reason = n.state, n.reason
        out.append(NodeLine(n.node, state, _age(n.verified_at, now), reason))
    return out


def _pod_why(pod: Mapping[str, Any]) -> tuple[str, str]:
    """(state, why) of a pod that exists."""
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    meta = pod.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    trust = annotations.get(TRUST_STATE_ANNOTATION, "")
    if meta.get("deletionTimestamp"):
        return "Terminating", f"{trust}: {annotations.get(REASON_ANNOTATION, '')}".strip(": ")
    if any(g.get("name") == SCHEDULING_GATE for g in spec.get("schedulingGates") or []):
        if annotations.get(GATED_ANNOTATION):  # the verifier says why (no runtime policy)
            return "Waiting", f"gated: {annotations[GATED_ANNOTATION]}"
        return "Waiting", "gated: no attested node can take it yet (trustgate.io/attestation)"
    if not spec.get("nodeName"):
        for condition in status.get("conditions") or []:
            if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
                return "Waiting", f"unschedulable: {condition.get('message', '')}".strip()
        return "Waiting", "not scheduled yet"
    phase = str(status.get("phase") or "Unknown")
    if trust == "untrusted":
        return phase, f"untrusted: {annotations.get(REASON_ANNOTATION, '')}".strip()
    return phase, trust or "not attested yet"


def pod_lines(
    pods: Iterable[Mapping[str, Any]], events: Iterable[Mapping[str, Any]]
) -> list[PodLine]:
    """One line an NF pod, and one an NF pod trustgate evicted (from its Event; the pod is gone)."""
    out = []
    for pod in pods:
        meta = pod.get("metadata") or {}
        state, why = _pod_why(pod)
        nf = str((meta.get("labels") or {}).get(NF_LABEL, ""))
        node = str((pod.get("spec") or {}).get("nodeName") or "-")
        out.append(PodLine(str(meta.get("namespace", "")), str(meta.get("name", "")), nf, node,
                           state, why))  # fmt: skip
    present = {(p.namespace, p.name) for p in out}
    for event in events:
        if event.get("reason") not in EVICTION_REASONS:
            continue
        obj = event.get("involvedObject") or {}
        key = (str(obj.get("namespace", "")), str(obj.get("name", "")))
        if key in present:
            continue
        present.add(key)
        when = event.get("lastTimestamp") or event.get("eventTime") or ""
        state = "WouldEvict" if event["reason"] == "TrustgateWouldEvict" else "Evicted"
        out.append(PodLine(*key, "", "-", state, f"{when} {event.get('message', '')}".strip()))
    return sorted(out, key=lambda p: (p.namespace, p.name))


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
    return [
        "  ".join([*(c.ljust(w) for c, w in zip(r, widths, strict=False)), r[-1]]).rstrip()
        for r in [header, *rows]
    ]


def render(nodes: list[NodeLine], pods: list[PodLine]) -> str:
    lines = _table(("NODE", "STATE", "AGE", "REASON"),
                   [(n.node, n.state, n.age, n.reason) for n in nodes])  # fmt: skip
    lines.append("")
    lines += _table(("NAMESPACE", "POD", "NF", "NODE", "STATE", "WHY"),
                    [(p.namespace, p.name, p.network_function, p.node, p.state, p.why)
                     for p in pods])  # fmt: skip
    return "\n".join(lines) + "\n"

"""What a verdict looks like in Kubernetes, pure: the NodeAttestation status, the reason line,
and the trust annotations of each protected pod. The publisher diffs these with what is there."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from attestation.core.clock import format_time
from attestation.core.names import (
    LAST_VERIFIED_ANNOTATION,
    REASON_ANNOTATION,
    TRUST_STATE_ANNOTATION,
    NodeState,
    PodState,
)
from attestation.core.types import Failure, NodeVerdict, PodVerdict
from attestation.core.verdict import PodInfo

__all__ = [
    "MAX_CHECKPOINT_FINDINGS",
    "MAX_LISTED_PODS",
    "MAX_REASON",
    "MAX_STATUS_BYTES",
    "PodTrustView",
    "fit_status",
    "node_status",
    "pod_annotations",
    "pod_trust",
    "reason",
]

#: The longest reason written (the status's reason and failure messages, a pod's annotation).
MAX_REASON = 1024
#: The most pods a status lists (the CRD allows 1024): a node's story, not an inventory. The
#: rest are counted (``podCount``, ``podsOmitted``); each pod's own annotations still tell it.
MAX_LISTED_PODS = 256
#: The most a status may weigh, encoded: etcd takes ~1.5 MiB per request, and the object has
#: metadata too. A status over it is summarised (``fit_status``), never refused.
MAX_STATUS_BYTES = 512 * 1024
#: The most findings a checkpoint's list may hold (the CRD's maxItems).
MAX_CHECKPOINT_FINDINGS = 1024
_FINDINGS = ("hostFailures", "podFailures")


def reason(failures: tuple[Failure, ...], pods: Mapping[str, PodInfo] | None = None) -> str:
    """``<id> (<path> in pod <name>)`` for the first error, ``+N more`` for the rest; what a user
    reads in ``kubectl get nodeattestations`` and in the webhook's denial."""
    errors = [f for f in failures if f.severity == "error"] or list(failures)
    if not errors:
        return ""
    first = errors[0]
    where = []
    if first.path:
        where.append(first.path)
    if first.pod_uid:
        info = (pods or {}).get(first.pod_uid)
        where.append(f"in pod {info.namespace}/{info.name}" if info else f"in pod {first.pod_uid}")
    text = first.id + (f" ({' '.join(where)})" if where else f": {first.message}")
    if len(errors) > 1:
        text += f" +{len(errors) - 1} more"
    return text[:MAX_REASON]


@dataclass(frozen=True, slots=True)
class PodTrustView:
    state: PodState
    reason: str


def pod_trust(
    node_state: NodeState, node_reason: str, pod: PodVerdict | None, pods: Mapping[str, PodInfo]
) -> PodTrustView:
    if pod is not None and not pod.trusted:
        return PodTrustView("untrusted", reason(pod.failures, pods))
    if node_state == "Trusted":
        return PodTrustView("trusted", "")
    if node_state == "Untrusted":
        return PodTrustView("untrusted", f"node: {node_reason}"[:MAX_REASON])
    return PodTrustView("unknown" if node_state == "Unknown" else "pending", node_reason)


def pod_annotations(view: PodTrustView, verified_at: datetime) -> dict[str, str]:
    return {
        TRUST_STATE_ANNOTATION: view.state,
        LAST_VERIFIED_ANNOTATION: format_time(verified_at),
        REASON_ANNOTATION: view.reason,
    }


def node_status(
    verdict: NodeVerdict,
    state: NodeState,
    node_reason: str,
    pods: Mapping[str, PodInfo],
    *,
    verified_at: datetime,
    max_age: timedelta,
    ak_name: bytes,
    sequence: int,
    ek_digest: str = "",
) -> dict[str, Any]:
    """The unsigned ``status`` of the node's NodeAttestation. ``ek_digest`` is the EK the node
    is bound to (``enroll.bind_ek``): signed with the verdict, so a restarted or new leader
    keeps the binding. ``pods`` are the pods to list (the caller leaves out those of namespaces
    nobody protects); at most ``MAX_LISTED_PODS`` are, the untrusted ones first."""
    pod_entries = []
    for pv in verdict.pods:
        info = pods.get(pv.uid)
        if info is None:
            continue
        view = pod_trust(state, node_reason, pv, pods)
        pod_entries.append(
            {
                "uid": pv.uid,
                "namespace": info.namespace,
                "name": info.name,
                "networkFunction": info.network_function,
                "state": view.state,
                "reason": view.reason,
            }
        )
    listed = _listed(pod_entries)
    return {
        "state": state,
        "reason": node_reason,
        "verifiedAt": format_time(verified_at),
        "expiresAt": format_time(verified_at + max_age if state == "Trusted" else verified_at),
        "quoteDigest": verdict.quote_digest,
        "akName": ak_name.hex(),
        "failures": [
            {"id": f.id, "message": f.message[:MAX_REASON]} for f in verdict.failures[:32]
        ],
        "pods": listed,
        "podCount": len(pod_entries),
        "podsOmitted": len(pod_entries) - len(listed),
        "sequence": sequence,
        "ekDigest": ek_digest,
    }


def _listed(entries: list[dict[str, str]]) -> list[dict[str, str]]:
    """At most ``MAX_LISTED_PODS`` entries, in the verdict's order; when some must go, the
    untrusted ones stay (they are what a reader looks for)."""
    if len(entries) <= MAX_LISTED_PODS:
        return entries
    keep = sorted(range(len(entries)), key=lambda i: (entries[i]["state"] != "untrusted", i))
    chosen = sorted(keep[:MAX_LISTED_PODS])
    return [entries[i] for i in chosen]


def fit_status(status: Mapping[str, Any], limit: int = MAX_STATUS_BYTES) -> dict[str, Any]:
    """``status`` made to weigh at most ``limit`` bytes encoded, its checkpoint's lists no longer
    than the CRD takes: first its ``checkpoint`` goes (a verifier then reads the log from zero:
    slower, never less safe), then its listed pods (still counted in ``podsOmitted``). A status
    that fits already is returned as it is."""
    fitted = dict(status)
    checkpoint = fitted.get("checkpoint") or {}
    if any(len(checkpoint.get(k) or ()) > MAX_CHECKPOINT_FINDINGS for k in _FINDINGS):
        fitted.pop("checkpoint")  # the CRD takes at most 1024 findings per list
    if _size(fitted) <= limit:
        return fitted
    fitted.pop("checkpoint", None)
    pods = list(fitted.get("pods") or [])
    while pods and _size(fitted) > limit:
        pods = pods[: len(pods) // 2]
        omitted = int(fitted.get("podCount", 0)) - len(pods)
        fitted.update(pods=pods, podsOmitted=max(omitted, 0))
    return fitted


def _size(status: Mapping[str, Any]) -> int:
    return len(json.dumps(status, separators=(",", ":"), ensure_ascii=False).encode())

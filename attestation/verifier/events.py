"""Kubernetes Events about nodes and pods, the trail a user sees in ``kubectl describe``: which
transition gets an Event, and its body. Pure; the publisher posts them."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from attestation.core.clock import format_time
from attestation.core.kubeobject import KubeObject
from attestation.core.names import NO_POLICY_EVENT_REASON, RUNTIME_POLICY_KIND, NodeState
from attestation.core.status import MAX_REASON, PodTrustView
from attestation.core.verdict import PodInfo

if TYPE_CHECKING:  # types only: importing remediate would load the Kubernetes client
    from attestation.verifier.remediate import Outcome, PodTarget

__all__ = [
    "COMPONENT",
    "NODE_EVENT_NAMESPACE",
    "Event",
    "EventType",
    "no_policy_event",
    "no_policy_message",
    "node_event",
    "pod_event",
    "remediation_event",
]

COMPONENT = "trustgate-verifier"
#: Node Events live in "default", as the kubelet's do: `kubectl describe node` lists them.
NODE_EVENT_NAMESPACE = "default"

EventType = Literal["Normal", "Warning"]
#: (namespace, core/v1 Event body)
Event = tuple[str, dict[str, Any]]

#: The Event reason of each remediation outcome that gets one ("gone" does not).
_REMEDIATION_REASONS: dict[Outcome, str] = {
    "evicted": "TrustgateEvicted",
    "deleted": "TrustgateDeleted",
    "audit-only": "TrustgateWouldEvict",
    "failed": "TrustgateEvictionFailed",
}


def _event(
    *,
    kind: Literal["Node", "Pod"],
    name: str,
    namespace: str | None,
    uid: str,
    reason: str,
    message: str,
    type_: EventType,
    instance: str,
    now: datetime,
) -> Event:
    """(namespace, core/v1 Event body)."""
    stamp = format_time(now)
    ns = namespace or NODE_EVENT_NAMESPACE
    involved: dict[str, Any] = {"kind": kind, "name": name, "uid": uid, "apiVersion": "v1"}
    if namespace:
        involved["namespace"] = namespace
    return ns, {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{name}.", "namespace": ns},
        "involvedObject": involved,
        "reason": reason,
        "message": message[:MAX_REASON],
        "type": type_,
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": instance,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


def node_event(
    node: str, uid: str, state: NodeState, node_reason: str, *, instance: str, now: datetime
) -> Event:
    """A node's new state: ``Attested`` (Normal), or ``Attestation<State>`` with the reason."""
    type_: EventType
    if state == "Trusted":
        reason, message, type_ = "Attested", "TPM quote and IMA log verified", "Normal"
    else:
        reason, message, type_ = f"Attestation{state}", node_reason, "Warning"
    return _event(
        kind="Node", name=node, namespace=None, uid=uid, reason=reason, message=message,
        type_=type_, instance=instance, now=now,
    )  # fmt: skip


def pod_event(
    info: PodInfo, before: PodTrustView | None, view: PodTrustView, *, instance: str, now: datetime
) -> Event | None:
    """``Attestation<State>`` when a pod's trust state changes; None when it did not, and for
    the first sight of a healthy pod (its annotation says it; no Event noise)."""
    if before is None and view.state == "trusted":
        return None
    if before is not None and before.state == view.state:
        return None
    return _event(
        kind="Pod", name=info.name, namespace=info.namespace, uid=info.uid,
        reason=f"Attestation{view.state.capitalize()}",
        message=view.reason or f"trust state {view.state}",
        type_="Normal" if view.state == "trusted" else "Warning", instance=instance, now=now,
    )  # fmt: skip


def remediation_event(
    target: PodTarget, outcome: Outcome, detail: str, *, instance: str, now: datetime
) -> Event | None:
    """What remediation did to a pod (a Warning); None for a pod that was already gone."""
    reason = _REMEDIATION_REASONS.get(outcome)
    if reason is None:
        return None
    return _event(
        kind="Pod", name=target.name, namespace=target.namespace, uid=target.uid, reason=reason,
        message=f"{outcome}: {detail}", type_="Warning", instance=instance, now=now,
    )  # fmt: skip


def no_policy_message(nf: str) -> str:
    return (
        f"no runtime policy is loaded for network function {nf}: the pod stays gated until a "
        f"{RUNTIME_POLICY_KIND} with spec.networkFunction: {nf} loads (kubectl get runtimepolicies "
        f"-A; its Invalid condition says what is wrong with one that does not)"
    )


def no_policy_event(pod: KubeObject, nf: str, *, instance: str, now: datetime) -> Event:
    """A pod gated for want of a policy for its network function (``gating``): a Warning."""
    meta = pod.get("metadata") or {}
    return _event(
        kind="Pod", name=str(meta.get("name", "")), namespace=str(meta.get("namespace", "")),
        uid=str(meta.get("uid", "")), reason=NO_POLICY_EVENT_REASON,
        message=no_policy_message(nf), type_="Warning", instance=instance, now=now,
    )  # fmt: skip

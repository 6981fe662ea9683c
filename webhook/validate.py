"""The validating decision: (request, node trust view, now) -> allow or deny. Pure.

Three checks, only ever for NF pods:

a. ``pods/binding`` CREATE: the scheduler (or anyone) binds an NF pod to a node -> the node must
   have a fresh, passing, verifier-signed NodeAttestation. A Binding carries none of the pod's
   labels, so the caller looks the pod up and passes it in as ``bound_pod``.
b. pods CREATE/UPDATE with ``spec.nodeName`` preset: the scheduler is bypassed, same check.
c. pods UPDATE that change trustgate's labels/annotations (``trustgate.io/*``) or remove the
   scheduling gate: only the verifier's ServiceAccount may — removing the gate is its job, the
   kube-scheduler never does it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from attestation.core.clock import format_time
from attestation.core.kubeobject import KubeObject
from attestation.core.names import PREFIX, SCHEDULING_GATE
from attestation.core.nodeattestation import NodeTrust
from webhook.mutate import has_gate
from webhook.protect import ProtectionRules, annotations_of, labels_of, network_function
from webhook.responses import Response, allowed, as_warning, denied
from webhook.reviews import Request, ReviewError

__all__ = ["AUDIT_PREFIX", "ValidationPolicy", "binding_pod", "node_refusal", "validate"]

AUDIT_PREFIX = "trustgate audit mode, would deny: "


@dataclass(frozen=True, slots=True)
class ValidationPolicy:
    verifier_username: str
    rules: ProtectionRules = field(default_factory=ProtectionRules)
    audit_namespaces: frozenset[str] = frozenset()


def binding_pod(request: Request) -> tuple[str, str, str] | None:
    """(namespace, name, uid) of the pod a Binding CREATE binds, for the caller's lookup; uid is
    empty when the binder did not set it."""
    if not (request.is_binding and request.operation == "CREATE"):
        return None
    metadata = _mapping(_object(request).get("metadata") or {}, "object.metadata")
    uid = metadata.get("uid") or ""
    if not isinstance(uid, str):
        raise ReviewError("object.metadata.uid is not a string")
    return request.namespace, request.name, uid


def validate(
    request: Request,
    *,
    trust: Mapping[str, NodeTrust],
    now: datetime,
    policy: ValidationPolicy,
    bound_pod: KubeObject | None = None,
) -> Response:
    response = _decide(request, trust, now, policy, bound_pod)
    if request.namespace in policy.audit_namespaces:
        return as_warning(response, AUDIT_PREFIX)
    return response


def _decide(
    request: Request,
    trust: Mapping[str, NodeTrust],
    now: datetime,
    policy: ValidationPolicy,
    bound_pod: KubeObject | None,
) -> Response:
    if request.operation not in ("CREATE", "UPDATE"):
        return allowed()
    if request.is_binding:
        return _binding(request, trust, now, policy, bound_pod)
    if not request.is_pod:
        return allowed()
    pod = _object(request)
    nf = network_function(pod, policy.rules)
    if nf is None and request.operation == "UPDATE":
        nf = network_function(request.old_object, policy.rules)
    if nf is None:
        return allowed()
    if request.operation == "UPDATE" and request.username != policy.verifier_username:
        changed = _trustgate_changes(request.old_object or {}, pod)
        if changed:
            return denied(
                f"only the trustgate verifier may change {', '.join(changed)} of {nf} pod "
                f"{request.namespace}/{request.name}"
            )
    node = _node_name(pod)
    if node and (request.operation == "CREATE" or node != _node_name(request.old_object)):
        return _node_check(node, trust, now)
    return allowed()


def _binding(
    request: Request,
    trust: Mapping[str, NodeTrust],
    now: datetime,
    policy: ValidationPolicy,
    bound_pod: KubeObject | None,
) -> Response:
    binding = _object(request)
    target = _mapping(binding.get("target"), "object.target")
    node = target.get("name")
    if not isinstance(node, str) or not node:
        raise ReviewError("object.target.name (the node) is missing")
    if bound_pod is None:
        # Fail closed: without the pod we cannot tell whether it is a network function.
        return denied(
            f"pod {request.namespace}/{request.name} not found: cannot tell whether it is a "
            "network function",
            code=404,
        )
    if network_function(bound_pod, policy.rules) is None:
        return allowed()
    return _node_check(node, trust, now)


def node_refusal(node: str, trust: Mapping[str, NodeTrust], now: datetime) -> str | None:
    """Why an NF pod may not run on ``node`` now, or None when it may."""
    entry = trust.get(node)
    if entry is None:
        return f"node {node} has no NodeAttestation"
    if entry.defect is not None:
        if entry.defect.id.startswith("signature."):
            return (
                f"node {node} NodeAttestation signature is not from the verifier "
                f"({entry.defect.message})"
            )
        return f"node {node} NodeAttestation is unusable: {entry.defect.message}"
    if entry.state != "Trusted":
        return f"node {node} is not attested ({entry.state}): {entry.reason or 'no reason given'}"
    if entry.expires_at is None or not now < entry.expires_at:
        expired = format_time(entry.expires_at) if entry.expires_at else "an unknown time"
        return f"node {node} attestation expired at {expired}"
    return None


def _node_check(node: str, trust: Mapping[str, NodeTrust], now: datetime) -> Response:
    refusal = node_refusal(node, trust, now)
    return allowed() if refusal is None else denied(refusal)


def _trustgate_changes(old: KubeObject, new: KubeObject) -> list[str]:
    changes = [
        f"{what} {key}"
        for what, getter in (("label", labels_of), ("annotation", annotations_of))
        for key in sorted(set(getter(old)) | set(getter(new)))
        if key.startswith(PREFIX) and getter(old).get(key) != getter(new).get(key)
    ]
    if has_gate(_spec(old)) != has_gate(_spec(new)):
        changes.append(f"the scheduling gate {SCHEDULING_GATE}")
    return changes


def _node_name(pod: KubeObject | None) -> str:
    node = _spec(pod).get("nodeName") or ""
    if not isinstance(node, str):
        raise ReviewError("object.spec.nodeName is not a string")
    return node


def _object(request: Request) -> KubeObject:
    if request.object is None:
        raise ReviewError(f"request.object is missing for {request.operation}")
    return request.object


def _spec(obj: KubeObject | None) -> Mapping[str, Any]:
    if obj is None:
        return {}
    return _mapping(obj.get("spec") or {}, "object.spec")


def _mapping(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ReviewError(f"{what} is not an object")
    return value

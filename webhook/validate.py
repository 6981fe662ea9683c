"""The validating decision: (request, node trust view, now) -> allow or deny. Pure.

Only ever for NF pods (a pod that is no NF before and after a request is allowed, untouched):

a. ``pods/binding`` CREATE: the scheduler (or anyone) binds an NF pod to a node -> the node must
   have a fresh, passing, verifier-signed NodeAttestation. A Binding carries none of the pod's
   labels, so the caller looks the pod up and passes it in as ``bound_pod``.
b. pods CREATE/UPDATE with ``spec.nodeName`` preset: the scheduler is bypassed, same check.
c. pods UPDATE that change trustgate's labels/annotations (``trustgate.io/*``) or remove the
   scheduling gate: only the verifier's ServiceAccount may — removing the gate is its job, the
   kube-scheduler never does it. At CREATE the mutating webhook has stripped the marks a creator
   brought along; any still there (a later mutation put them back) are refused.
d. pods UPDATE that change the pod's network-function identity: nobody may. Admission gates a
   pod as what it is at creation; a plain pod relabelled ``app: upf`` would run unattested and
   be picked by the UPF's Service, and an NF that sheds or swaps its kind leaves its policy.
e. ``pods/ephemeralcontainers`` UPDATE (``kubectl debug``) adding a container to an NF pod: its
   image is in no runtime policy; refused unless the policy allows ephemeral containers.

The request's namespace's enforcement mode (``core.enforcement``) decides what a refusal becomes:
a denial (``enforce``), a warning to the client (``warn``) or an audit annotation (``audit``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from attestation.core.clock import format_time
from attestation.core.enforcement import Enforcement, actions
from attestation.core.kubeobject import KubeObject
from attestation.core.names import NF_LABEL, SCHEDULING_GATE, TRUST_STATE_ANNOTATION
from attestation.core.nodeattestation import NodeTrust
from webhook.mutate import has_gate
from webhook.protect import (
    ProtectionRules,
    labels_of,
    named_kinds,
    network_function,
    trustgate_marks,
)
from webhook.responses import Response, allowed, as_audit, as_warning, denied
from webhook.reviews import Request, ReviewError

__all__ = [
    "IDENTITY_FIXED",
    "WARN_PREFIX",
    "ValidationPolicy",
    "binding_pod",
    "enforced",
    "identity_refusal",
    "node_refusal",
    "validate",
]

#: Before each warning of a ``warn``-mode namespace: what a client (or a test) can look for.
WARN_PREFIX = "trustgate warn mode, would deny: "
#: In every refusal of an identity change: what a runbook or a test can look for.
IDENTITY_FIXED = "is fixed at creation"


@dataclass(frozen=True, slots=True)
class ValidationPolicy:
    """``allow_ephemeral_containers``: let ``kubectl debug`` add containers to NF pods. Their
    executables are then judged against the pod's runtime policy like any other, so a debug
    image the policy does not list gets the pod evicted."""

    verifier_username: str
    rules: ProtectionRules = field(default_factory=ProtectionRules)
    allow_ephemeral_containers: bool = False


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
    mode: Enforcement = "enforce",
) -> Response:
    """``mode``: the enforcement mode of the request's namespace."""
    return enforced(_decide(request, trust, now, policy, bound_pod), mode)


def enforced(response: Response, mode: Enforcement) -> Response:
    """What a decision becomes in ``mode``: unchanged, a warning, or an audit annotation."""
    if actions(mode).deny:
        return response
    if actions(mode).warn:
        return as_warning(response, WARN_PREFIX)
    return as_audit(response)


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
    if request.is_ephemeral_containers:
        return _ephemeral_containers(request, policy)
    if not request.is_pod:
        return allowed()
    pod = _object(request)
    nf = network_function(pod, policy.rules)
    if nf is None and request.operation == "UPDATE":
        nf = network_function(request.old_object, policy.rules)
    if nf is None:
        return allowed()
    refusal = _marks_refusal(request, pod, nf, policy)
    if refusal is not None:
        return denied(refusal)
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
        return (
            f"node {node} NodeAttestation is unusable ({entry.defect.id}): {entry.defect.message}"
        )
    if entry.state != "Trusted":
        return f"node {node} is not attested ({entry.state}): {entry.reason or 'no reason given'}"
    if entry.expires_at is None or not now < entry.expires_at:
        expired = format_time(entry.expires_at) if entry.expires_at else "an unknown time"
        return f"node {node} attestation expired at {expired}"
    return None


def _node_check(node: str, trust: Mapping[str, NodeTrust], now: datetime) -> Response:
    refusal = node_refusal(node, trust, now)
    return allowed() if refusal is None else denied(refusal)


def _marks_refusal(
    request: Request, pod: KubeObject, nf: str, policy: ValidationPolicy
) -> str | None:
    """Why this CREATE or UPDATE of NF pod ``pod`` may not touch trustgate's marks or the pod's
    identity (c and d above), or None."""
    where = f"{nf} pod {request.namespace}/{request.name}"
    if request.operation == "CREATE":
        # What /mutate leaves; a mark missing here is not refused (the mutation is what adds it).
        expected = {f"label {NF_LABEL}": nf, f"annotation {TRUST_STATE_ANNOTATION}": "pending"}
        stray = sorted(k for k, v in trustgate_marks(pod).items() if expected.get(k) != v)
        if stray:
            return (
                f"{where} may not be created with {', '.join(stray)}: only the trustgate "
                "verifier sets them (the mutating webhook strips them: is it installed?)"
            )
        return None
    old = request.old_object or {}
    if request.username != policy.verifier_username:
        changed = _trustgate_changes(old, pod)
        if changed:
            return f"only the trustgate verifier may change {', '.join(changed)} of {where}"
    return identity_refusal(old, pod, policy.rules, f"{request.namespace}/{request.name}")


def identity_refusal(
    old: KubeObject, new: KubeObject, rules: ProtectionRules, pod: str
) -> str | None:
    """Why an UPDATE from ``old`` to ``new`` changes pod ``pod``'s network-function identity, or
    None: its kind (none -> upf, upf -> smf, upf -> none) must stay, and no label may come to
    name a kind the pod's labels did not name before (``app: smf`` added to a UPF)."""
    before, after = named_kinds(old, rules), named_kinds(new, rules)
    was, now = next(iter(before.values()), None), next(iter(after.values()), None)
    if was != now:
        detail = f"it is {was or 'none'}, this update makes it {now or 'none'}"
        if now is not None:
            key = next(iter(after))
            detail += f" (label {key}={labels_of(new)[key]})"
    else:
        added = [k for k, kind in after.items() if kind not in before.values()]
        if not added:
            return None
        key = added[0]
        detail = (
            f"it is {was}, this update makes label {key}={labels_of(new)[key]} name {after[key]}"
        )
    return (
        f"the network function of pod {pod} {IDENTITY_FIXED}: {detail}; "
        "delete and re-create the pod to change it"
    )


def _trustgate_changes(old: KubeObject, new: KubeObject) -> list[str]:
    before, after = trustgate_marks(old), trustgate_marks(new)
    changes = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    if has_gate(_spec(old)) != has_gate(_spec(new)):
        changes.append(f"the scheduling gate {SCHEDULING_GATE}")
    return changes


def _ephemeral_containers(request: Request, policy: ValidationPolicy) -> Response:
    """``kubectl debug`` on an NF pod: the new containers run images no runtime policy covers,
    inside a pod its node's attestation vouches for."""
    pod, old = _object(request), request.old_object
    nf = network_function(pod, policy.rules) or network_function(old, policy.rules)
    if nf is None or policy.allow_ephemeral_containers:
        return allowed()
    added = sorted(_ephemeral_names(pod) - _ephemeral_names(old))
    if not added:
        return allowed()
    plural = "s" if len(added) > 1 else ""
    return denied(
        f"ephemeral container{plural} {', '.join(added)} in {nf} pod "
        f"{request.namespace}/{request.name} refused: an image in no runtime policy would run "
        "inside an attested network function (kubectl debug); the webhook's "
        "--allow-ephemeral-containers permits it"
    )


def _ephemeral_names(pod: KubeObject | None) -> set[str]:
    containers = _spec(pod).get("ephemeralContainers") or []
    if not isinstance(containers, list):
        raise ReviewError("object.spec.ephemeralContainers is not a list")
    names = {_mapping(c, "object.spec.ephemeralContainers[]").get("name") for c in containers}
    if not all(isinstance(n, str) for n in names):
        raise ReviewError("object.spec.ephemeralContainers[].name is not a string")
    return {str(n) for n in names}


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

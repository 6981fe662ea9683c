"""Pod CREATE -> the JSON Patch that keeps an NF pod off unattested nodes until it is verified.

Five changes, each only when needed, so a reinvocation (reinvocationPolicy IfNeeded) or a pod
that already has them yields an empty patch:

- every other ``trustgate.io/*`` label and annotation removed — they are the verifier's to write
  (``trust-state: trusted``, ``last-verified``, ...). Stripped rather than refused, so a manifest
  copied from a running, verified pod (``kubectl get -o yaml``) still applies and starts over as
  pending; the validating webhook refuses any that a later mutation puts back;
- label ``trustgate.io/network-function=<nf>`` — later decisions key on it;
- annotation ``trustgate.io/trust-state=pending`` — a creator cannot pre-set ``trusted``;
- a required node affinity on ``trustgate.io/attested=true``, added to *every* nodeSelectorTerm
  because terms are ORed: adding a new term would let the pod escape through the old ones;
- the scheduling gate ``trustgate.io/attestation``, which only the verifier removes (the
  kube-scheduler never removes gates). Skipped when ``spec.nodeName`` is preset: the API server
  rejects a pod with both, and the validating webhook checks such a pod's node instead.

The last two only in ``enforce`` mode (``core.enforcement``): a ``warn`` or ``audit`` namespace's
NF pods are labelled and marked pending (the verifier judges and reports them all the same) but
neither gated nor pinned, so they schedule as if trustgate were not there.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from attestation.core.enforcement import Enforcement, actions
from attestation.core.kubeobject import KubeObject
from attestation.core.names import (
    ATTESTED_LABEL,
    NF_LABEL,
    PREFIX,
    SCHEDULING_GATE,
    TRUST_STATE_ANNOTATION,
)
from webhook.protect import ProtectionRules, annotations_of, labels_of, network_function
from webhook.responses import Response, allowed, patched
from webhook.reviews import PatchOp, Request, ReviewError

__all__ = ["ATTESTED_EXPRESSION", "has_gate", "mutate", "mutate_pod", "pointer"]

ATTESTED_EXPRESSION: Mapping[str, Any] = {
    "key": ATTESTED_LABEL,
    "operator": "In",
    "values": ["true"],
}
_REQUIRED = "requiredDuringSchedulingIgnoredDuringExecution"


def pointer(*parts: str) -> str:
    """A JSON pointer (RFC 6901): ``~`` and ``/`` in a part are escaped as ``~0`` and ``~1``."""
    return "".join("/" + p.replace("~", "~0").replace("/", "~1") for p in parts)


def mutate_pod(pod: KubeObject, nf: str, mode: Enforcement = "enforce") -> tuple[PatchOp, ...]:
    """The patch for an NF pod being created in a namespace in ``mode``; empty when it already
    carries everything."""
    spec = _mapping(pod.get("spec"), "spec")
    todo = actions(mode)
    ops = (
        *_strip(pod), *_label(pod, nf), *_annotation(pod),
        *(_affinity(spec) if todo.pin else ()), *(_gate(spec) if todo.gate else ()),
    )  # fmt: skip
    if ops and pod.get("metadata") is None:
        # A pod always has metadata by the time admission sees it; this keeps the patch valid.
        return (_add("/metadata", {}), *ops)
    return ops


def _strip(pod: KubeObject) -> list[PatchOp]:
    """Remove the creator's ``trustgate.io/*`` marks except the two this patch sets anyway."""
    kept = {("labels", NF_LABEL), ("annotations", TRUST_STATE_ANNOTATION)}
    return [
        {"op": "remove", "path": pointer("metadata", where, key)}
        for where, values in (("labels", labels_of(pod)), ("annotations", annotations_of(pod)))
        for key in sorted(values)
        if key.startswith(PREFIX) and (where, key) not in kept
    ]


def _label(pod: KubeObject, nf: str) -> list[PatchOp]:
    labels = labels_of(pod)
    if labels.get(NF_LABEL) == nf:
        return []
    if "labels" not in _metadata(pod) or _metadata(pod)["labels"] is None:
        return [_add(pointer("metadata", "labels"), {NF_LABEL: nf})]
    return [_add(pointer("metadata", "labels", NF_LABEL), nf)]


def _annotation(pod: KubeObject) -> list[PatchOp]:
    annotations = annotations_of(pod)
    if annotations.get(TRUST_STATE_ANNOTATION) == "pending":
        return []
    if "annotations" not in _metadata(pod) or _metadata(pod)["annotations"] is None:
        value = {TRUST_STATE_ANNOTATION: "pending"}
        return [_add(pointer("metadata", "annotations"), value)]
    return [_add(pointer("metadata", "annotations", TRUST_STATE_ANNOTATION), "pending")]


def _affinity(spec: Mapping[str, Any]) -> list[PatchOp]:
    affinity = spec.get("affinity")
    required_value = {"nodeSelectorTerms": [{"matchExpressions": [dict(ATTESTED_EXPRESSION)]}]}
    if affinity is None:
        return [_add(pointer("spec", "affinity"), {"nodeAffinity": {_REQUIRED: required_value}})]
    node_affinity = _mapping(affinity, "spec.affinity").get("nodeAffinity")
    if node_affinity is None:
        return [_add(pointer("spec", "affinity", "nodeAffinity"), {_REQUIRED: required_value})]
    required = _mapping(node_affinity, "spec.affinity.nodeAffinity").get(_REQUIRED)
    base = ("spec", "affinity", "nodeAffinity", _REQUIRED)
    if required is None:
        return [_add(pointer(*base), required_value)]
    terms = _sequence(_mapping(required, _REQUIRED).get("nodeSelectorTerms"), "nodeSelectorTerms")
    if not terms:
        # The API server rejects an empty term list; replacing it keeps the pod valid and gated.
        return [_add(pointer(*base, "nodeSelectorTerms"), required_value["nodeSelectorTerms"])]
    ops: list[PatchOp] = []
    for i, term in enumerate(terms):
        term_path = (*base, "nodeSelectorTerms", str(i))
        expressions = _mapping(term, "nodeSelectorTerms[]").get("matchExpressions")
        if expressions is None:
            ops.append(_add(pointer(*term_path, "matchExpressions"), [dict(ATTESTED_EXPRESSION)]))
        elif ATTESTED_EXPRESSION not in _sequence(expressions, "matchExpressions"):
            ops.append(
                _add(pointer(*term_path, "matchExpressions", "-"), dict(ATTESTED_EXPRESSION))
            )
    return ops


def _gate(spec: Mapping[str, Any]) -> list[PatchOp]:
    if spec.get("nodeName"):
        return []
    gates = spec.get("schedulingGates")
    if gates is None:
        return [_add(pointer("spec", "schedulingGates"), [{"name": SCHEDULING_GATE}])]
    if has_gate(spec):
        return []
    return [_add(pointer("spec", "schedulingGates", "-"), {"name": SCHEDULING_GATE})]


def has_gate(spec: Mapping[str, Any]) -> bool:
    gates = _sequence(spec.get("schedulingGates") or [], "spec.schedulingGates")
    return any(_mapping(g, "schedulingGates[]").get("name") == SCHEDULING_GATE for g in gates)


def _metadata(pod: KubeObject) -> Mapping[str, Any]:
    return _mapping(pod.get("metadata") or {}, "metadata")


def _add(path: str, value: Any) -> PatchOp:
    return {"op": "add", "path": path, "value": value}


def _mapping(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ReviewError(f"object.{what} is not an object")
    return value


def _sequence(value: Any, what: str) -> Sequence[Any]:
    if not isinstance(value, list):
        raise ReviewError(f"object.{what} is not a list")
    return value


def mutate(request: Request, rules: ProtectionRules, mode: Enforcement = "enforce") -> Response:
    """The /mutate decision: only NF pods being created are changed; everything else passes.
    ``mode``: the enforcement mode of the request's namespace."""
    if not (request.is_pod and request.operation == "CREATE") or request.object is None:
        return allowed()
    nf = network_function(request.object, rules)
    if nf is None:
        return allowed()
    return patched(mutate_pod(request.object, nf, mode))

"""What ``trustgate uninstall`` must undo on objects trustgate does not own: the nodes it labelled
and tainted, and the NF pods it gated, pinned and annotated.

Pure: each function takes an object as the API returned it and says what to do with it.

A pod the webhook mutated carries a required node affinity on ``trustgate.io/attested=true``,
and Kubernetes never lets a pod's affinity be loosened. So a pod that has not been scheduled yet
cannot simply be released: with the label gone from every node it would wait forever. One a
controller owns (a ReplicaSet, StatefulSet, Job ...) is deleted, and its controller makes a new
one that nothing mutates any more; a bare pod has its gate lifted and is reported, because only
its owner can recreate it. A pod that runs keeps running: only trustgate's annotations go.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from attestation.core.names import ATTESTED_LABEL, PREFIX, SCHEDULING_GATE, UNTRUSTED_TAINT

__all__ = ["PodAction", "node_patch", "pod_action"]


@dataclass(frozen=True, slots=True)
class PodAction:
    """``recreate``: delete it, its controller makes a clean one; ``release``: lift the gate
    (and say the pod must be recreated by its owner); ``clean``: drop trustgate's annotations;
    ``none``: nothing of trustgate's is on it."""

    kind: Literal["recreate", "release", "clean", "none"]
    patch: Mapping[str, Any] | None = None  # a JSON merge patch, for release and clean
    note: str = ""


def _ours(annotations: Mapping[str, Any]) -> dict[str, None]:
    return {k: None for k in annotations if k.startswith(PREFIX)}


def node_patch(node: Mapping[str, Any]) -> dict[str, Any] | None:
    """A merge patch that removes the attested label and the untrusted taint, carrying the
    node's resourceVersion (the taint list is replaced whole: a concurrent change must fail the
    patch, not be overwritten); None when the node has neither."""
    meta, spec = node.get("metadata") or {}, node.get("spec") or {}
    taints = list(spec.get("taints") or [])
    kept = [t for t in taints if t.get("key") != UNTRUSTED_TAINT]
    labelled = ATTESTED_LABEL in (meta.get("labels") or {})
    if not labelled and len(kept) == len(taints):
        return None
    patch: dict[str, Any] = {"metadata": {"resourceVersion": meta.get("resourceVersion")}}
    if labelled:
        patch["metadata"]["labels"] = {ATTESTED_LABEL: None}
    if len(kept) != len(taints):
        patch["spec"] = {"taints": kept}
    return patch


def pod_action(pod: Mapping[str, Any]) -> PodAction:
    """What to do with one pod (see the module docstring)."""
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    gates = list(spec.get("schedulingGates") or [])
    ours = _ours(meta.get("annotations") or {})
    pinned = not spec.get("nodeName") and (
        any(g.get("name") == SCHEDULING_GATE for g in gates) or _requires_attested(spec)
    )
    if pinned:
        if any(ref.get("controller") for ref in meta.get("ownerReferences") or []):
            return PodAction("recreate", note="its controller makes a new one, unpinned")
        kept = [g for g in gates if g.get("name") != SCHEDULING_GATE]
        patch = {"metadata": {"annotations": ours} if ours else {},
                 "spec": {"schedulingGates": kept}}  # fmt: skip
        return PodAction("release", patch, "a bare pod keeps its node affinity on "
                         f"{ATTESTED_LABEL}: recreate it to schedule it")  # fmt: skip
    if ours:
        return PodAction("clean", {"metadata": {"annotations": ours}})
    return PodAction("none")


def _requires_attested(spec: Mapping[str, Any]) -> bool:
    required = (((spec.get("affinity") or {}).get("nodeAffinity") or {})
                .get("requiredDuringSchedulingIgnoredDuringExecution") or {})  # fmt: skip
    return any(
        e.get("key") == ATTESTED_LABEL
        for term in required.get("nodeSelectorTerms") or []
        for e in term.get("matchExpressions") or []
    )

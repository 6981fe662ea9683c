"""The writes about a node itself: its NodeAttestation's signed status, and the
``trustgate.io/attested`` label with the ``trustgate.io/untrusted`` taint.

Blocking calls through the one Kubernetes adapter; the publisher runs them in worker threads.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from attestation.adapters.kube import Kube, KubeError, node_path, nodeattestation_path
from attestation.core.names import (
    ATTESTED_LABEL,
    NODEATTESTATION_API_VERSION,
    NODEATTESTATION_KIND,
    UNTRUSTED_TAINT,
)

__all__ = ["write_label_and_taint", "write_status"]

#: Attempts at the node's label and taints when another writer keeps changing the node.
_NODE_ATTEMPTS = 3


def write_status(kube: Kube, node: str, status: Mapping[str, Any]) -> None:
    """Patch the node's NodeAttestation status, creating the object on first sight (a
    concurrent creation, 409, is as good)."""
    try:
        _patch_status(kube, node, status)
        return
    except KubeError as e:
        if e.status != 404:
            raise
    try:
        kube.create(
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
    _patch_status(kube, node, status)


def _patch_status(kube: Kube, node: str, status: Mapping[str, Any]) -> None:
    kube.call(
        "PATCH",
        f"{nodeattestation_path(node)}/status",
        body={"status": status},
        content_type="application/merge-patch+json",
    )


def write_label_and_taint(kube: Kube, node: str, trusted: bool) -> None:
    """Label the node ``true``/``false`` and add or remove the NoSchedule taint, leaving other
    taints alone. The taints are a list, so the patch carries the resourceVersion it was computed
    from: a concurrent change (409) is read again, at most a few times."""
    for _ in range(_NODE_ATTEMPTS):
        obj = kube.get(node_path(node))
        if obj is None:
            return
        current = (obj.get("spec") or {}).get("taints") or []
        taints = [t for t in current if t.get("key") != UNTRUSTED_TAINT]
        if not trusted:
            taints.append({"key": UNTRUSTED_TAINT, "value": "true", "effect": "NoSchedule"})
        labels = (obj.get("metadata") or {}).get("labels") or {}
        want = "true" if trusted else "false"
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
            kube.merge_patch(node_path(node), patch)
            return
        except KubeError as e:
            if e.status != 409:
                raise
    raise KubeError(f"node {node}: kept conflicting while updating label and taint", 409)

"""The writes about a node itself: its NodeAttestation's signed status (and the one read of its
spec: an operator's EK approval), and the ``trustgate.io/attested`` label with the
``trustgate.io/untrusted`` taint.

Blocking calls through the one Kubernetes adapter; the publisher runs them in worker threads.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from attestation.adapters.kube import Kube, KubeError, node_path, nodeattestation_path
from attestation.core import mergepatch
from attestation.core.names import (
    APPROVED_EK_FIELD,
    ATTESTED_LABEL,
    NODEATTESTATION_API_VERSION,
    NODEATTESTATION_KIND,
    UNTRUSTED_TAINT,
)
from attestation.verifier.shards import Fence

__all__ = [
    "Sign",
    "Written",
    "read_approval",
    "write_fenced",
    "write_label_and_taint",
    "write_status",
]

log = logging.getLogger(__name__)

#: Attempts at the node's label and taints when another writer keeps changing the node.
_NODE_ATTEMPTS = 3

#: The object's uid -> the signed status for it: a verdict is bound to the NodeAttestation it is
#: written to (``core.nodeattestation.bind``), which is known only once read or created.
Sign = Callable[[str], Mapping[str, Any]]
#: (resourceVersion, uid) of the NodeAttestation as written.
Written = tuple[str, str]


def write_status(
    kube: Kube,
    node: str,
    sign: Sign,
    version: str,
    uid: str,
    before: Mapping[str, Any] | None = None,
) -> Written:
    """Write the node's NodeAttestation status on condition that the object is still at
    ``version`` (and ``uid``), what this verifier last wrote or read; return the new ones.

    The precondition fences the write: a 409 means someone wrote since (another replica that
    took the node, an operator), and the caller must not blindly overwrite it. Without a
    ``version`` (never read), the object is read first — created on first sight; one deleted
    since is created again, and the status signed for the new object. ``before``: the status
    this verifier wrote at ``version``; then only what differs is sent (a refresh: the times,
    the sequence, the signature), and the stored status is still exactly the signed one."""
    if not version or not uid:
        (version, uid), before = _current(kube, node), None
    try:
        status = sign(uid)
        patch = mergepatch.diff(before, status) if before is not None else None
        if patch is not None:
            return _patch_status(kube, node, patch, version)
        return _replace_status(kube, node, status, version, uid)
    except KubeError as e:
        if e.status != 404:
            raise
    version, uid = _current(kube, node)
    return _replace_status(kube, node, sign(uid), version, uid)


def write_fenced(
    kube: Kube,
    fence: Fence,
    node: str,
    sign: Sign,
    version: str,
    uid: str,
    before: Mapping[str, Any] | None = None,
) -> Written | None:
    """``write_status`` as the node's owner: only while ``fence`` holds, and after a conflict
    only once the API server confirms this replica's membership. What was written, or None when
    fenced off."""
    if not fence.holds(node):
        log.warning("node %s: not this replica's (any more): status not written", node)
        return None
    try:
        return write_status(kube, node, sign, version, uid, before)
    except KubeError as e:
        if e.status != 409:
            raise
    if not fence.confirm(node):
        log.warning("node %s: status changed under a replica that lost it: not written", node)
        return None
    log.info("node %s: status changed since this verifier wrote it; writing again", node)
    return write_status(kube, node, sign, "", "")


def _current(kube: Kube, node: str) -> Written:
    obj = kube.get(nodeattestation_path(node))
    if obj is None:
        try:
            obj = kube.create(
                nodeattestation_path(),
                {
                    "apiVersion": NODEATTESTATION_API_VERSION,
                    "kind": NODEATTESTATION_KIND,
                    "metadata": {"name": node},
                    "spec": {},
                },
            )
        except KubeError as e:
            if e.status != 409:  # created concurrently: as good
                raise
            obj = kube.get(nodeattestation_path(node))
    if obj is None:
        raise KubeError(f"NodeAttestation {node} was deleted while being written", 404)
    return str(obj["metadata"]["resourceVersion"]), str(obj["metadata"]["uid"])


def _patch_status(kube: Kube, node: str, patch: Mapping[str, Any], version: str) -> Written:
    """A JSON merge patch of the status under the resourceVersion it was computed from: refused
    (409) if anyone wrote since — a NodeAttestation made again under the name too — as a
    replace would be."""
    body = {"metadata": {"resourceVersion": version}, "status": dict(patch)}
    written = kube.merge_patch(f"{nodeattestation_path(node)}/status", body)
    return str(written["metadata"]["resourceVersion"]), str(written["metadata"]["uid"])


def _replace_status(
    kube: Kube, node: str, status: Mapping[str, Any], version: str, uid: str
) -> Written:
    """Replace the whole status (PUT on the subresource), never merge into it: a field the new
    verdict leaves out (a checkpoint, say) must not survive from the last one, or the stored
    status is no longer what was signed."""
    body = {
        "apiVersion": NODEATTESTATION_API_VERSION,
        "kind": NODEATTESTATION_KIND,
        "metadata": {"name": node, "resourceVersion": version, "uid": uid},
        "status": dict(status),
    }
    written = kube.replace(f"{nodeattestation_path(node)}/status", body)
    return str(written["metadata"]["resourceVersion"]), str(written["metadata"]["uid"])


def read_approval(kube: Kube, node: str) -> str:
    """The EK digest an operator approved for ``node`` (``spec.approvedEkDigest`` of its
    NodeAttestation, which only cluster admins may write), or "" (also when unreadable now:
    the node stays refused until the next try)."""
    try:
        obj = kube.get(nodeattestation_path(node))
    except KubeError as e:
        log.warning("node %s: EK approval not readable: %s", node, e)
        return ""
    approved = ((obj or {}).get("spec") or {}).get(APPROVED_EK_FIELD, "")
    return approved if isinstance(approved, str) else ""


def write_label_and_taint(kube: Kube, node: str, trusted: bool, taint: bool = True) -> None:
    """Label the node ``true``/``false`` and add or remove the NoSchedule taint, leaving other
    taints alone; ``taint`` False: never tainted (``core.enforcement.taints_nodes``). The taints
    are a list, so the patch carries the resourceVersion it was computed from: a concurrent
    change (409) is read again, at most a few times."""
    for _ in range(_NODE_ATTEMPTS):
        obj = kube.get(node_path(node))
        if obj is None:
            return
        current = (obj.get("spec") or {}).get("taints") or []
        taints = [t for t in current if t.get("key") != UNTRUSTED_TAINT]
        if not trusted and taint:
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

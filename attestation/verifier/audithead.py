"""Publish the audit trail's newest checkpoint where an operator (or the webhook) can compare it:
an annotation on a Lease per verifier replica, ``trustgate-audit-<identity>`` in trustgate's
namespace.

Why a Lease of its own, not the leader Lease or a NodeAttestation: every replica writes its own
trail (standbys included), one replica's head must not overwrite another's, and the verifier's
role already has ``get``/``create``/``update`` on Leases in its namespace — no new permission.
Why publish at all: the file's owner can cut its tail, checkpoints and all, and the chain still
verifies; the API server keeps the head out of the file's reach (not out of the reach of root on
the verifier's node, who holds the verifier's token too: docs/audit.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from attestation.adapters.kube import Kube, KubeError, lease_path
from attestation.core.auditcheck import HeadError, head_lease_name, parse_head
from attestation.core.clock import Clock
from attestation.core.names import AUDIT_HEAD_ANNOTATION
from attestation.verifier.auditlog import AuditLog, AuditOptions
from attestation.verifier.settings import VerifierSettings

__all__ = ["HeadPublisher", "close_audit", "keep_checkpointing", "open_audit", "read_head"]

log = logging.getLogger(__name__)


def read_head(kube: Kube, namespace: str, lease: str) -> dict[str, Any] | None:
    """The head published on ``lease``; None when there is none. ``HeadError`` when the
    annotation is there but is not a checkpoint; ``KubeError`` when the API server fails."""
    obj = kube.get(lease_path(namespace, lease))
    text = ((obj or {}).get("metadata") or {}).get("annotations", {}).get(AUDIT_HEAD_ANNOTATION)
    return None if text is None else parse_head(text)


class HeadPublisher:
    """Writes one replica's head; never raises (a failed publication is retried with the next
    checkpoint, and the trail itself is unaffected)."""

    def __init__(self, kube: Kube, namespace: str, identity: str) -> None:
        self._kube = kube
        self._namespace = namespace
        self._identity = identity
        self.lease = head_lease_name(identity)

    def read(self) -> dict[str, Any] | None:
        """The head this replica published before (None if none or unreadable: logged)."""
        try:
            return read_head(self._kube, self._namespace, self.lease)
        except (KubeError, HeadError) as e:
            log.warning("audit head: cannot read lease %s: %s", self.lease, e)
            return None

    def publish(self, checkpoint: Mapping[str, Any]) -> bool:
        text = json.dumps(dict(checkpoint), separators=(",", ":"))
        for _ in range(3):  # a conflicting update (409) is retried on the fresh object
            try:
                self._write(text)
                return True
            except KubeError as e:
                if e.status != 409:
                    log.warning("audit head: cannot publish on lease %s: %s", self.lease, e)
                    return False
        log.warning("audit head: lease %s kept changing under the update", self.lease)
        return False

    def _write(self, text: str) -> None:
        path = lease_path(self._namespace, self.lease)
        lease = self._kube.get(path)
        if lease is None:
            self._kube.create(lease_path(self._namespace), {
                "metadata": {"name": self.lease, "namespace": self._namespace,
                             "annotations": {AUDIT_HEAD_ANNOTATION: text}},
                "spec": {"holderIdentity": self._identity},
            })  # fmt: skip
            return
        metadata = lease.setdefault("metadata", {})
        annotations = metadata.get("annotations") or {}
        annotations[AUDIT_HEAD_ANNOTATION] = text
        metadata["annotations"] = annotations
        self._kube.replace(path, lease)


def open_audit(
    settings: VerifierSettings, kube: Kube, signer: Ed25519PrivateKey, clock: Clock
) -> tuple[AuditLog, HeadPublisher]:
    """The replica's trail (``{identity}`` in its path replaced), compared with the head it
    published before. Its first checkpoint is ``keep_checkpointing``'s, off the start-up path."""
    heads = HeadPublisher(kube, settings.namespace, settings.identity)
    path = Path(str(settings.audit_log).replace("{identity}", settings.identity))
    options = AuditOptions(settings.identity, signer, settings.audit_max_bytes)
    audit = AuditLog(path, clock=clock, options=options, published=heads.read())
    return audit, heads


async def keep_checkpointing(
    audit: AuditLog, heads: HeadPublisher, interval: float, stop: asyncio.Event
) -> None:
    """At once (the head then moves from the start: a trail replaced before the first interval
    is seen too), then every ``interval``: sign the head if it moved, and publish it."""
    while not stop.is_set():
        try:
            checkpoint = await asyncio.to_thread(audit.checkpoint)
        except OSError as e:  # a full disk: the next append says so too; keep trying
            log.error("audit log %s: cannot write a checkpoint: %s", audit.path, e)
            checkpoint = None
        if checkpoint is not None:
            await asyncio.to_thread(heads.publish, checkpoint)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)


def close_audit(audit: AuditLog, heads: HeadPublisher) -> None:
    """The last checkpoint, signed and published, then the file released."""
    checkpoint = audit.close()
    if checkpoint is not None:
        heads.publish(checkpoint)

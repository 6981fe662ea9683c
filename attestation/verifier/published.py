"""What this verifier last published for each node: the base every publish diffs against.

A new leader starts from the NodeAttestations already in the cluster: it continues their sequence
numbers, keeps each node's EK binding, and remembers their states to avoid needless writes. Only a
status whose signature verifies with this verifier's own keys is taken: a Trusted status read back
counts until it expires, as if this verifier had written it (``Publisher.any_trusted``, and a node
without fresh evidence keeping its last verdict), so an unsigned or foreign-signed one written by
anyone else must count for nothing — not for trust, not for the binding, not for the sequence.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from attestation.core.nodeattestation import (
    Binding,
    NodeAttestationError,
    NodeTrust,
    node_trust,
)
from attestation.core.status import PodTrustView

__all__ = ["Published", "epoch_sequence", "read_published"]

log = logging.getLogger(__name__)


@dataclass
class Published:
    """One node's status as last written (or found at start): ``trust`` holds its state, reason,
    ``verifiedAt``, ``expiresAt``, sequence and EK binding; ``pods`` the views its pod annotations
    show; ``labelled`` whether the node's label and taint were written for that state;
    ``version`` the NodeAttestation's resourceVersion after that write (the next write's
    precondition: nobody wrote in between) and ``uid`` its uid (what the verdict is bound to)."""

    trust: NodeTrust
    pods: dict[str, PodTrustView] = field(default_factory=dict)
    labelled: bool = False
    version: str = ""
    uid: str = ""
    #: The replica that wrote it (``status.owner``): another's is rewritten as this one's.
    owner: str = ""
    #: The signed status as this replica wrote it at ``version`` (None: found, not written):
    #: the next write sends only what differs (``nodewrites.write_status``).
    status: Mapping[str, Any] | None = None


def read_published(
    items: Iterable[Mapping[str, Any]],
    public_keys: Mapping[str, Ed25519PublicKey],
    binding: Binding | None = None,
) -> tuple[dict[str, Published], int]:
    """The NodeAttestations found in the cluster by node, and the highest sequence among them.
    An object whose status does not verify with ``public_keys`` (unsigned, another key, edited,
    malformed, or bound to another cluster or object: ``binding``) is skipped, its sequence too,
    with a warning naming why."""
    published: dict[str, Published] = {}
    highest = 0
    for obj in items:
        if not obj.get("status"):
            continue  # created, never written: nothing to continue from
        try:
            trust = node_trust(obj, public_keys, binding)
        except NodeAttestationError as e:
            log.warning("ignoring a NodeAttestation: %s", e)
            continue
        if trust.defect is not None or trust.verified_at is None or trust.expires_at is None:
            why = trust.defect.message if trust.defect else "no verifiedAt/expiresAt"
            log.warning("NodeAttestation %s not taken over: %s", trust.node, why)
            continue
        highest = max(highest, trust.sequence)
        meta = obj.get("metadata") or {}
        version, uid = str(meta.get("resourceVersion") or ""), str(meta.get("uid") or "")
        owner = (obj.get("status") or {}).get("owner")
        published[trust.node] = Published(
            trust, version=version, uid=uid, owner=owner if isinstance(owner, str) else ""
        )
    return published, highest


def epoch_sequence(now: datetime) -> int:
    """Microseconds since the Unix epoch: where a replica taking over starts its sequence, so a
    new leader's verdicts follow a deposed one's even when no NodeAttestation is left to read."""
    return int(now.timestamp() * 1_000_000)

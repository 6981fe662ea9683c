"""What this verifier last published for each node: the base every publish diffs against.

A new leader starts from the NodeAttestations already in the cluster. It continues their sequence
numbers and remembers their states to avoid needless writes. Their signatures are not checked
here: a Trusted status read back counts until it expires, as if this verifier had written it
(``Publisher.any_trusted``, and a node without fresh evidence keeping its last verdict).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from attestation.core.clock import parse_time
from attestation.core.names import NODE_STATES, NodeState
from attestation.core.nodeattestation import NodeTrust
from attestation.core.status import PodTrustView

__all__ = ["Published", "read_published"]


@dataclass
class Published:
    """One node's status as last written (or found at start): ``trust`` holds its state, reason,
    ``verifiedAt``, ``expiresAt`` and sequence; ``pods`` the views its pod annotations show;
    ``labelled`` whether the node's label and taint were written for that state."""

    trust: NodeTrust
    pods: dict[str, PodTrustView] = field(default_factory=dict)
    labelled: bool = False


def read_published(items: Iterable[Mapping[str, Any]]) -> tuple[dict[str, Published], int]:
    """The NodeAttestations found in the cluster by node, and the highest sequence among them.
    An object without readable times is skipped, its sequence too; one in a state this version
    does not know still counts for the sequence."""
    published: dict[str, Published] = {}
    highest = 0
    for obj in items:
        status = obj.get("status") or {}
        try:
            sequence = int(status.get("sequence") or 0)
            verified = parse_time(status.get("verifiedAt"), "verifiedAt")
            expires = parse_time(status.get("expiresAt"), "expiresAt")
        except (TypeError, ValueError):
            continue
        highest = max(highest, sequence)
        state = status.get("state")
        if state in NODE_STATES:
            name = obj["metadata"]["name"]
            trust = NodeTrust(
                name, cast(NodeState, state), str(status.get("reason", "")), verified, expires,
                sequence,
            )  # fmt: skip
            published[name] = Published(trust)
    return published, highest

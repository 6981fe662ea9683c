"""The NodeAttestation custom resource: its wire shape and its conversion to a domain value.

``nodeattestations.trustgate.io/v1alpha1``, cluster-scoped, named after the node. Only the verifier
writes ``status``; everyone else (the webhook, the CLI) reads it and must check its signature first
(see ``attestation.core.signing`` and docs/nodeattestation.md).

``node_trust`` checks the signature and parses the status once, so consumers keep a
``NodeTrust`` and decide from memory. A status that is unsigned, signed by the wrong key or
malformed still becomes a ``NodeTrust`` — with ``defect`` set — so the webhook can say why a node
is refused instead of just "not found".
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NotRequired, TypedDict, cast

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from attestation.core.clock import parse_time
from attestation.core.names import NODE_STATES, NodeState
from attestation.core.signing import verify_status
from attestation.core.types import Failure

__all__ = [
    "CheckpointWire",
    "FailureWire",
    "FindingWire",
    "NodeAttestationError",
    "NodeAttestationObject",
    "NodeAttestationStatus",
    "NodeTrust",
    "PodStatusWire",
    "PodTrust",
    "SignatureWire",
    "node_name",
    "node_trust",
]


class NodeAttestationError(ValueError):
    """An object that cannot be a NodeAttestation at all (no name to key it by)."""


class FailureWire(TypedDict):
    id: str
    message: str


class PodStatusWire(TypedDict):
    uid: str
    namespace: str
    name: str
    networkFunction: str
    state: str
    reason: str


class FindingWire(TypedDict):
    """A finding a checkpoint carries (the first error of the host or of one pod)."""

    id: str
    message: str
    uid: NotRequired[str]  # the pod's; absent for the host
    path: NotRequired[str]
    digest: NotRequired[str]


class CheckpointWire(TypedDict):
    """Where a verifier may resume this node's log without reading it from zero (signed with the
    verdict; only the verifier's own, clean state: see ``core.checkpoint``)."""

    imaIndex: int
    imaOffset: int
    pcr10: dict[str, str]  # bank -> running PCR 10 after the first imaIndex entries, hex
    resetCount: int
    restartCount: int
    clock: int
    safe: bool
    hostFailures: list[FindingWire]
    podFailures: list[FindingWire]


class SignatureWire(TypedDict):
    keyId: str
    algorithm: str
    value: str


class NodeAttestationStatus(TypedDict):
    state: str
    reason: str
    verifiedAt: str
    expiresAt: str
    quoteDigest: str
    akName: str
    failures: list[FailureWire]
    pods: list[PodStatusWire]
    sequence: int
    ekDigest: NotRequired[str]
    checkpoint: NotRequired[CheckpointWire]
    signature: NotRequired[SignatureWire]


class NodeAttestationObject(TypedDict):
    apiVersion: str
    kind: str
    metadata: dict[str, Any]
    status: NotRequired[NodeAttestationStatus]


@dataclass(frozen=True, slots=True)
class PodTrust:
    uid: str
    namespace: str
    name: str
    network_function: str
    state: str
    reason: str


@dataclass(frozen=True, slots=True)
class NodeTrust:
    """What a NodeAttestation says about a node, after the signature check.

    ``defect`` is ``None`` only when the status is signed by a verifier key and well formed; with a
    defect, the other fields are whatever could be read and must not be relied upon.
    """

    node: str
    state: NodeState
    reason: str = ""
    verified_at: datetime | None = None
    expires_at: datetime | None = None
    sequence: int = 0
    failures: tuple[Failure, ...] = ()
    pods: tuple[PodTrust, ...] = ()
    defect: Failure | None = None
    #: The EK (``enroll.ek_digest``) the node is bound to; "" before its first enrollment.
    ek_digest: str = ""

    def trusted_at(self, now: datetime) -> bool:
        """A node is trusted only while a signed, passing verdict is fresh: a valid verdict can
        still be too old, because the verifier may have lost the node."""
        return (
            self.defect is None
            and self.state == "Trusted"
            and self.expires_at is not None
            and now < self.expires_at
        )


def node_name(obj: Mapping[str, Any]) -> str:
    metadata = obj.get("metadata")
    name = metadata.get("name") if isinstance(metadata, Mapping) else None
    if not isinstance(name, str) or not name:
        raise NodeAttestationError("NodeAttestation has no metadata.name (the node's name)")
    return name


def node_trust(obj: Mapping[str, Any], public_keys: Mapping[str, Ed25519PublicKey]) -> NodeTrust:
    """Check the signature of ``obj``'s status for its node and convert it; never trusts an
    unsigned field. Raises ``NodeAttestationError`` only when the object has no name."""
    node = node_name(obj)
    status = obj.get("status")
    if not isinstance(status, Mapping) or not status:
        return NodeTrust(
            node,
            "Unknown",
            "no status yet",
            defect=Failure("nodeattestation.no_status", f"NodeAttestation {node} has no status"),
        )
    defect = verify_status(node, status, public_keys)
    try:
        parsed = _parse_status(node, status)
    except (ValueError, TypeError) as e:
        return NodeTrust(
            node,
            "Unknown",
            str(e),
            defect=defect or Failure("nodeattestation.malformed", str(e)),
        )
    if defect is None:
        return parsed
    return dataclasses.replace(parsed, defect=defect)


def _parse_status(node: str, status: Mapping[str, Any]) -> NodeTrust:
    state = status.get("state")
    if state not in NODE_STATES:
        raise ValueError(f"status.state {state!r} is not one of {', '.join(NODE_STATES)}")
    reason = status.get("reason", "")
    if not isinstance(reason, str):
        raise ValueError("status.reason is not a string")
    sequence = status.get("sequence", 0)
    if not isinstance(sequence, int) or isinstance(sequence, bool):
        raise ValueError("status.sequence is not an integer")
    ek_digest = status.get("ekDigest", "")
    if not isinstance(ek_digest, str):
        raise ValueError("status.ekDigest is not a string")
    failures = tuple(
        Failure(_str(f, "id", "status.failures[]"), _str(f, "message", "status.failures[]"))
        for f in _list(status.get("failures", []), "status.failures")
    )
    pods = tuple(
        PodTrust(
            *(
                _str(p, k, "status.pods[]")
                for k in ("uid", "namespace", "name", "networkFunction", "state", "reason")
            )
        )
        for p in _list(status.get("pods", []), "status.pods")
    )
    return NodeTrust(
        node=node,
        state=cast(NodeState, state),
        reason=reason,
        verified_at=parse_time(status.get("verifiedAt"), "status.verifiedAt"),
        expires_at=parse_time(status.get("expiresAt"), "status.expiresAt"),
        sequence=sequence,
        failures=failures,
        pods=pods,
        ek_digest=ek_digest,
    )


def _list(value: object, what: str) -> list[Mapping[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
        raise ValueError(f"{what} is not a list of objects")
    return value


def _str(obj: Mapping[str, Any], key: str, what: str) -> str:
    value = obj.get(key, "")
    if not isinstance(value, str):
        raise ValueError(f"{what}.{key} is not a string")
    return value

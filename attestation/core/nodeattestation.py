"""The NodeAttestation custom resource: its wire shape and its conversion to a domain value.

``nodeattestations.trustgate.io/v1alpha1``, cluster-scoped, named after the node. Only the verifier
writes ``status``; everyone else (the webhook, the CLI) reads it and must check its signature first
(see ``attestation.core.signing`` and docs/nodeattestation.md).

``node_trust`` checks the signature and parses the status once, so consumers keep a
``NodeTrust`` and decide from memory. A status that is unsigned, signed by the wrong key or
malformed still becomes a ``NodeTrust`` — with ``defect`` set — so the webhook can say why a node
is refused instead of just "not found".

A verdict is bound to its cluster and its object (payload version 2, ``bind``): the signed
status names the cluster (kube-system's Namespace uid, or an operator's ``--cluster-id``) and the
NodeAttestation's ``metadata.uid``. A reader that passes a ``Binding`` refuses a status copied
from another cluster that shares the key, or onto a NodeAttestation deleted and created again,
and one that claims a longer validity than it accepts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NotRequired, TypedDict, cast

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from attestation.core.clock import parse_time
from attestation.core.names import NODE_STATES, NodeState
from attestation.core.signing import verify_status
from attestation.core.types import Failure

__all__ = [
    "PAYLOAD_VERSION",
    "Binding",
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
    "bind",
    "node_name",
    "node_trust",
]


#: The signed payload's version: 2 carries ``clusterId`` and ``objectUid``; a status without
#: ``payloadVersion`` is version 1 (unbound, written by a verifier before the binding).
PAYLOAD_VERSION = 2


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
    podCount: NotRequired[int]
    podsOmitted: NotRequired[int]
    payloadVersion: NotRequired[int]
    clusterId: NotRequired[str]
    objectUid: NotRequired[str]
    checkpoint: NotRequired[CheckpointWire]
    #: The verifier replica attesting the node (``core.sharding``).
    owner: NotRequired[str]
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


@dataclass(frozen=True, slots=True)
class Binding:
    """What a reader requires of a verdict beyond its signature. ``cluster_id``: the cluster it
    runs in; ``require_bound``: refuse an unbound (version 1) verdict (the webhook; a verifier
    taking over still reads an older verifier's, to keep its EK bindings across an upgrade);
    ``max_validity``: the longest ``expiresAt - verifiedAt`` accepted (None: any)."""

    cluster_id: str
    require_bound: bool = True
    max_validity: timedelta | None = None


def bind(status: Mapping[str, Any], cluster_id: str, object_uid: str) -> dict[str, Any]:
    """``status`` bound to its cluster and object: what the verifier signs."""
    if not cluster_id or not object_uid:
        raise ValueError("a verdict is bound to a cluster id and an object uid, both non-empty")
    return {
        **status,
        "payloadVersion": PAYLOAD_VERSION,
        "clusterId": cluster_id,
        "objectUid": object_uid,
    }


def node_name(obj: Mapping[str, Any]) -> str:
    metadata = obj.get("metadata")
    name = metadata.get("name") if isinstance(metadata, Mapping) else None
    if not isinstance(name, str) or not name:
        raise NodeAttestationError("NodeAttestation has no metadata.name (the node's name)")
    return name


def node_trust(
    obj: Mapping[str, Any],
    public_keys: Mapping[str, Ed25519PublicKey],
    binding: Binding | None = None,
) -> NodeTrust:
    """Check the signature of ``obj``'s status for its node (and, given a ``binding``, that it
    was signed for this cluster and this object, within the validity accepted) and convert it;
    never trusts an unsigned field. Raises ``NodeAttestationError`` only when the object has no
    name."""
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
    if defect is None and binding is not None:
        defect = _binding_defect(node, obj, status, binding)
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


def _binding_defect(
    node: str, obj: Mapping[str, Any], status: Mapping[str, Any], binding: Binding
) -> Failure | None:
    """Why a genuinely signed status is not a verdict for this reader, or None. Run after the
    signature check, so every field read here is the verifier's."""
    version = status.get("payloadVersion")
    if version is None:
        if not binding.require_bound:
            return _validity_defect(node, status, binding)
        return Failure(
            "nodeattestation.unbound",
            f"NodeAttestation {node}: verdict signed without a cluster and object binding "
            "(payload version 1, an older verifier): not accepted",
        )
    if version != PAYLOAD_VERSION:
        return Failure(
            "nodeattestation.payload_version",
            f"NodeAttestation {node}: payload version {version!r} is not {PAYLOAD_VERSION}",
        )
    cluster = status.get("clusterId")
    if cluster != binding.cluster_id:
        return Failure(
            "nodeattestation.other_cluster",
            f"NodeAttestation {node}: verdict signed for cluster {cluster!r}, "
            f"this is {binding.cluster_id!r}",
        )
    metadata = obj.get("metadata")
    uid = metadata.get("uid") if isinstance(metadata, Mapping) else None
    if not uid or status.get("objectUid") != uid:
        return Failure(
            "nodeattestation.other_object",
            f"NodeAttestation {node}: verdict signed for object {status.get('objectUid')!r}, "
            f"this one is {uid!r} (deleted and created again, status copied?)",
        )
    return _validity_defect(node, status, binding)


def _validity_defect(node: str, status: Mapping[str, Any], binding: Binding) -> Failure | None:
    if binding.max_validity is None:
        return None
    try:
        verified = parse_time(status.get("verifiedAt"), "status.verifiedAt")
        expires = parse_time(status.get("expiresAt"), "status.expiresAt")
    except (ValueError, TypeError):
        return None  # the parse that follows names what is wrong
    if expires - verified > binding.max_validity:
        return Failure(
            "nodeattestation.validity_too_long",
            f"NodeAttestation {node}: valid for {(expires - verified).total_seconds():g}s, "
            f"more than the {binding.max_validity.total_seconds():g}s accepted",
        )
    return None


def _list(value: object, what: str) -> list[Mapping[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
        raise ValueError(f"{what} is not a list of objects")
    return value


def _str(obj: Mapping[str, Any], key: str, what: str) -> str:
    value = obj.get(key, "")
    if not isinstance(value, str):
        raise ValueError(f"{what}.{key} is not a string")
    return value

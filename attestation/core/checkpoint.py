"""Resume a node's log where the verifier left it, instead of reading it from zero.

A verifier that restarts, fails over or re-enrolls a node used to read the node's whole IMA log
again; a busy node's log is tens of MiB, and a tenant can grow it at will. The incremental state
that replay needs — the log position (entry index, byte offset), the running PCR 10 per bank, and
the TPM's clock, resetCount and restartCount — rides in the signed NodeAttestation status as
``checkpoint``, and a verifier starts from it.

Why that is safe:

- it is read only from a status whose signature verifies with this verifier's own key(s)
  (``read_checkpoints``); nobody else's state is ever resumed;
- nothing sticky is lost by not reading the entries before it again: the first error finding of
  the host and of each pod rides along (``hostFailures``, ``podFailures``), so an untrusted pod
  or host stays untrusted; a broken log is not checkpointed at all (read from zero, it breaks
  again);
- the TPM decides the rest. A reboot (resetCount went up) means a new log: from zero. A clock or
  counter that went back is a failure, as in any round. And the PCR 10 replay from the
  checkpoint's running value over the entries from its offset must still reach the quoted PCR 10:
  a checkpoint ahead of the node's log, or a log rewritten before it (offsets shifted, entries
  dropped), gives ``ima.pcr_mismatch`` or ``ima.log_malformed``: Untrusted.
"""

from __future__ import annotations

import binascii
import contextlib
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from attestation.core.evidence import MAX_LOG_OFFSET
from attestation.core.nodeattestation import (
    CheckpointWire,
    FindingWire,
    NodeAttestationError,
    node_name,
)
from attestation.core.replay import ReplayState
from attestation.core.signing import verify_status
from attestation.core.types import ClockInfo, Failure, HashAlg
from attestation.core.verdict import AttestationState

__all__ = ["CheckpointError", "checkpoint_of", "read_checkpoints", "resume"]

_INTS = ("imaIndex", "imaOffset", "resetCount", "restartCount", "clock")
#: Findings one checkpoint carries at most: the host's first and each pod's first.
_MAX_FINDINGS: Final = 1024


class CheckpointError(ValueError):
    """A checkpoint that does not have the documented shape; the message names the field."""


#: A finding's message as the checkpoint keeps it (the status has room for ~100 pods' own).
_MESSAGE: Final = 256


def _finding(failure: Failure) -> FindingWire:
    out: FindingWire = {"id": failure.id, "message": failure.message[:_MESSAGE]}
    if failure.pod_uid is not None:
        out["uid"] = failure.pod_uid
    if failure.path is not None:
        out["path"] = failure.path[:_MESSAGE]
    if failure.digest is not None:
        out["digest"] = failure.digest[:_MESSAGE]
    return out


def _first_error(failures: Iterable[Failure]) -> list[FindingWire]:
    return [_finding(f) for f in failures if f.severity == "error"][:1]


def _pod_findings(pod_failures: Mapping[str, tuple[Failure, ...]]) -> list[FindingWire]:
    out = []
    for uid, kept in sorted(pod_failures.items()):
        for finding in _first_error(kept):
            finding["uid"] = uid
            out.append(finding)
    return out


def checkpoint_of(state: AttestationState) -> CheckpointWire | None:
    """What a later verifier may resume from, or None when ``state`` must not be resumed: its log
    is broken (read from zero, it breaks again), or there is no TPM clock yet."""
    if state.log_failure or state.clock is None:
        return None
    return {
        "imaIndex": state.replay.next_index,
        "imaOffset": state.replay.next_offset,
        "pcr10": {alg.value: value.hex() for alg, value in sorted(state.replay.pcrs.items())},
        "resetCount": state.clock.reset_count,
        "restartCount": state.clock.restart_count,
        "clock": state.clock.clock,
        "safe": state.clock.safe,
        "hostFailures": _first_error(state.host_failures),
        "podFailures": _pod_findings(state.pod_failures),
    }


def resume(wire: Mapping[str, Any], ak_public: bytes = b"") -> AttestationState:
    """The attestation state a checkpoint stands for (its AK comes from the enrollment)."""
    for name in _INTS:
        value = wire.get(name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise CheckpointError(f"checkpoint.{name}: expected a non-negative integer")
    if wire["imaOffset"] > MAX_LOG_OFFSET or wire["imaIndex"] > wire["imaOffset"]:
        raise CheckpointError("checkpoint.imaOffset: not a position in a log")
    if not isinstance(wire.get("safe"), bool):
        raise CheckpointError("checkpoint.safe: expected a boolean")
    banks = wire.get("pcr10")
    if not isinstance(banks, Mapping) or not banks:
        raise CheckpointError("checkpoint.pcr10: expected an object of banks")
    pcrs: dict[HashAlg, bytes] = {}
    for bank, value in banks.items():
        try:
            alg = HashAlg(bank)
            digest = bytes.fromhex(value) if isinstance(value, str) else b""
        except (ValueError, binascii.Error):
            raise CheckpointError(f"checkpoint.pcr10.{bank}: not a bank and hex value") from None
        if len(digest) != alg.digest_size:
            raise CheckpointError(f"checkpoint.pcr10.{bank}: expected {alg.digest_size} bytes")
        pcrs[alg] = digest
    clock = ClockInfo(wire["clock"], wire["resetCount"], wire["restartCount"], wire["safe"])
    replay = ReplayState(wire["imaIndex"], wire["imaOffset"], MappingProxyType(pcrs))
    host = tuple(_failure(f, "hostFailures") for f in _list(wire, "hostFailures"))
    pods: dict[str, tuple[Failure, ...]] = {}
    for found in _list(wire, "podFailures"):
        failure = _failure(found, "podFailures")
        if failure.pod_uid is None:
            raise CheckpointError("checkpoint.podFailures[].uid: missing")
        pods[failure.pod_uid] = (*pods.get(failure.pod_uid, ()), failure)
    return AttestationState(
        ak_public=ak_public, replay=replay, clock=clock, host_failures=host,
        pod_failures=MappingProxyType(pods),
    )  # fmt: skip


def _list(wire: Mapping[str, Any], name: str) -> list[Any]:
    value = wire.get(name, [])
    if not isinstance(value, list) or len(value) > _MAX_FINDINGS:
        raise CheckpointError(f"checkpoint.{name}: expected a list of at most {_MAX_FINDINGS}")
    return value


def _failure(found: Any, where: str) -> Failure:
    if not isinstance(found, Mapping):
        raise CheckpointError(f"checkpoint.{where}[]: expected an object")
    text = {}
    for key in ("id", "message", "uid", "path", "digest"):
        value = found.get(key)
        if value is not None and not isinstance(value, str):
            raise CheckpointError(f"checkpoint.{where}[].{key}: expected a string")
        text[key] = value
    if not text["id"]:
        raise CheckpointError(f"checkpoint.{where}[].id: missing")
    return Failure(
        text["id"], text["message"] or "", pod_uid=text["uid"], path=text["path"],
        digest=text["digest"],
    )  # fmt: skip


def read_checkpoints(
    items: Iterable[Mapping[str, Any]], public_keys: Mapping[str, Ed25519PublicKey]
) -> dict[str, CheckpointWire | None]:
    """The checkpoint of each NodeAttestation in ``items`` by node: None for one that carries
    none, is not signed by one of ``public_keys`` or is malformed (such a node is read from
    zero)."""
    out: dict[str, CheckpointWire | None] = {}
    for obj in items:
        try:
            node = node_name(obj)
        except NodeAttestationError:
            continue
        status = obj.get("status")
        out[node] = None
        if not isinstance(status, Mapping) or not isinstance(status.get("checkpoint"), Mapping):
            continue
        wire = status["checkpoint"]
        if verify_status(node, status, public_keys) is not None:
            continue
        with contextlib.suppress(CheckpointError):
            out[node] = checkpoint_of(resume(wire))  # a copy in the wire's own shape
    return out

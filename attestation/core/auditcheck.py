"""Signed checkpoints and whole-trail verification of the audit trail (format: ``core.audit``).

Why checkpoints: a hash chain alone proves nothing to someone who can rewrite the file — they
edit a record and recompute every hash after it. Every so often the verifier appends a
*checkpoint*: a record signed with its Ed25519 key over its own ``seq`` and ``prev``, i.e. over
the head of the chain before it; each rotated file ends with one. Rewriting anything a checkpoint
covers then needs the key. The newest checkpoint is also *published* (an annotation on a Lease
per verifier replica, ``head_lease_name``), so dropping the tail of the file — checkpoints
included — shows as a file that ends before the published head.

What a verified trail proves, and what not (docs/audit.md): records after the newest checkpoint
are covered by nothing yet; whoever holds the key (root on the verifier's node) can sign a
rewritten trail and publish its head.

Pure: bytes, dicts and keys in, a ``TrailReport`` out.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from attestation.core.audit import CHECKPOINT
from attestation.core.signing import ALGORITHM, key_id

__all__ = [
    "Finding",
    "HeadError",
    "check_checkpoint",
    "checkpoint_payload",
    "head_lease_name",
    "make_checkpoint",
    "parse_head",
]

#: Domain separation: a checkpoint's signed bytes can never be a NodeAttestation status's.
_DOMAIN: Final = b"trustgate audit checkpoint v1\n"
_HEAD_LEASE_PREFIX: Final = "trustgate-audit-"
_HEX64: Final = re.compile(r"[0-9a-f]{64}")


class HeadError(ValueError):
    """A published head that is not a checkpoint record (the message says what is wrong)."""


def checkpoint_payload(record: Mapping[str, Any]) -> bytes:
    """The exact bytes a checkpoint's signature covers: every field but ``signature``."""
    body = {k: v for k, v in record.items() if k != "signature"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return _DOMAIN + text.encode()


def make_checkpoint(
    seq: int, prev: str, *, time: str, trail: str, identity: str, key: Ed25519PrivateKey
) -> dict[str, Any]:
    """The checkpoint record at ``seq`` after a line hashing to ``prev``, signed with ``key``."""
    record: dict[str, Any] = {
        "seq": seq,
        "prev": prev,
        "time": time,
        "kind": CHECKPOINT,
        "trail": trail,
        "identity": identity,
        "algorithm": ALGORITHM,
        "keyId": key_id(key.public_key()),
    }
    record["signature"] = base64.b64encode(key.sign(checkpoint_payload(record))).decode()
    return record


def check_checkpoint(record: Mapping[str, Any], keys: Mapping[str, Ed25519PublicKey]) -> str:
    """Empty when ``record`` is signed by one of ``keys`` (by key id); else why not."""
    kid, value = record.get("keyId"), record.get("signature")
    if not isinstance(kid, str) or not isinstance(value, str):
        return "carries no keyId and signature"
    key = keys.get(kid)
    if key is None:
        return f"is signed by key {kid}, which is not among the keys given"
    try:
        key.verify(base64.b64decode(value, validate=True), checkpoint_payload(record))
    except (binascii.Error, InvalidSignature, ValueError, TypeError):
        return (
            f"signature by key {kid} does not verify: the records it covers, or the "
            "checkpoint itself, were changed after it was signed"
        )
    return ""


def head_lease_name(identity: str) -> str:
    """The Lease (in trustgate's namespace) whose annotation holds replica ``identity``'s
    published head: a DNS name, suffixed with a hash when ``identity`` had to be changed."""
    clean = re.sub(r"[^a-z0-9-]+", "-", identity.lower()).strip("-")[:200] or "verifier"
    if clean != identity:
        clean = f"{clean}-{hashlib.sha256(identity.encode()).hexdigest()[:8]}"
    return _HEAD_LEASE_PREFIX + clean


def parse_head(text: str) -> dict[str, Any]:
    """A published head (the annotation's JSON), checked for shape; ``HeadError`` otherwise."""
    try:
        head = json.loads(text)
    except json.JSONDecodeError as e:
        raise HeadError(f"published head is not JSON ({e.msg})") from e
    if not isinstance(head, dict) or head.get("kind") != CHECKPOINT:
        raise HeadError("published head is not a checkpoint record")
    seq, prev = head.get("seq"), head.get("prev")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise HeadError(f"published head has seq {seq!r}, not a record number")
    if not isinstance(prev, str) or not _HEX64.fullmatch(prev):
        raise HeadError("published head has no 64-hex-digit prev")
    if not isinstance(head.get("trail"), str):
        raise HeadError("published head names no trail")
    return head


@dataclass(frozen=True, slots=True)
class Finding:
    """One sign of tampering (or loss): ``id`` stable (``audit.head_dropped``), ``message`` for
    the person reading it, naming the record."""

    id: str
    message: str

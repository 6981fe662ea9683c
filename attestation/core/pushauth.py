"""Authenticated push notifications: a node's agent can wake only its own node.

A push says "my IMA log grew, attest me now". Before, anyone who reached the verifier could send
one for any node; 500 a second for node A (from node B, or a pod) made A's rounds run back to
back. Now every push carries a MAC under a per-node key that only the TPM holding that node's EK
could recover: at enrollment the verifier makes a credential (TPM2_MakeCredential) for the
node's AK with a fresh random secret; the agent recovers it with TPM2_ActivateCredential, and
both ends derive the push key from it (``push_key``). A new enrollment (verifier restart,
failover, the agent's new AK) gives a new secret and so a new key.

Replays: each push carries a counter the agent keeps strictly increasing (nanoseconds of its
clock, so it keeps increasing across agent restarts); the verifier accepts only a counter above
the last one it accepted under the current key. A refused push costs latency only: pull rounds
go on every interval.

Pure: bytes and integers in, a verdict out.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass
from typing import Any, Final, TypedDict

__all__ = [
    "KEY_BYTES",
    "MAC_BYTES",
    "NotifyPayload",
    "Push",
    "PushFormatError",
    "check_push",
    "decode_push",
    "encode_push",
    "push_key",
    "push_mac",
]

KEY_BYTES: Final = 32
MAC_BYTES: Final = 32
#: Counters are unsigned 64-bit (nanoseconds since the epoch fit until 2554).
_MAX_COUNTER: Final = 2**64 - 1
_KEY_LABEL: Final = b"trustgate push key v1\x00"
_MAC_LABEL: Final = b"trustgate push v1\x00"
#: Longest node name Kubernetes allows (a DNS subdomain).
_MAX_NODE: Final = 253


class PushFormatError(ValueError):
    """A push body is not the documented shape; the message names the field."""


class NotifyPayload(TypedDict):
    """``POST /v1/notify`` on the verifier."""

    node: str
    counter: int
    mac: str  # base64 of HMAC-SHA256(push key, label || node || 0 || counter as 8 bytes BE)


@dataclass(frozen=True, slots=True)
class Push:
    node: str
    counter: int
    mac: bytes


def push_key(activation_secret: bytes) -> bytes:
    """The push key both ends derive from the credential secret of an enrollment. A separate
    derivation, so the key is not the secret itself (which the agent returns as its proof)."""
    if not activation_secret:
        raise ValueError("empty activation secret")
    return hmac.new(activation_secret, _KEY_LABEL, hashlib.sha256).digest()


def push_mac(key: bytes, node: str, counter: int) -> bytes:
    """The MAC binding a push to its node and counter."""
    message = _MAC_LABEL + node.encode() + b"\x00" + counter.to_bytes(8, "big")
    return hmac.new(key, message, hashlib.sha256).digest()


def encode_push(key: bytes, node: str, counter: int) -> NotifyPayload:
    mac = push_mac(key, node, counter)
    return {"node": node, "counter": counter, "mac": base64.b64encode(mac).decode()}


def decode_push(body: Any) -> Push:
    """The push a JSON body carries, or PushFormatError naming the field."""
    if not isinstance(body, dict):
        raise PushFormatError(f"push: expected a JSON object, got {type(body).__name__}")
    node = body.get("node")
    if not isinstance(node, str) or not 0 < len(node) <= _MAX_NODE:
        raise PushFormatError("push.node: expected a node name (1-253 characters)")
    counter = body.get("counter")
    if isinstance(counter, bool) or not isinstance(counter, int):
        raise PushFormatError("push.counter: expected an integer")
    if not 0 < counter <= _MAX_COUNTER:
        raise PushFormatError("push.counter: out of range (1 to 2**64-1)")
    mac_text = body.get("mac")
    if not isinstance(mac_text, str) or len(mac_text) > 64:
        raise PushFormatError("push.mac: expected base64 of 32 bytes")
    try:
        mac = base64.b64decode(mac_text, validate=True)
    except (binascii.Error, ValueError):
        raise PushFormatError("push.mac: not base64") from None
    if len(mac) != MAC_BYTES:
        raise PushFormatError(f"push.mac: {len(mac)} bytes, expected {MAC_BYTES}")
    return Push(node, counter, mac)


def check_push(key: bytes | None, last_counter: int, push: Push) -> str | None:
    """Why ``push`` is refused (a stable failure id), or None when it is genuine and new.

    ``key`` is the node's current push key (None: not enrolled by this verifier yet);
    ``last_counter`` the highest counter accepted under it (0: none yet)."""
    if key is None:
        return "push.not_enrolled"
    if not hmac.compare_digest(push_mac(key, push.node, push.counter), push.mac):
        return "push.bad_mac"
    if push.counter <= last_counter:
        return "push.replayed"
    return None

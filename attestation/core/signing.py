"""Sign and verify a NodeAttestation status with the verifier's Ed25519 key.

Why a signature at all: the status lives in the API server, where anyone with ``update`` on
``nodeattestations/status`` (or etcd access) could write ``state: Trusted``. The webhook trusts a
verdict only when it carries a signature by a key it was configured with, so RBAC mistakes cannot
forge trust.

What is signed is a canonical encoding (JSON, sorted keys, no whitespace, UTF-8) of
``{"node": <node name>, **status minus "signature"}``. The node name is inside the signed bytes so
a Trusted status cannot be copied from one node's object onto another's. The cluster and the
object's uid are fields of the status itself (``payloadVersion`` 2, ``nodeattestation.bind``), so
they are signed like the rest and a reader can name which one does not match.

Pure: bytes and dicts in, values out. Verification returns a ``Failure`` rather than raising, like
every other check in the core; only malformed key material raises ``SigningError``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from attestation.core.types import Failure

__all__ = [
    "SigningError",
    "canonical_payload",
    "generate_private_key",
    "key_id",
    "load_private_key_pem",
    "load_public_key_pem",
    "private_key_to_pem",
    "public_key_to_pem",
    "public_keys_by_id",
    "sign_status",
    "verify_status",
]

ALGORITHM = "Ed25519"
SIGNATURE_FIELD = "signature"


class SigningError(ValueError):
    """Key material or a payload that cannot be used for signing (not a verification failure)."""


def key_id(public_key: Ed25519PublicKey) -> str:
    """The first 16 hex digits of SHA-256 over the raw 32-byte public key: short, stable, and
    enough to pick the right key during a rotation."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def canonical_payload(node: str, status: Mapping[str, Any]) -> bytes:
    """The exact bytes the signature covers. Floats that JSON cannot express (NaN, inf) are
    rejected rather than encoded in a way another implementation would not reproduce."""
    if not node:
        raise SigningError("node name is empty: the signature must bind the verdict to a node")
    if "node" in status:
        raise SigningError('status has a "node" field, which would collide with the signed node')
    body = {k: v for k, v in status.items() if k != SIGNATURE_FIELD}
    body["node"] = node
    try:
        text = json.dumps(
            body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
    except (TypeError, ValueError) as e:
        raise SigningError(f"status is not canonical JSON: {e}") from e
    return text.encode("utf-8")


def sign_status(
    node: str, status: Mapping[str, Any], private_key: Ed25519PrivateKey
) -> dict[str, Any]:
    """A copy of ``status`` with a fresh ``signature`` (any old one is replaced)."""
    signature = private_key.sign(canonical_payload(node, status))
    signed = {k: v for k, v in status.items() if k != SIGNATURE_FIELD}
    signed[SIGNATURE_FIELD] = {
        "keyId": key_id(private_key.public_key()),
        "algorithm": ALGORITHM,
        "value": base64.b64encode(signature).decode("ascii"),
    }
    return signed


def verify_status(
    node: str, status: Mapping[str, Any], public_keys: Mapping[str, Ed25519PublicKey]
) -> Failure | None:
    """``None`` when ``status`` is signed for ``node`` by one of ``public_keys`` (by key id),
    else the reason as a ``Failure`` with a ``signature.*`` id."""
    sig = status.get(SIGNATURE_FIELD)
    if not isinstance(sig, Mapping):
        return Failure("signature.missing", f"status of node {node} carries no signature")
    kid, alg, value = sig.get("keyId"), sig.get("algorithm"), sig.get("value")
    if alg != ALGORITHM:
        return Failure("signature.algorithm", f"signature algorithm {alg!r} is not {ALGORITHM}")
    if not isinstance(kid, str) or not isinstance(value, str):
        return Failure("signature.malformed", "signature keyId and value must be strings")
    key = public_keys.get(kid)
    if key is None:
        return Failure("signature.unknown_key", f"signature key {kid} is not a verifier key")
    try:
        raw = base64.b64decode(value, validate=True)
    except binascii.Error:
        return Failure("signature.malformed", "signature value is not base64")
    try:
        payload = canonical_payload(node, status)
    except SigningError as e:
        return Failure("signature.malformed", str(e))
    try:
        key.verify(raw, payload)
    except InvalidSignature:
        return Failure(
            "signature.invalid", f"signature by key {kid} does not match the status of node {node}"
        )
    return None


def generate_private_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def private_key_to_pem(private_key: Ed25519PrivateKey) -> bytes:
    return private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_key_to_pem(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_private_key_pem(data: bytes) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        raise SigningError(f"not an unencrypted PEM private key: {e}") from e
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningError(f"PEM private key is {type(key).__name__}, not Ed25519")
    return key


def load_public_key_pem(data: bytes) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as e:
        raise SigningError(f"not a PEM public key: {e}") from e
    if not isinstance(key, Ed25519PublicKey):
        raise SigningError(f"PEM public key is {type(key).__name__}, not Ed25519")
    return key


def public_keys_by_id(keys: Iterable[Ed25519PublicKey]) -> dict[str, Ed25519PublicKey]:
    """The mapping ``verify_status`` takes; several keys allow a rotation without downtime."""
    return {key_id(k): k for k in keys}

"""IMA file signatures (``ima-sig``'s ``sig`` field): the v2 header and its verification.

``security.ima`` holds ``struct signature_v2_hdr``: type 0x03 (EVM_IMA_XATTR_DIGSIG), version 2,
the kernel's ``hash_algo`` id, a 4-byte key id (the last 4 bytes of SHA-1 over the public key: RSA
as DER PKCS#1, EC as an uncompressed X9.62 point) and a big-endian 2-byte size, then the signature
over the *file digest* (pre-hashed). Verifying it lets a vendor-signed file pass without every
digest being listed in the policy.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from collections.abc import Mapping

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

__all__ = ["PublicKey", "load_keylime_keys", "load_pem_key", "verify_signature"]

PublicKey = RSAPublicKey | EllipticCurvePublicKey

_HEADER = struct.Struct(">BBBIH")
#: include/uapi/linux/hash_info.h ids of the algorithms cryptography can pre-hash.
_HASH_IDS: dict[int, hashes.HashAlgorithm] = {
    2: hashes.SHA1(),  # noqa: S303 - old signatures use it; the policy decides on keys
    4: hashes.SHA256(),
    5: hashes.SHA384(),
    6: hashes.SHA512(),
    7: hashes.SHA224(),
}


def keyid_v2(key: PublicKey) -> int:
    if isinstance(key, RSAPublicKey):
        raw = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    else:
        raw = key.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
    return int.from_bytes(hashlib.sha1(raw).digest()[-4:], "big")  # noqa: S324 - the kernel's id


def _checked(key: object) -> PublicKey:
    if not isinstance(key, RSAPublicKey | EllipticCurvePublicKey):
        raise ValueError(f"{type(key).__name__} keys cannot sign IMA files (RSA or EC only)")
    return key


def load_pem_key(pem: bytes) -> tuple[int, PublicKey]:
    """A PEM public key or X.509 certificate -> (key id v2, key)."""
    try:
        if b"CERTIFICATE" in pem:
            key = _checked(x509.load_pem_x509_certificate(pem).public_key())
        else:
            key = _checked(serialization.load_pem_public_key(pem))
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise ValueError(f"not a PEM public key or certificate: {e}") from e
    return keyid_v2(key), key


def load_keylime_keys(text: str) -> dict[int, PublicKey]:
    """Keylime's ``verification-keys``: a JSON keyring ``{"pubkeys": [base64 DER], "keyids":
    [int]}``, or a JSON map of named keyrings (each possibly JSON-quoted once more)."""
    try:
        obj = json.loads(text)
        if isinstance(obj, str):
            obj = json.loads(obj)
        if not isinstance(obj, dict):
            raise ValueError("must be a JSON object of keyrings")
        out: dict[int, PublicKey] = {}
        # keylime-policy writes one keyring; ImaKeyrings.to_string() a map of named ones
        rings = [obj] if "pubkeys" in obj else list(obj.values())
        for ring in rings:
            ring_obj = json.loads(ring) if isinstance(ring, str) else ring
            pubkeys = ring_obj["pubkeys"]
            keyids = ring_obj.get("keyids") or [None] * len(pubkeys)
            for b64, keyid in zip(pubkeys, keyids, strict=True):
                key = _checked(serialization.load_der_public_key(base64.b64decode(b64)))
                out[keyid_v2(key) if keyid is None else int(keyid)] = key
    except (ValueError, TypeError, KeyError, UnsupportedAlgorithm) as e:
        raise ValueError(f"not Keylime verification keys: {e}") from e
    return out


def verify_signature(
    signature: bytes, digest_alg: str, digest: bytes, keys: Mapping[int, PublicKey]
) -> str | None:
    """None when ``signature`` is a valid v2 IMA signature over ``digest`` by one of ``keys``,
    else why not (for the failure message)."""
    if len(signature) < _HEADER.size:
        return "signature header is truncated"
    kind, version, algo, keyid, size = _HEADER.unpack_from(signature)
    if kind != 3 or version != 2:
        return f"not an IMA v2 digital signature (type {kind}, version {version})"
    if size != len(signature) - _HEADER.size:
        return f"signature size {size} does not match the {len(signature) - _HEADER.size} bytes"
    hash_alg = _HASH_IDS.get(algo)
    if hash_alg is None or hash_alg.name != digest_alg:
        return f"signature hash algorithm {algo} does not match the {digest_alg} file digest"
    key = keys.get(keyid)
    if key is None:
        return f"no policy key has id {keyid:08x}"
    body = signature[_HEADER.size :]
    try:
        if isinstance(key, RSAPublicKey):
            key.verify(body, digest, padding.PKCS1v15(), Prehashed(hash_alg))
        else:
            key.verify(body, digest, ec.ECDSA(Prehashed(hash_alg)))
    except (InvalidSignature, ValueError):
        return f"signature by key {keyid:08x} does not verify"
    return None

"""Pure AK enrollment: trust the EK through its certificate, judge the AK, and bind the two with
a credential only that TPM can activate (TPM 2.0 Part 1 §24, Part 3 TPM2_MakeCredential).

The chain is verified here rather than with ``cryptography.x509.verification``: EK certificates
carry a critical subjectAltName with a directoryName, a TPM-specific EKU and an empty subject,
which a WebPKI verifier rightly refuses. The checks kept are the ones that carry trust: issuer
name and signature per link, CA basic constraints on issuers, validity at an injected ``now``.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.decrepit.ciphers.modes import CFB
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from attestation.core.tpm_types import Public, QuoteParseError, parse_public
from attestation.core.tpm_types.constants import (
    ALG_ECC,
    ALG_RSA,
    OBJ_DECRYPT,
    OBJ_FIXED_PARENT,
    OBJ_FIXED_TPM,
    OBJ_RESTRICTED,
    OBJ_SENSITIVE_DATA_ORIGIN,
    OBJ_SIGN,
)
from attestation.core.types import Failure, HashAlg

__all__ = [
    "Credential",
    "EkBinding",
    "EnrollParseError",
    "ak_name",
    "bind_ek",
    "check_activation",
    "check_ak",
    "ek_digest",
    "kdfa",
    "make_credential",
    "verify_ek",
]

_MAX_CHAIN: Final = 8
_AK_REQUIRED: Final = (
    (OBJ_FIXED_TPM, "fixedTPM"),
    (OBJ_FIXED_PARENT, "fixedParent"),
    (OBJ_SENSITIVE_DATA_ORIGIN, "sensitiveDataOrigin"),
    (OBJ_RESTRICTED, "restricted"),
    (OBJ_SIGN, "sign"),
)
_HASHES: Final[dict[HashAlg, Callable[[], hashes.HashAlgorithm]]] = {
    HashAlg.SHA256: hashes.SHA256,
    HashAlg.SHA384: hashes.SHA384,
    HashAlg.SHA512: hashes.SHA512,
}


class EnrollParseError(ValueError):
    """Malformed enrollment input: an EK certificate, CA bundle or TPM public area."""


def _public(data: bytes, what: str) -> Public:
    try:
        return parse_public(data)
    except QuoteParseError as e:
        raise EnrollParseError(f"{what}: {e}") from e


# --- EK certificate chain ----------------------------------------------------------------------


def load_ca_bundle(pem: bytes) -> tuple[x509.Certificate, ...]:
    """The CA certificates (roots and intermediates) of a PEM bundle."""
    try:
        certs = tuple(x509.load_pem_x509_certificates(pem))
    except ValueError as e:
        raise EnrollParseError(f"CA bundle: {e}") from e
    return certs


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):  # name mismatch, odd key, bad signature
        return False
    return True


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return False
    return constraints.ca


def _expired(cert: x509.Certificate, now: datetime, role: str) -> Failure | None:
    if cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        return None
    return Failure(
        "enroll.ek_cert_expired",
        f"the {role} certificate {cert.subject.rfc4514_string() or '(empty subject)'} is valid "
        f"from {cert.not_valid_before_utc:%Y-%m-%d} to {cert.not_valid_after_utc:%Y-%m-%d}, "
        f"not at {now:%Y-%m-%d %H:%M}",
    )


def verify_ek_chain(
    ek_cert: x509.Certificate, cas: Sequence[x509.Certificate], now: datetime
) -> tuple[Failure, ...]:
    """Check the EK certificate chains to a certificate of the CA bundle, every certificate on
    the way is valid at ``now`` and every issuer is a CA. Every bundle certificate is a trust
    anchor, as the operator chose them; the walk continues up to a self-signed root if present."""
    failures: list[Failure] = []
    expired = _expired(ek_cert, now, "EK")
    if expired:
        failures.append(expired)
    cert = ek_cert
    for depth in range(_MAX_CHAIN):
        issuer = next((ca for ca in cas if _is_ca(ca) and _issued_by(cert, ca)), None)
        if issuer is None:
            if depth == 0:
                failures.append(
                    Failure(
                        "enroll.ek_chain_untrusted",
                        f"no CA in the bundle issued the EK certificate "
                        f"(issuer {cert.issuer.rfc4514_string()})",
                    )
                )
            return tuple(failures)
        expired = _expired(issuer, now, "issuer")
        if expired:
            failures.append(expired)
        if issuer.subject == issuer.issuer and _issued_by(issuer, issuer):
            return tuple(failures)
        cert = issuer
    failures.append(Failure("enroll.ek_chain_untrusted", "the EK certificate chain is too long"))
    return tuple(failures)


def verify_ek(
    ek_cert_der: bytes, ek_public: bytes, ca_bundle_pem: bytes, now: datetime
) -> tuple[Failure, ...]:
    """Is this EK a genuine TPM's? Its certificate must chain to the bundle and certify exactly
    the EK public area the agent reported (else the agent could swap in a key of its own)."""
    try:
        cert = x509.load_der_x509_certificate(ek_cert_der)
    except ValueError as e:
        raise EnrollParseError(f"EK certificate: {e}") from e
    ek = _public(ek_public, "EK public")
    failures = list(verify_ek_chain(cert, load_ca_bundle(ca_bundle_pem), now))
    if cert.public_key() != ek.public_key():
        failures.append(
            Failure("enroll.ek_key_mismatch", "the EK certificate certifies a different key")
        )
    return tuple(failures)


# --- the AK -------------------------------------------------------------------------------------


def ak_name(ak_public: bytes) -> bytes:
    """The AK's TPM name: nameAlg (u16 BE) || H_nameAlg(TPMT_PUBLIC)."""
    return _public(ak_public, "AK public").name


def check_ak(ak_public: bytes) -> tuple[Failure, ...]:
    """An AK must be a restricted signing key that never leaves its TPM: a restricted key signs
    only TPM-made structures, so a quote cannot be forged by signing arbitrary bytes."""
    ak = _public(ak_public, "AK public")
    missing = [name for bit, name in _AK_REQUIRED if not ak.attributes & bit]
    problems = [f"missing {', '.join(missing)}"] if missing else []
    if ak.attributes & OBJ_DECRYPT:
        problems.append("it is also a decryption key")
    if ak.name_alg not in _HASHES:
        problems.append(f"nameAlg {ak.name_alg.value} is too weak")
    if not problems:
        return ()
    return (Failure("enroll.ak_attributes_invalid", "the AK is unfit: " + "; ".join(problems)),)


# --- MakeCredential -------------------------------------------------------------------------------


def kdfa(
    alg: HashAlg, key: bytes, label: bytes, context_u: bytes, context_v: bytes, bits: int
) -> bytes:
    """KDFa (Part 1 §11.4.10.2): counter-mode HMAC KDF (SP 800-108)."""
    out = b""
    counter = 0
    tail = label + b"\0" + context_u + context_v + struct.pack(">I", bits)
    while len(out) * 8 < bits:
        counter += 1
        out += hmac.new(key, struct.pack(">I", counter) + tail, alg.value).digest()
    return out[: (bits + 7) // 8]


def kdfe(alg: HashAlg, z: bytes, label: bytes, party_u: bytes, party_v: bytes, bits: int) -> bytes:
    """KDFe (Part 1 §11.4.10.3): the SP 800-56A concatenation KDF over an ECDH secret."""
    out = b""
    counter = 0
    tail = z + label + b"\0" + party_u + party_v
    while len(out) * 8 < bits:
        counter += 1
        out += hashlib.new(alg.value, struct.pack(">I", counter) + tail).digest()
    return out[: (bits + 7) // 8]


@dataclass(frozen=True, slots=True)
class Credential:
    """MakeCredential's output in the wire form ``Tpm.activate_credential`` takes: a marshalled
    TPM2B_ID_OBJECT and a marshalled TPM2B_ENCRYPTED_SECRET."""

    credential_blob: bytes
    encrypted_secret: bytes


def _tpm2b(data: bytes) -> bytes:
    return struct.pack(">H", len(data)) + data


def _seed(ek: Public, random: Callable[[int], bytes]) -> tuple[bytes, bytes]:
    """A fresh seed and its encryption to the EK (the TPM2B_ENCRYPTED_SECRET's contents)."""
    size = ek.name_alg.digest_size
    if ek.type == ALG_RSA:
        seed = random(size)
        key = ek.public_key()
        assert isinstance(key, rsa.RSAPublicKey)
        algorithm = _HASHES[ek.name_alg]()
        oaep = padding.OAEP(padding.MGF1(algorithm), algorithm, b"IDENTITY\0")
        return seed, key.encrypt(seed, oaep)
    key_ec = ek.public_key()
    assert isinstance(key_ec, ec.EllipticCurvePublicKey)
    ephemeral = ec.generate_private_key(key_ec.curve)
    z = ephemeral.exchange(ec.ECDH(), key_ec)
    point = ephemeral.public_key().public_numbers()
    width = (key_ec.curve.key_size + 7) // 8
    eph_x, eph_y = point.x.to_bytes(width, "big"), point.y.to_bytes(width, "big")
    seed = kdfe(ek.name_alg, z, b"IDENTITY", eph_x, ek.x.rjust(width, b"\0"), size * 8)
    return seed, _tpm2b(eph_x) + _tpm2b(eph_y)


def make_credential(
    ek_public: bytes,
    ak_name_bytes: bytes,
    secret: bytes,
    *,
    random: Callable[[int], bytes] = os.urandom,
) -> Credential:
    """TPM2_MakeCredential in software: wrap ``secret`` so only the TPM holding this EK, with an
    object named ``ak_name_bytes`` loaded, can recover it with TPM2_ActivateCredential."""
    ek = _public(ek_public, "EK public")
    if ek.type not in (ALG_RSA, ALG_ECC) or ek.name_alg not in _HASHES:
        raise EnrollParseError("EK public: not an RSA or ECC storage key with a SHA-2 nameAlg")
    if not ek.sym_bits:
        raise EnrollParseError("EK public: no symmetric algorithm to protect a credential")
    if not 0 < len(secret) <= ek.name_alg.digest_size:
        raise ValueError(f"secret must be 1..{ek.name_alg.digest_size} bytes")
    seed, encrypted_seed = _seed(ek, random)
    sym_key = kdfa(ek.name_alg, seed, b"STORAGE", ak_name_bytes, b"", ek.sym_bits)
    encryptor = Cipher(algorithms.AES(sym_key), CFB(bytes(16))).encryptor()
    enc_identity = encryptor.update(_tpm2b(secret)) + encryptor.finalize()
    hmac_key = kdfa(ek.name_alg, seed, b"INTEGRITY", b"", b"", ek.name_alg.digest_size * 8)
    outer_hmac = hmac.new(hmac_key, enc_identity + ak_name_bytes, ek.name_alg.value).digest()
    return Credential(
        credential_blob=_tpm2b(_tpm2b(outer_hmac) + enc_identity),
        encrypted_secret=_tpm2b(encrypted_seed),
    )


def check_activation(expected_secret: bytes, returned_secret: bytes) -> tuple[Failure, ...]:
    """The TPM proved it holds both the EK and the named AK iff it returned the secret."""
    if hmac.compare_digest(expected_secret, returned_secret):
        return ()
    return (
        Failure(
            "enroll.activation_failed",
            "the TPM did not return the credential's secret: the AK is not bound to this EK",
        ),
    )


# --- binding a node to its EK -------------------------------------------------------------------


def ek_digest(ek_public: bytes) -> str:
    """SHA-256 (hex) of the EK's SubjectPublicKeyInfo: what a node is bound to. An operator
    computes the same from the EK certificate (``openssl x509 -pubkey -noout | openssl pkey
    -pubin -outform DER | sha256sum``); the key alone, so a re-issued certificate keeps it."""
    key = _public(ek_public, "EK public").public_key()
    return hashlib.sha256(
        key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    ).hexdigest()


@dataclass(frozen=True, slots=True)
class EkBinding:
    """What an enrollment that proved its EK means for the node's pin. ``pin`` is what the
    signed status carries afterwards (the old pin on a failure); ``same_ek`` says the node's
    TPM is the one it was bound to, so what is known of its clock still holds."""

    pin: str
    failures: tuple[Failure, ...] = ()
    same_ek: bool = False


def bind_ek(
    node: str, digest: str, pinned: str, approved: str, pins: Mapping[str, str]
) -> EkBinding:
    """Is the TPM that just proved EK ``digest`` the one ``node`` may use?

    The agent's claim of a node name proves nothing: any genuine TPM could answer for any node
    (a relay). So a node is bound to the first EK it enrolled with (``pinned``, from its signed
    status). Another EK — or, at first enrollment, an EK another node is bound to (``pins``, by
    node) — is refused until an operator approves exactly that EK (``approved``, written by a
    cluster admin: see docs/nodeattestation.md)."""
    if digest == pinned:
        return EkBinding(pin=digest, same_ek=True)
    if digest == approved:
        return EkBinding(pin=digest)
    approve = f"an operator approves it with `trustgate node approve {node} --ek {digest}`"
    if pinned:
        why = (
            f"node {node} is bound to the TPM with EK {pinned}, this agent's TPM has EK "
            f"{digest}: refused until {approve}"
        )
        return EkBinding(pin=pinned, failures=(Failure("enroll.ek_changed", why),))
    owners = sorted(other for other, pin in pins.items() if pin == digest and other != node)
    if owners:
        why = (
            f"the TPM with EK {digest} is bound to node {owners[0]}: it cannot also be "
            f"{node} until {approve}"
        )
        return EkBinding(pin="", failures=(Failure("enroll.ek_reused", why),))
    return EkBinding(pin=digest)

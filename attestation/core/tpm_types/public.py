"""TPMT_PUBLIC (Part 2, 12.2.4) of an RSA or ECC key: the EK and the AK."""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import Final

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from attestation.core.tpm_types.constants import (
    ALG_ECC,
    ALG_ECDAA,
    ALG_ECDH,
    ALG_ECDSA,
    ALG_NULL,
    ALG_OAEP,
    ALG_RSA,
    ALG_RSAES,
    ALG_RSAPSS,
    ALG_RSASSA,
    ECC_NIST_P256,
    ECC_NIST_P384,
    ECC_NIST_P521,
)
from attestation.core.tpm_types.reader import U16, QuoteParseError, Reader, hash_alg
from attestation.core.types import HashAlg

__all__ = ["Public", "PublicKey", "parse_public"]

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey

_CURVES: Final[dict[int, ec.EllipticCurve]] = {
    ECC_NIST_P256: ec.SECP256R1(),
    ECC_NIST_P384: ec.SECP384R1(),
    ECC_NIST_P521: ec.SECP521R1(),
}
_PUB_HDR: Final = struct.Struct(">HHI")  # type, nameAlg, objectAttributes
_RSA_SCHEMES: Final = frozenset({ALG_RSASSA, ALG_RSAPSS, ALG_OAEP})
_ECC_SCHEMES: Final = frozenset({ALG_ECDSA, ALG_ECDH, ALG_ECDAA})


@dataclass(frozen=True, slots=True)
class Public:
    """The parts of a TPMT_PUBLIC (RSA or ECC key) trustgate judges.

    ``raw`` is the exact TPMT_PUBLIC bytes: the object's name is computed over them.
    ``scheme``/``scheme_hash`` are the key's signing or decryption scheme (ALG_NULL if none);
    ``symmetric`` is the parent's symmetric algorithm (ALG_NULL for a non-storage key) and
    ``sym_bits`` its key size.
    """

    raw: bytes
    type: int
    name_alg: HashAlg
    attributes: int
    auth_policy: bytes
    symmetric: int
    sym_bits: int
    scheme: int
    scheme_hash: HashAlg | None
    key_bits: int
    exponent: int
    curve: int
    modulus: bytes
    x: bytes
    y: bytes

    @property
    def name(self) -> bytes:
        """The TPM object name: nameAlg (u16) || H_nameAlg(TPMT_PUBLIC)."""
        return (
            U16.pack(self.name_alg.tpm_alg_id) + hashlib.new(self.name_alg.value, self.raw).digest()
        )

    def public_key(self) -> PublicKey:
        """The key as a ``cryptography`` object; invalid numbers are a parse error."""
        try:
            if self.type == ALG_RSA:
                exp = self.exponent or 65537
                return rsa.RSAPublicNumbers(exp, int.from_bytes(self.modulus, "big")).public_key()
            curve = _CURVES[self.curve]
            point = ec.EllipticCurvePublicNumbers(
                int.from_bytes(self.x, "big"), int.from_bytes(self.y, "big"), curve
            )
            return point.public_key()
        except ValueError as e:
            raise QuoteParseError(f"TPMT_PUBLIC.unique: not a valid public key ({e})") from e


def _scheme(r: Reader, with_hash: frozenset[int]) -> tuple[int, HashAlg | None]:
    scheme = r.u16("parameters.scheme")
    if scheme == ALG_NULL:
        return scheme, None
    if scheme == ALG_RSAES:
        return scheme, None
    if scheme not in with_hash:
        raise r.fail("parameters.scheme", f"unsupported scheme 0x{scheme:04x}")
    alg = hash_alg(r.u16("parameters.scheme.hashAlg"), "TPMT_PUBLIC.parameters.scheme.hashAlg")
    if scheme == ALG_ECDAA:
        r.u16("parameters.scheme.count")
    return scheme, alg


def parse_public(data: bytes) -> Public:
    """Parse a TPMT_PUBLIC of an RSA or ECC key. A TPM2B_PUBLIC (size-prefixed) is accepted
    too, as ``tpm2_readpublic`` and many agents send that form."""
    buf = bytes(data)
    if len(buf) >= 2 and U16.unpack_from(buf, 0)[0] == len(buf) - 2:
        buf = buf[2:]
    r = Reader(buf, "TPMT_PUBLIC")
    typ, name_id, attrs = r.header(_PUB_HDR, "type")
    if typ not in (ALG_RSA, ALG_ECC):
        raise QuoteParseError(f"TPMT_PUBLIC.type at offset 0: unsupported 0x{typ:04x}")
    name_alg = hash_alg(name_id, "TPMT_PUBLIC.nameAlg")
    policy = r.tpm2b("authPolicy")
    sym = r.u16("parameters.symmetric.algorithm")
    sym_bits = 0
    if sym != ALG_NULL:
        sym_bits = r.u16("parameters.symmetric.keyBits")
        r.u16("parameters.symmetric.mode")
    modulus = x = y = b""
    exponent = curve = 0
    if typ == ALG_RSA:
        scheme, scheme_hash = _scheme(r, _RSA_SCHEMES)
        key_bits = r.u16("parameters.keyBits")
        exponent = r.u32("parameters.exponent")
        modulus = r.tpm2b("unique.rsa")
        if key_bits not in (1024, 2048, 3072, 4096) or len(modulus) * 8 != key_bits:
            raise r.fail("unique.rsa", f"{len(modulus)}-byte modulus for keyBits {key_bits}")
    else:
        scheme, scheme_hash = _scheme(r, _ECC_SCHEMES)
        curve = r.u16("parameters.curveID")
        if curve not in _CURVES:
            raise r.fail("parameters.curveID", f"unsupported curve 0x{curve:04x}")
        key_bits = _CURVES[curve].key_size
        kdf = r.u16("parameters.kdf.scheme")
        if kdf != ALG_NULL:
            hash_alg(r.u16("parameters.kdf.hashAlg"), "TPMT_PUBLIC.parameters.kdf.hashAlg")
        x = r.tpm2b("unique.ecc.x")
        y = r.tpm2b("unique.ecc.y")
    r.end()
    return Public(
        raw=buf,
        type=typ,
        name_alg=name_alg,
        attributes=attrs,
        auth_policy=policy,
        symmetric=sym,
        sym_bits=sym_bits,
        scheme=scheme,
        scheme_hash=scheme_hash,
        key_bits=key_bits,
        exponent=exponent,
        curve=curve,
        modulus=modulus,
        x=x,
        y=y,
    )

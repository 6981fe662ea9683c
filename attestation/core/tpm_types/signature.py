"""TPMT_SIGNATURE (Part 2, 11.3.4) made by an RSASSA, RSAPSS or ECDSA key."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from attestation.core.tpm_types.constants import ALG_ECDSA, ALG_RSAPSS, ALG_RSASSA
from attestation.core.tpm_types.reader import HASH_BY_ID, U16, QuoteParseError, Reader, hash_alg
from attestation.core.types import HashAlg

__all__ = ["Signature", "parse_signature"]

_SIG_HDR: Final = struct.Struct(">HH")  # sigAlg, hashAlg
_SIG_HDR_SIZE: Final = struct.Struct(">HHH")  # sigAlg, hashAlg, first TPM2B size


@dataclass(frozen=True, slots=True)
class Signature:
    """A TPMT_SIGNATURE. ``sig`` is the RSA signature, or ``r || s`` fields kept apart for ECDSA."""

    sig_alg: int
    hash_alg: HashAlg
    sig: bytes = b""
    r: bytes = b""
    s: bytes = b""


def parse_signature(data: bytes) -> Signature:
    """Parse a TPMT_SIGNATURE (fast path for well-formed input, as for
    :func:`~attestation.core.tpm_types.attest.parse_attest`)."""
    buf = data if type(data) is bytes else bytes(data)
    try:
        sig_alg, hash_id, size = _SIG_HDR_SIZE.unpack_from(buf, 0)
        alg = HASH_BY_ID[hash_id]
        if sig_alg == ALG_ECDSA:
            sig_r = buf[6 : 6 + size]
            (size_s,) = U16.unpack_from(buf, 6 + size)
            o = 8 + size
            if o + size_s == len(buf):
                return Signature(sig_alg, alg, b"", sig_r, buf[o:])
        elif sig_alg in (ALG_RSASSA, ALG_RSAPSS) and 6 + size == len(buf):
            return Signature(sig_alg, alg, buf[6:])
    except (struct.error, KeyError):
        pass
    return _parse_signature_checked(buf)


def _parse_signature_checked(buf: bytes) -> Signature:
    r = Reader(buf, "TPMT_SIGNATURE")
    sig_alg, hash_id = r.header(_SIG_HDR, "sigAlg")
    alg = hash_alg(hash_id, "TPMT_SIGNATURE.hash")
    if sig_alg == ALG_ECDSA:
        sig_r = r.tpm2b("signatureR")
        sig_s = r.tpm2b("signatureS")
        r.end()
        return Signature(sig_alg, alg, r=sig_r, s=sig_s)
    if sig_alg in (ALG_RSASSA, ALG_RSAPSS):
        sig = r.tpm2b("sig")
        r.end()
        return Signature(sig_alg, alg, sig=sig)
    raise QuoteParseError(f"TPMT_SIGNATURE.sigAlg at offset 0: unsupported 0x{sig_alg:04x}")

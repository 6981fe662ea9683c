"""TPMS_ATTEST of a quote (Part 2, 10.12.12) and the TPML_PCR_SELECTION it carries (10.9.7)."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

from attestation.core.tpm_types.constants import TPM_ST_ATTEST_QUOTE
from attestation.core.tpm_types.reader import U16, U32, QuoteParseError, Reader, hash_alg
from attestation.core.types import ClockInfo, HashAlg

__all__ = ["Attest", "PcrSelection", "parse_attest"]

PcrSelection = tuple[tuple[HashAlg, tuple[int, ...]], ...]
"""A TPML_PCR_SELECTION in wire order: (bank, ascending PCR indices) per entry."""

_HDR: Final = struct.Struct(">IH")  # magic, type
_HDR_SIZE: Final = struct.Struct(">IHH")  # magic, type, qualifiedSigner.size
_CLOCK: Final = struct.Struct(">QIIBQ")  # clock, resetCount, restartCount, safe, firmwareVersion


@dataclass(frozen=True, slots=True)
class Attest:
    """A TPMS_ATTEST whose ``attested`` member is a TPMS_QUOTE_INFO."""

    magic: int
    type: int
    qualified_signer: bytes
    extra_data: bytes
    clock_info: ClockInfo
    firmware_version: int
    pcr_selection: PcrSelection
    pcr_digest: bytes


def parse_attest(data: bytes) -> Attest:
    """Parse a TPMS_ATTEST of a quote. Magic and type are returned, not judged: the verifier
    reports them as failures with their own ids.

    A quote is parsed on every round of every node, so well-formed input takes a straight-line
    path with ``unpack_from`` and a cached PCR selection (nodes quote the same PCRs every time);
    anything odd is re-parsed by the checked reader, which names the field and offset.
    """
    buf = data if type(data) is bytes else bytes(data)
    try:
        magic, typ, size = _HDR_SIZE.unpack_from(buf, 0)
        o = 8 + size
        signer = buf[8:o]
        (size,) = U16.unpack_from(buf, o)
        extra = buf[o + 2 : o + 2 + size]
        o += 2 + size
        clock, reset, restart, safe, firmware = _CLOCK.unpack_from(buf, o)
        o += _CLOCK.size
        start = o
        (count,) = U32.unpack_from(buf, o)
        o += 4
        for _ in range(count if count <= 16 else 0):
            o += 3 + buf[o + 2]
        selection = _cached_selection(buf[start:o])
        (size,) = U16.unpack_from(buf, o)
        digest = buf[o + 2 : o + 2 + size]
        o += 2 + size
    except (struct.error, IndexError, QuoteParseError):
        return _parse_attest_checked(buf)
    if o != len(buf) or typ != TPM_ST_ATTEST_QUOTE or safe > 1 or count > 16:
        return _parse_attest_checked(buf)
    return Attest(
        magic, typ, signer, extra, ClockInfo(clock, reset, restart, bool(safe)), firmware,
        selection, digest,
    )  # fmt: skip


@lru_cache(maxsize=256)
def _cached_selection(raw: bytes) -> PcrSelection:
    r = Reader(raw, "TPMS_ATTEST")
    selection = _pcr_selection(r)
    r.end()
    return selection


def _parse_attest_checked(buf: bytes) -> Attest:
    r = Reader(buf, "TPMS_ATTEST")
    magic, typ = r.header(_HDR, "magic")
    if typ != TPM_ST_ATTEST_QUOTE:
        raise r.fail("type", f"0x{typ:04x} is not TPM_ST_ATTEST_QUOTE; only quotes are parsed")
    signer = r.tpm2b("qualifiedSigner")
    extra = r.tpm2b("extraData")
    clock, reset, restart, safe, firmware = _CLOCK.unpack(r.take(_CLOCK.size, "clockInfo"))
    if safe > 1:
        raise r.fail("clockInfo.safe", f"TPMI_YES_NO is {safe}")
    selection = _pcr_selection(r)
    digest = r.tpm2b("pcrDigest")
    r.end()
    return Attest(
        magic, typ, signer, extra, ClockInfo(clock, reset, restart, bool(safe)), firmware,
        selection, digest,
    )  # fmt: skip


def _pcr_selection(r: Reader) -> PcrSelection:
    count = r.u32("pcrSelect.count")
    if count > 16:
        raise r.fail("pcrSelect.count", f"{count} banks is more than any TPM has")
    out = []
    for i in range(count):
        alg = hash_alg(r.u16(f"pcrSelect[{i}].hash"), f"{r.what}.pcrSelect[{i}].hash")
        bitmap = r.take(r.u8(f"pcrSelect[{i}].sizeofSelect"), f"pcrSelect[{i}].pcrSelect")
        pcrs = tuple(
            byte_i * 8 + bit
            for byte_i, byte in enumerate(bitmap)
            for bit in range(8)
            if byte >> bit & 1
        )
        out.append((alg, pcrs))
    return tuple(out)

"""Pure parsers of the TPM 2.0 structures trustgate receives as untrusted bytes.

TPM 2.0 Library Part 2 (Structures) defines every layout here; all integers are big-endian.
We parse with ``struct`` instead of tpm2-pytss so the verifier core needs no TSS library and
runs fast: a quote is parsed on every attestation round of every node.

Every parser raises :class:`QuoteParseError` (a ``ValueError``) naming the structure, field and
offset on malformed input, and nothing else.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from attestation.core.types import ClockInfo, HashAlg


class QuoteParseError(ValueError):
    """Malformed TPM structure bytes (attestation, signature or public area)."""


# TPM_ALG_ID values (Part 2, 6.3)
ALG_RSA: Final = 0x0001
ALG_KEYEDHASH: Final = 0x0008
ALG_NULL: Final = 0x0010
ALG_RSASSA: Final = 0x0014
ALG_RSAES: Final = 0x0015
ALG_RSAPSS: Final = 0x0016
ALG_OAEP: Final = 0x0017
ALG_ECDSA: Final = 0x0018
ALG_ECDH: Final = 0x0019
ALG_ECDAA: Final = 0x001A
ALG_ECC: Final = 0x0023
ALG_SYMCIPHER: Final = 0x0025
ALG_AES: Final = 0x0006
ALG_CFB: Final = 0x0043

# TPM_ECC_CURVE values (Part 2, 6.4)
ECC_NIST_P256: Final = 0x0003
ECC_NIST_P384: Final = 0x0004
ECC_NIST_P521: Final = 0x0005
_CURVES: Final[dict[int, ec.EllipticCurve]] = {
    ECC_NIST_P256: ec.SECP256R1(),
    ECC_NIST_P384: ec.SECP384R1(),
    ECC_NIST_P521: ec.SECP521R1(),
}

# TPMA_OBJECT bits (Part 2, 8.3)
OBJ_FIXED_TPM: Final = 0x00000002
OBJ_FIXED_PARENT: Final = 0x00000010
OBJ_SENSITIVE_DATA_ORIGIN: Final = 0x00000020
OBJ_RESTRICTED: Final = 0x00010000
OBJ_DECRYPT: Final = 0x00020000
OBJ_SIGN: Final = 0x00040000

TPM_GENERATED_VALUE: Final = 0xFF544347
TPM_ST_ATTEST_QUOTE: Final = 0x8018

_HASH_NAMES: Final = {0x0004: "sha1", 0x000B: "sha256", 0x000C: "sha384", 0x000D: "sha512"}
_HASH_BY_ID: Final = {alg_id: HashAlg(name) for alg_id, name in _HASH_NAMES.items()}
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_HDR = struct.Struct(">IH")  # magic, type
_HDR_SIZE = struct.Struct(">IHH")  # magic, type, qualifiedSigner.size
_CLOCK = struct.Struct(">QIIBQ")  # clock, resetCount, restartCount, safe, firmwareVersion
_SIG_HDR = struct.Struct(">HH")  # sigAlg, hashAlg
_SIG_HDR_SIZE = struct.Struct(">HHH")  # sigAlg, hashAlg, first TPM2B size
_PUB_HDR = struct.Struct(">HHI")  # type, nameAlg, objectAttributes


def hash_alg(alg_id: int, what: str) -> HashAlg:
    """The :class:`HashAlg` for a TPM_ALG_ID, or a parse error naming ``what``."""
    name = _HASH_NAMES.get(alg_id)
    if name is None:
        raise QuoteParseError(f"{what}: unsupported hash algorithm 0x{alg_id:04x}")
    return HashAlg(name)


class _Reader:
    """A bounds-checked cursor over one structure; every error names the field and offset."""

    __slots__ = ("buf", "pos", "what")

    def __init__(self, buf: bytes, what: str) -> None:
        self.buf = buf
        self.pos = 0
        self.what = what

    def fail(self, field: str, problem: str) -> QuoteParseError:
        return QuoteParseError(f"{self.what}.{field} at offset {self.pos}: {problem}")

    def take(self, n: int, field: str) -> bytes:
        end = self.pos + n
        if end > len(self.buf):
            raise self.fail(field, f"needs {n} bytes, {len(self.buf) - self.pos} left")
        out = self.buf[self.pos : end]
        self.pos = end
        return out

    def u8(self, field: str) -> int:
        return self.take(1, field)[0]

    def u16(self, field: str) -> int:
        value: int = _U16.unpack(self.take(2, field))[0]
        return value

    def u32(self, field: str) -> int:
        value: int = _U32.unpack(self.take(4, field))[0]
        return value

    def tpm2b(self, field: str) -> bytes:
        return self.take(self.u16(field + ".size"), field)

    def end(self) -> None:
        if self.pos != len(self.buf):
            raise self.fail("end", f"{len(self.buf) - self.pos} trailing bytes")


# --- TPML_PCR_SELECTION -----------------------------------------------------------------------

PcrSelection = tuple[tuple[HashAlg, tuple[int, ...]], ...]
"""A TPML_PCR_SELECTION in wire order: (bank, ascending PCR indices) per entry."""


def _pcr_selection(r: _Reader) -> PcrSelection:
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


# --- TPMS_ATTEST (quote) -------------------------------------------------------------------------


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
        (size,) = _U16.unpack_from(buf, o)
        extra = buf[o + 2 : o + 2 + size]
        o += 2 + size
        clock, reset, restart, safe, firmware = _CLOCK.unpack_from(buf, o)
        o += _CLOCK.size
        start = o
        (count,) = _U32.unpack_from(buf, o)
        o += 4
        for _ in range(count if count <= 16 else 0):
            o += 3 + buf[o + 2]
        selection = _cached_selection(buf[start:o])
        (size,) = _U16.unpack_from(buf, o)
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
    r = _Reader(raw, "TPMS_ATTEST")
    selection = _pcr_selection(r)
    r.end()
    return selection


def _parse_attest_checked(buf: bytes) -> Attest:
    r = _Reader(buf, "TPMS_ATTEST")
    if len(r.buf) < _HDR.size:
        raise r.fail("magic", f"needs {_HDR.size} bytes, {len(r.buf)} given")
    magic, typ = _HDR.unpack_from(r.buf, 0)
    r.pos = _HDR.size
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
        magic=magic,
        type=typ,
        qualified_signer=signer,
        extra_data=extra,
        clock_info=ClockInfo(clock, reset, restart, bool(safe)),
        firmware_version=firmware,
        pcr_selection=selection,
        pcr_digest=digest,
    )


# --- TPMT_SIGNATURE ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Signature:
    """A TPMT_SIGNATURE. ``sig`` is the RSA signature, or ``r || s`` fields kept apart for ECDSA."""

    sig_alg: int
    hash_alg: HashAlg
    sig: bytes = b""
    r: bytes = b""
    s: bytes = b""


def parse_signature(data: bytes) -> Signature:
    """Parse a TPMT_SIGNATURE made by an RSASSA, RSAPSS or ECDSA key (fast path as for
    :func:`parse_attest`)."""
    buf = data if type(data) is bytes else bytes(data)
    try:
        sig_alg, hash_id, size = _SIG_HDR_SIZE.unpack_from(buf, 0)
        alg = _HASH_BY_ID[hash_id]
        if sig_alg == ALG_ECDSA:
            sig_r = buf[6 : 6 + size]
            (size_s,) = _U16.unpack_from(buf, 6 + size)
            o = 8 + size
            if o + size_s == len(buf):
                return Signature(sig_alg, alg, b"", sig_r, buf[o:])
        elif sig_alg in (ALG_RSASSA, ALG_RSAPSS) and 6 + size == len(buf):
            return Signature(sig_alg, alg, buf[6:])
    except (struct.error, KeyError):
        pass
    return _parse_signature_checked(buf)


def _parse_signature_checked(buf: bytes) -> Signature:
    r = _Reader(buf, "TPMT_SIGNATURE")
    if len(r.buf) < _SIG_HDR.size:
        raise r.fail("sigAlg", f"needs {_SIG_HDR.size} bytes, {len(r.buf)} given")
    sig_alg, hash_id = _SIG_HDR.unpack_from(r.buf, 0)
    r.pos = _SIG_HDR.size
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


# --- TPMT_PUBLIC -------------------------------------------------------------------------------

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


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
            _U16.pack(self.name_alg.tpm_alg_id)
            + hashlib.new(self.name_alg.value, self.raw).digest()
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


def _scheme(r: _Reader, with_hash: frozenset[int]) -> tuple[int, HashAlg | None]:
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


_RSA_SCHEMES: Final = frozenset({ALG_RSASSA, ALG_RSAPSS, ALG_OAEP})
_ECC_SCHEMES: Final = frozenset({ALG_ECDSA, ALG_ECDH, ALG_ECDAA})


def parse_public(data: bytes) -> Public:
    """Parse a TPMT_PUBLIC of an RSA or ECC key. A TPM2B_PUBLIC (size-prefixed) is accepted
    too, as ``tpm2_readpublic`` and many agents send that form."""
    buf = bytes(data)
    if len(buf) >= 2 and _U16.unpack_from(buf, 0)[0] == len(buf) - 2:
        buf = buf[2:]
    r = _Reader(buf, "TPMT_PUBLIC")
    if len(buf) < _PUB_HDR.size:
        raise r.fail("type", f"needs {_PUB_HDR.size} bytes, {len(buf)} given")
    typ, name_id, attrs = _PUB_HDR.unpack_from(buf, 0)
    r.pos = _PUB_HDR.size
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

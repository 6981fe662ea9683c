"""The agent's wire protocol: JSON payloads as TypedDicts, and pure decoders for both ends.

Both ends treat the other as hostile: the agent validates the verifier's requests, the verifier
validates the agent's answers. A decoder returns a domain value or raises
:class:`EvidenceFormatError` naming the field and what is wrong; nothing else escapes it.

Bytes travel as standard base64 (quote, signature, log, certificates) or lowercase hex (nonce,
names, PCR values), each field documented where it is declared.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, TypedDict

from attestation.core.types import IMA_PCR, HashAlg

__all__ = [
    "API_PREFIX",
    "MAX_LOG_BYTES",
    "ActivateRequest",
    "Evidence",
    "EvidenceFormatError",
    "EvidenceQuery",
    "EvidenceRequest",
    "EvidenceResponse",
    "Identity",
    "IdentityResponse",
    "ImaChunk",
    "decode_activate_request",
    "decode_activate_response",
    "decode_evidence",
    "decode_evidence_request",
    "decode_identity",
    "encode_activate_request",
    "encode_evidence",
    "encode_evidence_request",
    "encode_identity",
]

API_PREFIX: Final = "/v1"
#: Nonces shorter than this give a replaying attacker too good odds; TPM2B_DATA caps the top.
MIN_NONCE_BYTES: Final = 20
MAX_NONCE_BYTES: Final = 64
#: PCRs quoted by default: the boot chain (0-7, for boot_aggregate) and IMA's PCR 10.
DEFAULT_PCRS: Final = (0, 1, 2, 3, 4, 5, 6, 7, IMA_PCR)


class EvidenceFormatError(ValueError):
    """A payload does not have the documented shape; the message names the field."""


# --- wire payloads ----------------------------------------------------------------------------


class IdentityResponse(TypedDict):
    node: str
    ekCertificate: str  # base64 DER
    ekPublic: str  # base64 TPMT_PUBLIC
    akPublic: str  # base64 TPMT_PUBLIC
    akName: str  # hex


class ActivateRequest(TypedDict):
    credentialBlob: str  # base64 TPM2B_ID_OBJECT
    encryptedSecret: str  # base64 TPM2B_ENCRYPTED_SECRET


class EvidenceRequest(TypedDict):
    nonce: str  # hex
    pcrs: list[int]
    banks: list[str]
    imaOffset: int  # byte offset into binary_runtime_measurements


class ImaChunk(TypedDict):
    offset: int
    log: str  # base64 of the binary measurement list from ``offset``


class EvidenceResponse(TypedDict):
    quote: str  # base64 TPMS_ATTEST
    signature: str  # base64 TPMT_SIGNATURE
    pcrs: dict[str, dict[str, str]]  # bank -> PCR index -> hex value
    ima: ImaChunk


# --- domain values ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Identity:
    node: str
    ek_certificate: bytes
    ek_public: bytes
    ak_public: bytes
    ak_name: bytes


@dataclass(frozen=True, slots=True)
class EvidenceQuery:
    nonce: bytes
    pcrs: tuple[int, ...] = DEFAULT_PCRS
    banks: tuple[HashAlg, ...] = (HashAlg.SHA256,)
    ima_offset: int = 0


@dataclass(frozen=True, slots=True)
class Evidence:
    quote: bytes
    signature: bytes
    pcr_values: Mapping[HashAlg, Mapping[int, bytes]]
    ima_offset: int
    ima_log: bytes


# --- field helpers ----------------------------------------------------------------------------


def _field(obj: Mapping[str, Any], name: str, kind: type, where: str) -> Any:
    if name not in obj:
        raise EvidenceFormatError(f"{where}: missing field {name!r}")
    value = obj[name]
    if kind is int and isinstance(value, bool):
        raise EvidenceFormatError(f"{where}.{name}: expected an integer, got a boolean")
    if not isinstance(value, kind):
        raise EvidenceFormatError(
            f"{where}.{name}: expected {kind.__name__}, got {type(value).__name__}"
        )
    return value


def _b64(obj: Mapping[str, Any], name: str, where: str, max_len: int) -> bytes:
    text: str = _field(obj, name, str, where)
    if len(text) > (max_len * 4) // 3 + 4:
        raise EvidenceFormatError(f"{where}.{name}: longer than {max_len} bytes")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise EvidenceFormatError(f"{where}.{name}: not base64 ({e})") from None


def _hex(text: str, where: str, max_len: int) -> bytes:
    if len(text) > 2 * max_len:
        raise EvidenceFormatError(f"{where}: longer than {max_len} bytes")
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise EvidenceFormatError(f"{where}: not hex") from None


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise EvidenceFormatError(f"{where}: expected an object, got {type(value).__name__}")
    return value


def _bank(name: Any, where: str) -> HashAlg:
    try:
        return HashAlg(name)
    except ValueError:
        raise EvidenceFormatError(f"{where}: unknown hash bank {name!r}") from None


# --- decoders ---------------------------------------------------------------------------------

#: Caps on what one answer may carry; an agent sending more is broken or hostile.
MAX_STRUCT_BYTES: Final = 4096
#: 64 MiB is ~400k ima-cgpath entries; the verifier holds one such answer per concurrent round.
MAX_LOG_BYTES: Final = 64 * 1024 * 1024
#: No measurement list comes near this; larger offsets do not even fit a C ``off_t`` (seek raises
#: OverflowError), so they are refused as malformed.
MAX_LOG_OFFSET: Final = 2**62


def decode_evidence_request(body: Any) -> EvidenceQuery:
    obj = _mapping(body, "request")
    nonce = _hex(_field(obj, "nonce", str, "request"), "request.nonce", MAX_NONCE_BYTES)
    if len(nonce) < MIN_NONCE_BYTES:
        raise EvidenceFormatError(f"request.nonce: at least {MIN_NONCE_BYTES} bytes required")
    pcrs_raw: list[Any] = _field(obj, "pcrs", list, "request") if "pcrs" in obj else []
    pcrs = tuple(pcrs_raw) if pcrs_raw else DEFAULT_PCRS
    for p in pcrs:
        if isinstance(p, bool) or not isinstance(p, int) or not 0 <= p <= 23:
            raise EvidenceFormatError(f"request.pcrs: {p!r} is not a PCR index 0-23")
    banks_raw: list[Any] = _field(obj, "banks", list, "request") if "banks" in obj else []
    banks = tuple(_bank(b, "request.banks") for b in banks_raw) or (HashAlg.SHA256,)
    offset: int = _field(obj, "imaOffset", int, "request") if "imaOffset" in obj else 0
    if offset < 0:
        raise EvidenceFormatError("request.imaOffset: must not be negative")
    if offset > MAX_LOG_OFFSET:
        raise EvidenceFormatError(f"request.imaOffset: larger than any log ({MAX_LOG_OFFSET})")
    return EvidenceQuery(nonce, tuple(sorted(set(pcrs))), tuple(dict.fromkeys(banks)), offset)


def encode_evidence_request(query: EvidenceQuery) -> EvidenceRequest:
    return {
        "nonce": query.nonce.hex(),
        "pcrs": list(query.pcrs),
        "banks": [b.value for b in query.banks],
        "imaOffset": query.ima_offset,
    }


def encode_evidence(evidence: Evidence) -> EvidenceResponse:
    return {
        "quote": base64.b64encode(evidence.quote).decode(),
        "signature": base64.b64encode(evidence.signature).decode(),
        "pcrs": {
            bank.value: {str(i): v.hex() for i, v in sorted(values.items())}
            for bank, values in evidence.pcr_values.items()
        },
        "ima": {
            "offset": evidence.ima_offset,
            "log": base64.b64encode(evidence.ima_log).decode(),
        },
    }


def decode_evidence(body: Any, query: EvidenceQuery) -> Evidence:
    """The verifier's view of an agent's answer to ``query``."""
    obj = _mapping(body, "evidence")
    quote = _b64(obj, "quote", "evidence", MAX_STRUCT_BYTES)
    signature = _b64(obj, "signature", "evidence", MAX_STRUCT_BYTES)
    pcrs_obj = _mapping(_field(obj, "pcrs", dict, "evidence"), "evidence.pcrs")
    pcr_values: dict[HashAlg, dict[int, bytes]] = {}
    for bank_name, values in pcrs_obj.items():
        bank = _bank(bank_name, "evidence.pcrs")
        size = bank.digest_size  # a property building a dict: once per bank, not per PCR
        bank_values: dict[int, bytes] = {}
        for index, value in _mapping(values, f"evidence.pcrs.{bank_name}").items():
            if not (isinstance(index, str) and index.isdigit() and int(index) <= 23):
                raise EvidenceFormatError(f"evidence.pcrs.{bank_name}.{index}: not a PCR index")
            digest = b""
            if isinstance(value, str) and len(value) == 2 * size:
                with contextlib.suppress(ValueError):
                    digest = bytes.fromhex(value)
            if len(digest) != size:  # fromhex skips spaces: check what came out
                raise EvidenceFormatError(
                    f"evidence.pcrs.{bank_name}.{index}: expected {size} bytes as hex"
                )
            bank_values[int(index)] = digest
        pcr_values[bank] = bank_values
    ima = _mapping(_field(obj, "ima", dict, "evidence"), "evidence.ima")
    offset: int = _field(ima, "offset", int, "evidence.ima")
    if offset != query.ima_offset:
        raise EvidenceFormatError(
            f"evidence.ima.offset: asked for {query.ima_offset}, got {offset}"
        )
    log = _b64(ima, "log", "evidence.ima", MAX_LOG_BYTES)
    return Evidence(quote, signature, pcr_values, offset, log)


def encode_identity(identity: Identity) -> IdentityResponse:
    return {
        "node": identity.node,
        "ekCertificate": base64.b64encode(identity.ek_certificate).decode(),
        "ekPublic": base64.b64encode(identity.ek_public).decode(),
        "akPublic": base64.b64encode(identity.ak_public).decode(),
        "akName": identity.ak_name.hex(),
    }


def decode_identity(body: Any) -> Identity:
    obj = _mapping(body, "identity")
    node: str = _field(obj, "node", str, "identity")
    return Identity(
        node=node,
        ek_certificate=_b64(obj, "ekCertificate", "identity", 16384),
        ek_public=_b64(obj, "ekPublic", "identity", MAX_STRUCT_BYTES),
        ak_public=_b64(obj, "akPublic", "identity", MAX_STRUCT_BYTES),
        ak_name=_hex(_field(obj, "akName", str, "identity"), "identity.akName", 66),
    )


def decode_activate_request(body: Any) -> tuple[bytes, bytes]:
    obj = _mapping(body, "request")
    return (
        _b64(obj, "credentialBlob", "request", MAX_STRUCT_BYTES),
        _b64(obj, "encryptedSecret", "request", MAX_STRUCT_BYTES),
    )


def encode_activate_request(blob: bytes, secret: bytes) -> ActivateRequest:
    return {
        "credentialBlob": base64.b64encode(blob).decode(),
        "encryptedSecret": base64.b64encode(secret).decode(),
    }


def decode_activate_response(body: Any) -> bytes:
    return _b64(_mapping(body, "activation"), "secret", "activation", 128)

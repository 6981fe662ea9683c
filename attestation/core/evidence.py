"""The agent's wire protocol: JSON payloads as TypedDicts, and pure decoders for both ends.

Both ends treat the other as hostile: the agent validates the verifier's requests, the verifier
validates the agent's answers. A decoder returns a domain value or raises
:class:`EvidenceFormatError` naming the field and what is wrong; nothing else escapes it.

Bytes travel as standard base64 (quote, signature, log, certificates) or lowercase hex (nonce,
names, PCR values), each field documented where it is declared.

The log travels in pages: an answer carries at most ``MAX_PAGE_BYTES`` of whole entries from the
asked offset and says whether more remain (``more``); the verifier asks ``/v1/log`` for the next
page until the quote is covered. Memory on both ends is then bounded by a page, whatever the
log's size (a tenant can grow the log by executing many distinct small files).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, NotRequired, TypedDict

from attestation.core.types import IMA_PCR, HashAlg

__all__ = [
    "API_PREFIX",
    "MAX_LOG_BYTES",
    "MAX_PAGE_BYTES",
    "MIN_PAGE_BYTES",
    "ActivateRequest",
    "Evidence",
    "EvidenceFormatError",
    "EvidenceQuery",
    "EvidenceRequest",
    "EvidenceResponse",
    "Identity",
    "IdentityResponse",
    "ImaChunk",
    "LogRequest",
    "decode_activate_request",
    "decode_activate_response",
    "decode_evidence",
    "decode_evidence_request",
    "decode_identity",
    "decode_log_page",
    "decode_log_request",
    "encode_activate_request",
    "encode_evidence",
    "encode_evidence_request",
    "encode_identity",
    "encode_log_page",
    "encode_log_request",
]

API_PREFIX: Final = "/v1"
#: Nonces shorter than this give a replaying attacker too good odds; TPM2B_DATA caps the top.
MIN_NONCE_BYTES: Final = 20
MAX_NONCE_BYTES: Final = 64
#: PCRs quoted by default: the boot chain and IMA's PCR 10. A kernel since 5.8 logs a non-SHA-1
#: boot_aggregate over PCRs 0-9, not 0-7 (seen on Debian 12's 6.1 kernel, tests/realnode): without
#: 8 and 9 in the quote no real node's SHA-256 boot_aggregate could be checked.
DEFAULT_PCRS: Final = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, IMA_PCR)


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
    log: str  # base64 of whole entries of the binary measurement list from ``offset``
    #: More of the log follows this page (absent: false, as from agents before paging).
    more: NotRequired[bool]


class LogRequest(TypedDict):
    imaOffset: int  # where the next page starts: the end of the whole entries read so far


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
    #: The agent has more of the log after this page (see the module doc).
    more: bool = False


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
#: A whole log in one document (an offline evidence bundle): 64 MiB is ~400k ima-cgpath entries.
MAX_LOG_BYTES: Final = 64 * 1024 * 1024
#: The most log one agent answer carries: the verifier buffers at most 4/3 of it (base64) per
#: agent call, ``--concurrency`` calls at once. The agent's ``--page-bytes`` (default 4 MiB) is
#: at most this, and at least ``MIN_PAGE_BYTES``, which holds any entry the kernel can write
#: (template data is capped at 256 KiB by core.ima, paths at 4 KiB).
MAX_PAGE_BYTES: Final = 16 * 1024 * 1024
MIN_PAGE_BYTES: Final = 1024 * 1024
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
    offset = _offset(obj)
    return EvidenceQuery(nonce, tuple(sorted(set(pcrs))), tuple(dict.fromkeys(banks)), offset)


def _offset(obj: Mapping[str, Any]) -> int:
    offset: int = _field(obj, "imaOffset", int, "request") if "imaOffset" in obj else 0
    if offset < 0:
        raise EvidenceFormatError("request.imaOffset: must not be negative")
    if offset > MAX_LOG_OFFSET:
        raise EvidenceFormatError(f"request.imaOffset: larger than any log ({MAX_LOG_OFFSET})")
    return offset


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
        "ima": encode_log_page(evidence.ima_offset, evidence.ima_log, more=evidence.more),
    }


def encode_log_page(offset: int, log: bytes, *, more: bool) -> ImaChunk:
    return {"offset": offset, "log": base64.b64encode(log).decode(), "more": more}


def decode_log_page(
    body: Any, offset: int, where: str = "page", max_log: int = MAX_PAGE_BYTES
) -> tuple[bytes, bool]:
    """The log bytes and ``more`` of an :class:`ImaChunk` answering a request from ``offset``."""
    ima = _mapping(body, where)
    got: int = _field(ima, "offset", int, where)
    if got != offset:
        raise EvidenceFormatError(f"{where}.offset: asked for {offset}, got {got}")
    log = _b64(ima, "log", where, max_log)
    more: bool = _field(ima, "more", bool, where) if "more" in ima else False
    return log, more


def encode_log_request(offset: int) -> LogRequest:
    return {"imaOffset": offset}


def decode_log_request(body: Any) -> int:
    """The offset of a ``/v1/log`` request."""
    return _offset(_mapping(body, "request"))


def decode_evidence(body: Any, query: EvidenceQuery, max_log: int = MAX_LOG_BYTES) -> Evidence:
    """The verifier's view of an agent's answer to ``query`` (an offline bundle's too: up to
    ``max_log`` bytes of log; the collector's body cap holds an agent to one page)."""
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
    ima = _field(obj, "ima", dict, "evidence")
    log, more = decode_log_page(ima, query.ima_offset, "evidence.ima", max_log)
    return Evidence(quote, signature, pcr_values, query.ima_offset, log, more)


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

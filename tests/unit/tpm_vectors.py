"""Loads the vectors recorded from real swtpms by tests/support/make_tpm_vectors.py."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

from attestation.core.types import HashAlg

VECTORS = Path(__file__).parent / "vectors" / "tpm"

PcrValues = dict[HashAlg, dict[int, bytes]]


@dataclass(frozen=True)
class RecordedQuote:
    ak: str
    ak_public: bytes
    nonce: bytes
    attest: bytes
    signature: bytes
    pcr_values: PcrValues


@cache
def _manifest() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VECTORS / "vectors.json").read_text())
    return data


def recorded_at() -> datetime:
    return datetime.fromisoformat(_manifest()["recorded_at"])


def _recorded(q: dict[str, Any]) -> RecordedQuote:
    return RecordedQuote(
        ak=q["ak"],
        ak_public=ak_public(q["ak"]),
        nonce=bytes.fromhex(q["nonce"]),
        attest=bytes.fromhex(q["attest"]),
        signature=bytes.fromhex(q["signature"]),
        pcr_values={
            HashAlg(bank): {int(pcr): bytes.fromhex(v) for pcr, v in values.items()}
            for bank, values in q["pcr_values"].items()
        },
    )


def quotes() -> list[RecordedQuote]:
    return [_recorded(q) for q in _manifest()["quotes"]]


def round_vectors() -> dict[str, Any]:
    """The recorded round: a kernel-style log, its files by owner, and its quotes."""
    data: dict[str, Any] = _manifest()["round"]
    return data


def round_quote(i: int) -> tuple[RecordedQuote, int]:
    """The round's ``i``-th quote and the log's length in bytes when it was taken."""
    q = round_vectors()["quotes"][i]
    return _recorded(q), int(q["log_bytes"])


def ak_public(alg: str) -> bytes:
    return bytes.fromhex(_manifest()["aks"][alg])


def ek(name: str) -> tuple[str, bytes]:
    """(certificate PEM, TPMT_PUBLIC) of the recorded EK ``rsa``, ``ecc`` or ``foreign_rsa``."""
    entry = _manifest()["eks"][name]
    return entry["certificate"], bytes.fromhex(entry["public"])


def bundle(name: str = "ca-bundle.pem") -> bytes:
    return (VECTORS / name).read_bytes()

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


def quotes() -> list[RecordedQuote]:
    aks = _manifest()["aks"]
    return [
        RecordedQuote(
            ak=q["ak"],
            ak_public=bytes.fromhex(aks[q["ak"]]),
            nonce=bytes.fromhex(q["nonce"]),
            attest=bytes.fromhex(q["attest"]),
            signature=bytes.fromhex(q["signature"]),
            pcr_values={
                HashAlg(bank): {int(pcr): bytes.fromhex(v) for pcr, v in values.items()}
                for bank, values in q["pcr_values"].items()
            },
        )
        for q in _manifest()["quotes"]
    ]


def ak_public(alg: str) -> bytes:
    return bytes.fromhex(_manifest()["aks"][alg])


def ek(name: str) -> tuple[str, bytes]:
    """(certificate PEM, TPMT_PUBLIC) of the recorded EK ``rsa``, ``ecc`` or ``foreign_rsa``."""
    entry = _manifest()["eks"][name]
    return entry["certificate"], bytes.fromhex(entry["public"])


def bundle(name: str = "ca-bundle.pem") -> bytes:
    return (VECTORS / name).read_bytes()

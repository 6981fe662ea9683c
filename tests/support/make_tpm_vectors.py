"""Record test vectors from real swtpms for the pure unit tests of quote.py and enroll.py.

    .venv/bin/python -m tests.support.make_tpm_vectors [tests/unit/vectors/tpm]

Writes the local CA bundle and a second CA's bundle (PEM), and into ``vectors.json`` (text only:
PEM and hex) EK certificates and public areas (RSA, ECC P-384, and an RSA EK of the second CA),
ECC and RSA AK public areas, and quotes with their nonces and PCR values, one after a reboot.
Re-recording changes every byte (new keys), never the meaning: unit tests key on structure.
"""

from __future__ import annotations

import json
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from attestation.agent.tpm import Tpm, TpmQuote
from attestation.core.types import HashAlg
from tests.support.swtpm import LocalCa, SwTpm

PCRS = (0, 1, 2, 3, 4, 5, 6, 7, 10)
BANKS = (HashAlg.SHA1, HashAlg.SHA256)


def _quote_json(q: TpmQuote, nonce: bytes, ak: str) -> dict[str, object]:
    return {
        "ak": ak,
        "nonce": nonce.hex(),
        "attest": q.attest.hex(),
        "signature": q.signature.hex(),
        "pcr_values": {
            bank.value: {str(pcr): v.hex() for pcr, v in values.items()}
            for bank, values in q.pcr_values.items()
        },
    }


def _pem(der: bytes) -> str:
    return x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM).decode()


def record(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tpm-vectors-") as tmp:
        work = Path(tmp)
        ca = LocalCa.create(work / "ca")
        other_ca = LocalCa.create(work / "other-ca")
        (out / "ca-bundle.pem").write_bytes(ca.ca_bundle.read_bytes())
        (out / "other-ca-bundle.pem").write_bytes(other_ca.ca_bundle.read_bytes())
        swtpm = SwTpm(ca, work / "tpm")
        foreign = SwTpm(other_ca, work / "foreign")
        try:
            swtpm.start()
            foreign.start()
            eks = {
                name: {"certificate": _pem(tpm.ek_certificate()), "public": tpm.ek_public().hex()}
                for name, tpm in (
                    ("rsa", Tpm(swtpm.tcti, ek_alg="rsa")),
                    ("ecc", Tpm(swtpm.tcti, ek_alg="ecc")),
                    ("foreign_rsa", Tpm(foreign.tcti, ek_alg="rsa")),
                )
            }
            ecc, rsa = Tpm(swtpm.tcti), Tpm(swtpm.tcti)
            aks = {
                "ecc": ecc.create_ak("ecc").public.hex(),
                "rsa": rsa.create_ak("rsa").public.hex(),
            }
            swtpm.extend_pcr(10, {HashAlg.SHA1: b"\x11" * 20, HashAlg.SHA256: b"\x22" * 32})
            quotes = [
                _quote_json(ecc.quote(b"nonce-ecc-1", PCRS, BANKS), b"nonce-ecc-1", "ecc"),
                _quote_json(rsa.quote(b"nonce-rsa-1", PCRS, BANKS), b"nonce-rsa-1", "rsa"),
            ]
            swtpm.restart()
            after = Tpm(swtpm.tcti, ak=ecc.ak)
            quotes.append(
                _quote_json(after.quote(b"after-reboot", PCRS, BANKS), b"after-reboot", "ecc")
            )
        finally:
            swtpm.stop()
            foreign.stop()
    manifest = {
        "recorded_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "pcrs": list(PCRS),
        "banks": [b.value for b in BANKS],
        "eks": eks,
        "aks": aks,
        "quotes": quotes,
    }
    (out / "vectors.json").write_text(json.dumps(manifest, indent=1) + "\n")


if __name__ == "__main__":
    record(Path(sys.argv[1] if len(sys.argv) > 1 else "tests/unit/vectors/tpm"))

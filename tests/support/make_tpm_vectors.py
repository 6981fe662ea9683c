"""Record test vectors from real swtpms for the pure unit tests of quote.py and enroll.py.

    .venv/bin/python -m tests.support.make_tpm_vectors [tests/unit/vectors/tpm]

Writes the local CA bundle and a second CA's bundle (PEM), and into ``vectors.json`` (text only:
PEM and hex) EK certificates and public areas (RSA, ECC P-384, and an RSA EK of the second CA),
ECC and RSA AK public areas, and quotes with their nonces and PCR values, one after a reboot.
``round`` is one node's IMA log (boot_aggregate, host files, two pods' files, then an unknown
binary in one pod) written as the kernel does, PCR 10 extended to match, quoted before and after
the last entry, with the files and pods a policy needs: what a pure test of a whole attestation
round needs. Re-recording changes every byte (new keys), never the meaning: unit tests key on
structure.
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
from attestation.lab.ima_writer import ImaWriter, systemd_pod_cgroup
from tests.support.swtpm import LocalCa, SwTpm

__all__ = ["record"]

PCRS = (0, 1, 2, 3, 4, 5, 6, 7, 10)
BANKS = (HashAlg.SHA1, HashAlg.SHA256)

#: The round's protected pods: (uid, namespace, name, container id) by network function.
ROUND_PODS = {
    "upf": ("1a2b3c4d-0000-4000-8000-00000000a001", "5g-core", "upf-0", "c0ffee"),
    "smf": ("1a2b3c4d-0000-4000-8000-00000000a002", "5g-core", "smf-0", "beef"),
}
#: The files each owner ("host" or a network function) runs in the round's log.
ROUND_FILES = {
    "host": {"/usr/bin/containerd": b"containerd", "/usr/bin/kubelet": b"kubelet"},
    "upf": {"/usr/bin/upfd": b"upf 1.0", "/usr/lib/libgtp5g.so": b"gtp5g"},
    "smf": {"/usr/bin/smfd": b"smf 1.0"},
}
#: Run in the UPF pod after the first quote: no policy allows it.
ROUND_INTRUDER = ("/usr/bin/nc", b"netcat")


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


def _record_round(swtpm: SwTpm, tpm: Tpm, work: Path) -> dict[str, object]:
    """A log written like the kernel's on a TPM whose PCR 10 is still fresh, quoted twice."""
    writer = ImaWriter(work / "measurements", extend=swtpm.extend_pcr, template="ima-cgpath")
    writer.boot_aggregate(swtpm.read_pcrs(list(range(8)), (HashAlg.SHA256,))[HashAlg.SHA256])
    for path, content in ROUND_FILES["host"].items():
        writer.measure(path, content)
    cgroups = {nf: systemd_pod_cgroup(uid, cid) for nf, (uid, _, _, cid) in ROUND_PODS.items()}
    for nf, cgroup in cgroups.items():
        for path, content in ROUND_FILES[nf].items():
            writer.measure(path, content, cgroup_path=cgroup)

    def quote(nonce: bytes) -> dict[str, object]:
        recorded = _quote_json(tpm.quote(nonce, PCRS, BANKS), nonce, "ecc")
        return {**recorded, "log_bytes": writer.log_path.stat().st_size}

    first = quote(b"round-1")
    writer.measure(*ROUND_INTRUDER, cgroup_path=cgroups["upf"])
    quotes = [first, quote(b"round-2")]
    return {
        "pods": {
            nf: {"uid": uid, "namespace": ns, "name": name}
            for nf, (uid, ns, name, _) in ROUND_PODS.items()
        },
        "files": {
            owner: {path: content.hex() for path, content in files.items()}
            for owner, files in ROUND_FILES.items()
        },
        "intruder": {"path": ROUND_INTRUDER[0], "content": ROUND_INTRUDER[1].hex()},
        "log": writer.log_path.read_bytes().hex(),
        "quotes": quotes,
    }


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
            round_ = _record_round(swtpm, ecc, work)  # while PCR 10 holds only the log
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
        "round": round_,
    }
    (out / "vectors.json").write_text(json.dumps(manifest, indent=1) + "\n")


if __name__ == "__main__":
    record(Path(sys.argv[1] if len(sys.argv) > 1 else "tests/unit/vectors/tpm"))

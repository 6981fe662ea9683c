"""Regenerate the IMA vectors with real tools: openssl (keys), evmctl from ima-evm-utils (file
signatures, and an independent replay of the binary log's PCR 10 in both banks).

    apt-get install ima-evm-utils && python tests/unit/vectors/make_ima_vectors.py

Outputs (committed): ima_evm.bin (binary list, SHA-1 column), ima_evm.ascii (evmctl's own ASCII
rendering of it), ima_evm.json (PCR 10 per bank as evmctl computed it; file digests), the signing
certificates and evmctl's signatures. Private keys stay in a temporary directory.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))

from attestation.core.types import HashAlg  # noqa: E402
from attestation.lab.ima_writer import ImaWriter, systemd_pod_cgroup  # noqa: E402

POD = "4f2d1c3b-5a6e-47f8-9b0c-1d2e3f405162"
CID = "9a" * 32


def _run(*argv: str, cwd: Path) -> str:
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    return done.stdout + done.stderr


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        _run("openssl", "genrsa", "-out", "rsa.pem", "2048", cwd=t)
        _run("openssl", "req", "-new", "-x509", "-key", "rsa.pem", "-out", "rsa.crt",
             "-days", "36500", "-subj", "/CN=trustgate IMA test RSA", cwd=t)  # fmt: skip
        _run("openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ec.pem",
             cwd=t)  # fmt: skip
        _run("openssl", "req", "-new", "-x509", "-key", "ec.pem", "-out", "ec.crt",
             "-days", "36500", "-subj", "/CN=trustgate IMA test EC", cwd=t)  # fmt: skip
        (t / "upf").write_bytes(b"upf binary v1\n")
        (t / "amf").write_bytes(b"amf binary v1\n")
        _run("evmctl", "ima_sign", "--sigfile", "--hashalgo", "sha256", "--key", "rsa.pem", "upf",
             cwd=t)  # fmt: skip
        _run("evmctl", "ima_sign", "--sigfile", "--hashalgo", "sha256", "--key", "ec.pem", "amf",
             cwd=t)  # fmt: skip
        for name in ("rsa.crt", "ec.crt"):
            (HERE / f"ima_{name}").write_bytes((t / name).read_bytes())
        upf_sig, amf_sig = (t / "upf.sig").read_bytes(), (t / "amf.sig").read_bytes()
        (HERE / "ima_upf.sig").write_bytes(upf_sig)
        (HERE / "ima_amf.sig").write_bytes(amf_sig)

        log = t / "log.bin"
        w = ImaWriter(log, column_alg=HashAlg.SHA1)
        w.boot_aggregate({i: bytes([i]) * 32 for i in range(10)}, with_8_9=True)
        w.measure("/usr/bin/upf", b"upf binary v1\n", template="ima-sig", signature=upf_sig)
        w.measure("/usr/bin/amf", b"amf binary v1\n", template="ima-sig", signature=amf_sig)
        w.measure("/usr/lib/x86_64-linux-gnu/libc.so.6", b"libc")
        w.measure("/etc/upf/with space.yaml", b"cfg")
        w.violation("/var/log/upf.log")
        w.measure("/usr/bin/unsigned", b"x", template="ima-sig")
        (HERE / "ima_evm.bin").write_bytes(log.read_bytes())
        out = _run("evmctl", "-v", "ima_measurement", "--ignore-violations", "log.bin", cwd=t)
        lines = [ln for ln in out.splitlines() if ln.startswith("10 ")]
        (HERE / "ima_evm.ascii").write_text("\n".join(lines) + "\n")
        pcrs: dict[str, str] = {}
        for alg in ("sha1", "sha256"):
            pcr_file = t / f"pcrs-{alg}"
            value = w.pcr10[HashAlg(alg)].hex()
            size = HashAlg(alg).digest_size
            pcr_file.write_text(
                "".join(f"PCR-{i:02d}: {'00' * size}\n" for i in range(10)) + f"PCR-10: {value}\n"
            )
            check = _run("evmctl", "-v", "ima_measurement", "--ignore-violations", "--pcrs",
                         f"{alg},{pcr_file}", "log.bin", cwd=t)  # fmt: skip
            m = re.search(rf"{alg}: PCRAgg\s+10: ([0-9a-f]+)", check)
            assert m, check
            assert f"{alg} PCR-10: succeed" in check, check
            pcrs[alg] = m.group(1)
        meta = {
            "made_by": _run("evmctl", "--version", cwd=t).strip(),
            "evmctl_pcr10": pcrs,
            "boot_pcrs": {str(i): (bytes([i]) * 32).hex() for i in range(10)},
            "entries": len(w.entries),
            "pod": {"uid": POD, "cgroup": systemd_pod_cgroup(POD, CID)},
        }
        (HERE / "ima_evm.json").write_text(json.dumps(meta, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""Quote verification throughput: trustgate's verify_quote vs Keylime 7.14's checkquote vs the
floor (bare ECDSA verification with cryptography), on the same real swtpm quotes.

    .venv/bin/python bench/quote_bench.py [--quotes 256] [--rounds 30]

The main process records quotes from one swtpm (ECC P-256 AK, SHA-256 PCRs 0-7 and 10). The
three measurements then run in ONE worker process in Keylime's venv (our core needs only
``cryptography``, the same version there), interleaved pass by pass so load from other work on
the machine hits all three alike; each rate is the best pass, the medians are printed too.
Writes bench/out/quote.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out" / "quote.json"
PCRS = (0, 1, 2, 3, 4, 5, 6, 7, 10)
_ALNUM = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def _nonce() -> str:
    """Keylime's nonces are alphanumeric strings; ours are bytes. These are both."""
    return "".join(chr(_ALNUM[b % len(_ALNUM)]) for b in os.urandom(20))


def record(count: int) -> dict[str, Any]:
    """Take ``count`` quotes from one fresh swtpm, extending PCR 10 now and then."""
    sys.path.insert(0, str(ROOT))
    from attestation.agent.tpm import Tpm
    from attestation.core.types import HashAlg
    from tests.support.swtpm import LocalCa, SwTpm

    with tempfile.TemporaryDirectory(prefix="quote-bench-") as tmp:
        swtpm = SwTpm(LocalCa.create(Path(tmp) / "ca"), Path(tmp) / "tpm")
        swtpm.start()
        try:
            tpm = Tpm(swtpm.tcti)
            ak = tpm.create_ak("ecc")
            quotes = []
            started = time.perf_counter()
            for i in range(count):
                if i % 16 == 0:
                    swtpm.extend_pcr(10, {HashAlg.SHA256: os.urandom(32)})
                nonce = _nonce()
                q = tpm.quote(nonce.encode(), PCRS, (HashAlg.SHA256,))
                values = q.pcr_values[HashAlg.SHA256]
                quotes.append(
                    {
                        "nonce": nonce,
                        "attest": q.attest.hex(),
                        "signature": q.signature.hex(),
                        "pcrs": {str(p): values[p].hex() for p in PCRS},
                    }
                )
            quote_rate = count / (time.perf_counter() - started)
        finally:
            swtpm.stop()
    return {"ak_public": ak.public.hex(), "quotes": quotes, "swtpm_quotes_per_s": quote_rate}


# --- the worker (runs in Keylime's venv) ------------------------------------------------------


def _keylime_pcrblob(values: dict[int, bytes]) -> bytes:
    """tpm2-tools' in-memory PCR dump that Keylime's checkquote parses (little endian, padded):
    TPML_PCR_SELECTION with 16 fixed slots, then TPML_DIGESTs of 8 TPM2B_DIGEST[64] each."""
    select = 0
    for pcr in values:
        select |= 1 << pcr
    slots = [struct.pack("<HB3s2x", 0x000B, 3, select.to_bytes(3, "little"))]
    slots += [struct.pack("<HB3s2x", 0, 0, b"\0\0\0")] * 15
    ordered = [values[p] for p in sorted(values)]
    chunks = [ordered[i : i + 8] for i in range(0, len(ordered), 8)]
    out = [struct.pack("<I", 1), *slots, struct.pack("<I", len(chunks))]
    for chunk in chunks:
        out.append(struct.pack("<I", len(chunk)))
        for i in range(8):
            digest = chunk[i] if i < len(chunk) else b""
            out.append(struct.pack("<H", len(digest)) + digest.ljust(64, b"\0"))
    return b"".join(out)


def _timed_passes(
    impls: dict[str, Callable[[], None]], rounds: int, count: int
) -> dict[str, list[float]]:
    """Per-quote seconds of each pass; the order rotates every round."""
    names = list(impls)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            started = time.perf_counter()
            impls[name]()
            times[name].append((time.perf_counter() - started) / count)
    return times


def worker(path: Path, rounds: int) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
    from keylime.tpm import tpm_util

    from attestation.core.quote import verify_quote
    from attestation.core.tpm_types import parse_public, parse_signature
    from attestation.core.types import HashAlg

    data = json.loads(path.read_text())
    ak_public = bytes.fromhex(data["ak_public"])
    key = parse_public(ak_public).public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    ak_pem = key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    ours, keylime, floor = [], [], []
    for q in data["quotes"]:
        attest, sig = bytes.fromhex(q["attest"]), bytes.fromhex(q["signature"])
        values = {int(p): bytes.fromhex(v) for p, v in q["pcrs"].items()}
        ours.append((attest, sig, ak_public, q["nonce"].encode(), {HashAlg.SHA256: values}))
        keylime.append((ak_pem, q["nonce"], sig, attest, _keylime_pcrblob(values), "sha256"))
        parsed = parse_signature(sig)
        der = encode_dss_signature(int.from_bytes(parsed.r, "big"), int.from_bytes(parsed.s, "big"))
        floor.append((der, attest))
    ecdsa = ec.ECDSA(hashes.SHA256())

    def run_ours() -> None:
        for args in ours:
            if not verify_quote(*args).ok:
                raise AssertionError("trustgate rejected a good quote")

    def run_keylime() -> None:
        for args in keylime:
            tpm_util.checkquote(*args)  # raises on a bad quote

    def run_floor() -> None:
        for der, attest in floor:
            key.verify(der, attest, ecdsa)

    impls = {"trustgate": run_ours, "keylime": run_keylime, "floor": run_floor}
    for run in impls.values():  # warm up, and prove all three accept every quote
        run()
    times = _timed_passes(impls, rounds, len(ours))
    return {
        name: {"best_per_s": 1 / min(t), "median_per_s": 1 / statistics.median(t)}
        for name, t in times.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quotes", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.rounds)))
        return

    sys.path.insert(0, str(ROOT / "bench"))
    import keylime_env

    python = keylime_env.ensure()
    recorded = record(args.quotes)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(recorded, f)
    try:
        proc = subprocess.run(
            [str(python), __file__, "--worker", f.name, "--rounds", str(args.rounds)],
            capture_output=True, text=True, check=True, timeout=1800,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
    finally:
        os.unlink(f.name)
    rates = json.loads(proc.stdout.strip().splitlines()[-1])
    ours, keylime, floor = (rates[k]["best_per_s"] for k in ("trustgate", "keylime", "floor"))
    result = {
        "quotes": args.quotes,
        "rounds": args.rounds,
        "ak": "ecc-p256 ecdsa-sha256",
        "pcrs": "sha256:" + ",".join(map(str, PCRS)),
        "swtpm_quotes_per_s": round(recorded["swtpm_quotes_per_s"], 1),
        "rates": {k: {m: round(v, 1) for m, v in r.items()} for k, r in rates.items()},
        "trustgate_vs_keylime": round(ours / keylime, 3),
        "trustgate_vs_floor": round(ours / floor, 3),
        "goals": {"vs_keylime": 1.5, "vs_floor": 0.85},
    }
    result["goals_met"] = (
        result["trustgate_vs_keylime"] >= 1.5 and result["trustgate_vs_floor"] >= 0.85
    )
    for name, r in rates.items():
        print(f"{name:10s} {r['best_per_s']:9.0f} quotes/s best  {r['median_per_s']:9.0f} median")
    print(f"trustgate / keylime = {result['trustgate_vs_keylime']:.2f}x (goal >= 1.5x)")
    print(f"trustgate / floor   = {result['trustgate_vs_floor']:.1%} (goal >= 85%)")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()

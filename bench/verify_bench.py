"""How fast the verifier checks evidence, against Keylime and against the hash floor.

IMA section: generated logs (ima-ng and ima-cgpath, SHA-256 bank, mostly host entries and a few
pods) of 10k and 100k entries, single core, best of a few runs each:

  pure     what a round does with the binary list the agent ships (attestation.core.logcheck, the
           pure-Python reference): parse + PCR 10 replay against the quoted value + pod
           attribution + policy judgement of every entry
  native   the same through the C extension core._imafast (attestation.core.logcheck_native;
           skipped when it was not built), which is what attest_round uses when it is there
  pure/ascii  the pure path from the ASCII list (Keylime's input), for a like-for-like comparison
  keylime  Keylime 7.14 ``process_measurement_list`` on the ima-ng ASCII list, in its own venv
           (bench/.venv-keylime, installed on first run; Keylime cannot parse ima-cgpath)
  floor    only the two SHA-256 calls per entry replay cannot avoid (H(template data), extend)

A quote section is meant to sit next to ``ima_section`` (``results["quote"]``).

    .venv/bin/python bench/verify_bench.py [--sizes 10000,100000] [--no-keylime]

Writes bench/out/verify.json.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import subprocess
import sys
import tempfile
import time
import venv
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from attestation.core.fastpath import IMPLEMENTATIONS  # noqa: E402
from attestation.core.ima import parse_ascii, parse_binary  # noqa: E402
from attestation.core.logcheck import CheckLog  # noqa: E402
from attestation.core.policy import RuntimePolicy, evaluate_log, policy_from_document  # noqa: E402
from attestation.core.replay import ReplayState, verify_against_quote  # noqa: E402
from attestation.core.types import HashAlg, PodRef  # noqa: E402
from attestation.lab.ima_writer import BuiltLog, build_log  # noqa: E402

KEYLIME_VENV = HERE / ".venv-keylime"
KEYLIME_PIN = "keylime==7.14.*"
# keylime's wheel does not declare what it imports
KEYLIME_DEPS = [
    "cryptography", "jsonschema", "pyyaml", "typing_extensions", "lark", "pyasn1",
    "pyasn1-modules", "packaging", "requests", "tornado", "sqlalchemy", "alembic", "psutil",
    "jinja2",
]  # fmt: skip
GPG_STUB = '''"""Stub: keylime.signing imports gpg at import time; the benchmark needs no GPG."""


class Context:
    def __init__(self, *args, **kwargs):
        raise RuntimeError("gpg is stubbed out in the benchmark venv")


class errors:
    class GPGMEError(Exception):
        pass

    class BadSignatures(Exception):
        pass
'''

# Runs inside the Keylime venv: argv = log path, policy path, PCR 10 hex, runs.
KEYLIME_RUNNER = r"""
import json, sys, time, logging
logging.disable(logging.CRITICAL)
from keylime.ima import ima
from keylime.common.algorithms import Hash
log, pol, pcr, runs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
lines = open(log).read().splitlines(keepends=True)
policy = json.load(open(pol))
best = None
for _ in range(runs):
    t = time.perf_counter()
    running, failure = ima.process_measurement_list(
        None, lines, policy, pcrval=pcr, hash_alg=Hash.SHA256)
    dt = time.perf_counter() - t
    best = dt if best is None else min(best, dt)
print(json.dumps({"seconds": best, "entries": len(lines), "ok": not failure,
                  "failure": str(failure.get_event_ids()) if failure else ""}))
"""


def best_of(runs: int, fn: Callable[[], object]) -> float:
    times = []
    for _ in range(runs):
        gc.collect()
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


# --- the three IMA contenders ------------------------------------------------------------------


def _policy(built: BuiltLog) -> RuntimePolicy:
    doc = {
        "apiVersion": "trustgate.io/v1alpha1",
        "kind": "RuntimePolicy",
        "metadata": {"name": "bench"},
        "spec": {
            "networkFunction": "upf",
            "digests": {p: [f"sha256:{d.hex()}"] for p, d in built.digests.items()},
            "excludes": ["^/proc/", "^/tmp/"],
        },
    }
    return policy_from_document(doc, source="bench")


def ours(check: CheckLog, raw: bytes, *, count: int, quoted: bytes, policy: RuntimePolicy) -> None:
    """What the verifier does with one round's new entries (attest_round's log step)."""

    def policy_for(_pod: PodRef | None) -> RuntimePolicy:
        return policy

    done = check(raw, ReplayState.initial(), {HashAlg.SHA256: quoted}, policy_for, column_size=32)
    failures = done.replay.failures + done.judgement.failures
    if failures or done.replay.covered != count:
        raise SystemExit(f"bench log did not verify: {failures[:3]}")


def ours_ascii(raw: bytes, *, quoted: bytes, policy: RuntimePolicy) -> None:
    """The pure path from the ASCII list (there is no native ASCII parser)."""
    log = parse_ascii(raw)
    replayed = verify_against_quote(ReplayState.initial(), log, {HashAlg.SHA256: quoted})

    def policy_for(_pod: PodRef | None) -> RuntimePolicy:
        return policy

    judged = evaluate_log(log, policy_for, count=replayed.covered)
    if replayed.failures or judged.failures or replayed.covered != len(log):
        raise SystemExit(f"bench log did not verify: {replayed.failures} {judged.failures[:3]}")


def floor(datas: list[bytes]) -> bytes:
    sha = hashlib.sha256
    pcr = bytes(32)
    for data in datas:
        pcr = sha(pcr + sha(data).digest()).digest()
    return pcr


def ensure_keylime() -> Path | str:
    """The Keylime venv's python, installing it on first use; or why it cannot be had."""
    python = KEYLIME_VENV / "bin" / "python"
    probe = [str(python), "-c", "import keylime.ima.ima"]
    if python.exists() and subprocess.run(probe, capture_output=True, check=False).returncode == 0:
        return python
    print(f"[keylime] creating {KEYLIME_VENV} and installing {KEYLIME_PIN} ...", flush=True)
    venv.EnvBuilder(with_pip=True, clear=True).create(KEYLIME_VENV)
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    done = subprocess.run([*pip, KEYLIME_PIN, *KEYLIME_DEPS], capture_output=True, text=True)
    if done.returncode != 0:
        return f"pip install {KEYLIME_PIN} failed: {done.stderr.strip()[-2000:]}"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    (Path(site) / "gpg.py").write_text(GPG_STUB)
    done = subprocess.run(probe, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return f"keylime installed but does not import: {done.stderr.strip()[-2000:]}"
    print("[keylime] installed", flush=True)
    return python


def keylime(python: Path, built: BuiltLog, runs: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "ascii_runtime_measurements"
        log.write_bytes(built.ascii)
        policy = {
            "meta": {"version": 1, "generator": 0},
            "release": 0,
            "digests": {p: [d.hex()] for p, d in built.digests.items()},
            "excludes": ["^/proc/", "^/tmp/"],
            "keyrings": {},
            "ima": {"ignored_keyrings": [], "log_hash_alg": "sha256", "dm_policy": None},
            "ima-buf": {},
            "verification-keys": "",
        }
        pol = Path(tmp) / "policy.json"
        pol.write_text(json.dumps(policy))
        runner = Path(tmp) / "run_keylime.py"
        runner.write_text(KEYLIME_RUNNER)
        pcr = built.pcr10[HashAlg.SHA256].hex()
        done = subprocess.run(
            [str(python), str(runner), str(log), str(pol), pcr, str(runs)],
            capture_output=True, text=True, check=False, cwd=tmp,
        )  # fmt: skip
    if done.returncode != 0:
        return {"error": done.stderr.strip()[-2000:]}
    out: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return out


def ima_section(sizes: list[int], with_keylime: bool) -> dict[str, Any]:
    python: Path | str | None = ensure_keylime() if with_keylime else None
    if isinstance(python, str):
        print(f"[keylime] unavailable: {python}", flush=True)
    results: dict[str, Any] = {"keylime": python if isinstance(python, str) else KEYLIME_PIN}
    keylime_rate: dict[int, float] = {}
    for n in sizes:
        runs = 5 if n <= 20_000 else 3
        for template in ("ima-ng", "ima-cgpath"):
            print(f"[ima] {template} {n} entries: generating ...", flush=True)
            built = build_log(n, template=template)
            count = n + 1  # + boot_aggregate
            policy = _policy(built)
            quoted = built.pcr10[HashAlg.SHA256]
            datas = list(parse_binary(built.binary, column_size=32).datas)
            row: dict[str, Any] = {"entries": count}
            hashes_only = partial(floor, datas)
            text = partial(ours_ascii, built.ascii, quoted=quoted, policy=policy)
            # the floor is measured before and after: the machine is shared, keep its best run
            row["floor"] = count / best_of(runs, hashes_only)
            for name, check in IMPLEMENTATIONS.items():
                binary = partial(
                    ours, check, built.binary, count=count, quoted=quoted, policy=policy
                )
                row[name] = count / best_of(runs, binary)
            row["pure_ascii"] = count / best_of(runs, text)
            row["floor"] = max(row["floor"], count / best_of(runs, hashes_only))
            if template == "ima-ng" and isinstance(python, Path):
                print(f"[ima] {template} {n}: Keylime ({runs} runs) ...", flush=True)
                k = keylime(python, built, runs)
                row["keylime_raw"] = k
                if "seconds" in k and k.get("ok"):
                    row["keylime"] = keylime_rate[n] = k["entries"] / k["seconds"]
            elif n in keylime_rate:  # Keylime cannot parse ima-cgpath: its ima-ng rate, labelled
                row["keylime_ima_ng"] = keylime_rate[n]
            for name in (*IMPLEMENTATIONS, "pure_ascii"):
                row[f"{name}_vs_floor"] = row[name] / row["floor"]
                for keylime_key in ("keylime", "keylime_ima_ng"):
                    if keylime_key in row:
                        row[f"{name}_vs_{keylime_key}"] = row[name] / row[keylime_key]
            if "native" in row:
                row["native_vs_pure"] = row["native"] / row["pure"]
            results[f"{template}/{n}"] = row
            _print_row(template, row)
    return results


def _print_row(template: str, row: dict[str, Any]) -> None:
    parts = [f"{template:10} {row['entries']:>7} entries:"]
    for key in ("native", "pure", "pure_ascii", "keylime", "keylime_ima_ng", "floor"):
        if key in row:
            parts.append(f"{key} {row[key]:>9,.0f}/s")
    ratios = [k for k in row if "_vs_" in k]
    print("  ".join(parts), flush=True)
    parts = [" " * 19] + [f"{key} {row[key]:.2f}" for key in ratios]
    if "keylime_raw" in row and "keylime" not in row:
        parts.append(f"keylime failed: {row['keylime_raw']}")
    print("  ".join(parts), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--no-keylime", action="store_true")
    parser.add_argument("--out", type=Path, default=HERE / "out" / "verify.json")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    results = {"python": sys.version.split()[0], "ima": ima_section(sizes, not args.no_keylime)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

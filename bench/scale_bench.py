"""How many nodes one verifier replica keeps fresh, and its CPU per attestation.

    .venv/bin/python bench/scale_bench.py                  # N = 250, 500, 1000, 2000 at T = 2 s
    .venv/bin/python bench/scale_bench.py --quick          # N = 40, a short window
    .venv/bin/python bench/scale_bench.py --nodes 100,300  # another ladder

The real pieces: the control plane with trustgate's CRD and RBAC and N Node objects, and the
``trustgate verifier`` process with its ServiceAccount token, attesting every node each T.

The nodes are simulated by an **agent farm**: one process (this script with ``--farm``) serving
many node identities under ``/nodes/<name>/v1/...``; each node's agent URL given to the verifier
is ``http://127.0.0.1:<port>/nodes/<name>``, so the real collector adds ``/v1/evidence`` etc.
Every node has its own AK (``Tpm.create_ak()``) on one of a few swtpms (many AKs per TPM, the
real ``attestation.agent.tpm.Tpm`` per node): every quote is a real TPM2_Quote over the verifier's
fresh nonce, every enrollment a real ActivateCredential. Nodes on one swtpm share its PCRs and so
its IMA log (boot_aggregate + host files, written like the kernel's). Steady state: no new log
entries. The farm is a load generator only; it is not the agent under test (bench/agent_bench.py).

Measured per step, over a window after every node enrolled and a warm-up:
- the verifier's CPU per attestation: /proc/<verifier pid>/stat (all its threads) over the window
  divided by the evidence requests the farm served in it (one per round);
- evidence age: per node, the time between two consecutive evidence requests (the age a verdict
  reaches just before the next one replaces it); p99 over all nodes must stay under 2T.
Kubernetes writes: the main steps run with ``--max-age 3600`` so a steady-state round that
changes nothing writes nothing (the NodeAttestation refresh is due every max_age/2); one more
step at the largest N re-runs with the default ``--max-age 10`` (status rewritten every 5 s per
node) to show the cost of publishing. Writes bench/out/scale.json.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    http_ok,
    install_trustgate,
    machine,
    percentile,
    poll,
    proc_cpu_seconds,
    proc_memory_mib,
    trustgate_exe,
    verifier_kubeconfig,
    write_policies,
    write_result,
)

from attestation.agent.tpm import Tpm
from attestation.core.evidence import (
    Evidence,
    EvidenceFormatError,
    Identity,
    decode_activate_request,
    decode_evidence_request,
    encode_evidence,
    encode_identity,
)
from attestation.core.signing import generate_private_key, private_key_to_pem
from attestation.core.types import HashAlg
from attestation.lab.controlplane import ControlPlane
from attestation.lab.ima_writer import ImaWriter
from attestation.lab.process import ManagedProcess, free_port
from attestation.lab.swtpm import LocalCa, SwTpm
from tests.support.lab import FILES

BUCKET_LABEL = "trustgate.bench/scale-bucket"
KEYLIME_AGENTS_PER_VERIFIER = 500
GOAL_CPU_MS = 1.0
GOAL_NODES = 2000
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


# --- the agent farm (runs in its own process) -----------------------------------------------


class Farm:
    """Many node identities, one ASGI app. Each swtpm gets one worker thread: swtpm serves one
    connection at a time, so its nodes' TPM calls queue there."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.tpms: list[dict[str, Any]] = config["tpms"]
        self.executors = [ThreadPoolExecutor(1) for _ in self.tpms]
        self.logs = [Path(t["log"]).read_bytes() for t in self.tpms]
        self.node_tpm: dict[str, tuple[int, Tpm]] = {}
        self.identities: dict[str, Identity] = {}
        self.last: dict[str, float] = {}
        self.gaps: list[float] = []
        self.served = 0
        self.errors = 0
        self.activations = 0
        self._lock = threading.Lock()

    def add_nodes(self, names: list[str]) -> None:
        """Create one AK per node, the swtpms' work spread over their threads."""
        new = [n for n in names if n not in self.node_tpm]
        ek = [
            self.executors[k].submit(self._ek, t["tcti"]).result() for k, t in enumerate(self.tpms)
        ]
        futures = []
        for i, name in enumerate(new):
            k = (len(self.node_tpm) + i) % len(self.tpms)
            tpm = Tpm(self.tpms[k]["tcti"], ek_alg="rsa")
            futures.append((name, k, tpm, self.executors[k].submit(tpm.create_ak)))
        for name, k, tpm, future in futures:
            ak = future.result()
            self.node_tpm[name] = (k, tpm)
            cert, public = ek[k]
            self.identities[name] = Identity(name, cert, public, ak.public, tpm.ak_name())

    @staticmethod
    def _ek(tcti: str) -> tuple[bytes, bytes]:
        tpm = Tpm(tcti, ek_alg="rsa")
        return tpm.ek_certificate(), tpm.ek_public()

    def stats(self, reset: bool) -> dict[str, Any]:
        with self._lock:
            out = {
                "served": self.served,
                "errors": self.errors,
                "activations": self.activations,
                "gaps": self.gaps,
                "nodes": len(self.node_tpm),
            }
            if reset:
                self.served, self.errors, self.gaps = 0, 0, []
        return out

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        try:
            status, answer = await self._route(scope["path"], body)
        except (EvidenceFormatError, ValueError, KeyError) as e:
            status, answer = 400, {"error": str(e)}
        except Exception as e:  # a TPM error: the verifier sees a 503, as from a real agent
            with self._lock:
                self.errors += 1
            status, answer = 503, {"error": repr(e)}
        raw = json.dumps(answer).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(raw))]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": raw})

    async def _route(self, path: str, body: bytes) -> tuple[int, Any]:
        loop = asyncio.get_running_loop()
        if path == "/stats":
            return 200, self.stats(reset=False)
        if path == "/stats/reset":
            return 200, self.stats(reset=True)
        if path == "/nodes":
            names = json.loads(body)
            await loop.run_in_executor(None, self.add_nodes, names)
            return 200, {"nodes": len(self.node_tpm)}
        _, nodes, name, version, endpoint = path.split("/", 4)
        if nodes != "nodes" or version != "v1" or name not in self.node_tpm:
            return 404, {"error": f"no route {path}"}
        k, tpm = self.node_tpm[name]
        if endpoint == "identity":
            return 200, encode_identity(self.identities[name])
        if endpoint == "activate":
            blob, secret = decode_activate_request(json.loads(body))
            recovered = await loop.run_in_executor(
                self.executors[k], tpm.activate_credential, blob, secret
            )
            with self._lock:
                self.activations += 1
            return 200, {"secret": base64.b64encode(recovered).decode()}
        if endpoint == "evidence":
            query = decode_evidence_request(json.loads(body))
            quote = await loop.run_in_executor(
                self.executors[k], tpm.quote, query.nonce, query.pcrs, query.banks
            )
            now = time.monotonic()
            with self._lock:
                self.served += 1
                last = self.last.get(name)
                if last is not None:
                    self.gaps.append(now - last)
                self.last[name] = now
            evidence = Evidence(
                quote.attest, quote.signature, quote.pcr_values, query.ima_offset,
                self.logs[k][query.ima_offset :],
            )  # fmt: skip
            return 200, encode_evidence(evidence)
        return 404, {"error": f"no route {path}"}


def farm_main(config_path: Path) -> None:
    import uvicorn

    config = json.loads(config_path.read_text())
    uvicorn.run(
        Farm(config), host="127.0.0.1", port=config["port"], log_level="warning",
        lifespan="off", backlog=4096,
    )  # fmt: skip


# --- the driver ---------------------------------------------------------------------------------


def _call(url: str, body: Any = None, timeout: float = 600) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="POST" if data else "GET")  # noqa: S310
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - loopback
        return json.loads(resp.read())


def _node_names(n: int) -> list[str]:
    return [f"s{i:04d}" for i in range(n)]


def register_nodes(plane: ControlPlane, names: list[str], bucket: int) -> None:
    """Node objects in one kubectl call (no status: the verifier only lists them)."""
    items = [
        {"apiVersion": "v1", "kind": "Node",
         "metadata": {"name": n, "labels": {BUCKET_LABEL: str(bucket)}}}
        for n in names
    ]  # fmt: skip
    plane.kubectl("create", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                          "items": items}))  # fmt: skip


@contextlib.contextmanager
def verifier_process(
    plane: ControlPlane, ca: LocalCa, workdir: Path, farm_url: str, names: list[str],
    buckets: int, interval: float, max_age: float, tag: str,
) -> Iterator[ManagedProcess]:  # fmt: skip
    port = free_port()
    profile = os.environ.get("SCALE_BENCH_PROFILE")  # a path: run the verifier under cProfile
    prefix = [sys.executable, "-m", "cProfile", "-o", f"{profile}.{tag}"] if profile else []
    agents = ",".join(f"{n}={farm_url}/nodes/{n}" for n in names)
    argv = [
        *prefix, trustgate_exe(), "verifier",
        "--kubeconfig", str(verifier_kubeconfig(plane, workdir)), "--agents", agents,
        "--node-selector", f"{BUCKET_LABEL} in ({','.join(map(str, range(buckets)))})",
        "--policies", str(workdir / "policies"), "--ek-ca", str(ca.ca_bundle),
        "--signing-key", str(workdir / "signing.pem"),
        "--audit-log", str(workdir / f"audit-{tag}.jsonl"),
        "--interval", str(interval), "--max-age", str(max_age), "--agent-timeout", "10",
        "--listen", f"127.0.0.1:{port}", "--no-sharding", "--identity", f"scale-{tag}",
    ]  # fmt: skip
    proc = ManagedProcess(f"verifier-{tag}", argv, workdir / f"verifier-{tag}.log")
    try:
        proc.start().wait_until(
            lambda: http_ok(f"http://127.0.0.1:{port}/readyz"), 120, "verifier ready"
        )
        yield proc
    finally:
        proc.stop()


def measure_step(
    plane: ControlPlane, ca: LocalCa, workdir: Path, farm_url: str, n: int, buckets: int,
    interval: float, max_age: float, window: float, tag: str,
) -> dict[str, Any]:  # fmt: skip
    names = _node_names(n)
    base = _call(f"{farm_url}/stats")["activations"]
    with verifier_process(
        plane, ca, workdir, farm_url, names, buckets, interval, max_age, tag
    ) as proc:
        assert proc.pid is not None
        started = time.monotonic()
        poll(f"{n} nodes enrolled", lambda: _call(f"{farm_url}/stats")["activations"] - base >= n,
             timeout=60 + n * 0.2, every=0.5)  # fmt: skip
        enrolled_s = time.monotonic() - started
        time.sleep(max(2 * interval, 4.0))  # warm-up: first publishes and rounds settle
        _call(f"{farm_url}/stats/reset")
        cpu0 = proc_cpu_seconds(proc.pid)
        t0 = time.monotonic()
        time.sleep(window)
        cpu = proc_cpu_seconds(proc.pid) - cpu0
        elapsed = time.monotonic() - t0
        stats = _call(f"{farm_url}/stats/reset")
        memory = proc_memory_mib(proc.pid)
    served, gaps = stats["served"], stats["gaps"]
    p99_gap = percentile(gaps, 99) if gaps else float("inf")
    return {
        "nodes": n,
        "tag": tag,
        "max_age_s": max_age,
        "enrolled_in_s": round(enrolled_s, 1),
        "window_s": round(elapsed, 1),
        "attestations": served,
        "attestations_per_s": round(served / elapsed, 1),
        "wanted_per_s": round(n / interval, 1),
        "errors": stats["errors"],
        "verifier_cpu_ms_per_attestation": round(cpu / served * 1e3, 3) if served else None,
        "verifier_cpu_share": round(cpu / elapsed, 3),
        "evidence_age_s": {
            "p50": round(percentile(gaps, 50), 3) if gaps else None,
            "p99": round(p99_gap, 3) if gaps else None,
            "max": round(max(gaps), 3) if gaps else None,
        },
        "fresh": bool(gaps) and p99_gap < 2 * interval and stats["errors"] == 0,
        "verifier_rss_mib": round(memory["VmHWM"], 1),
    }


def run(ladder: list[int], interval: float, window: float, tpms: int, workdir: Path) -> Any:
    plane = ControlPlane(workdir / "control-plane", log=lambda m: print(f"[control-plane] {m}"))
    swtpms: list[SwTpm] = []
    farm: ManagedProcess | None = None
    steps: list[dict[str, Any]] = []
    try:
        plane.start()
        install_trustgate(plane)
        write_policies(workdir / "policies")
        (workdir / "signing.pem").write_bytes(private_key_to_pem(generate_private_key()))
        ca = LocalCa.create(workdir / "tpm-ca")
        config: dict[str, Any] = {"port": free_port(), "tpms": []}
        for k in range(tpms):
            swtpm = SwTpm(ca, workdir / f"tpm-{k}")
            swtpm.start()
            swtpms.append(swtpm)
            writer = ImaWriter(workdir / f"ima-{k}.log", extend=swtpm.extend_pcr,
                               template="ima-cgpath")  # fmt: skip
            pcrs = swtpm.read_pcrs(list(range(8)), (HashAlg.SHA256,))[HashAlg.SHA256]
            writer.boot_aggregate(pcrs)
            for path, content in FILES["host"].items():
                writer.measure(path, content)
            config["tpms"].append({"tcti": swtpm.tcti, "log": str(writer.log_path)})
        (workdir / "farm.json").write_text(json.dumps(config))
        farm_url = f"http://127.0.0.1:{config['port']}"
        farm = ManagedProcess(
            "farm", [sys.executable, __file__, "--farm", str(workdir / "farm.json")],
            workdir / "farm.log",
        ).start()  # fmt: skip
        farm.wait_until(lambda: http_ok(f"{farm_url}/stats"), 60, "farm up")
        have = 0
        for bucket, n in enumerate(ladder):
            names = _node_names(n)[have:]
            t = time.monotonic()
            _call(f"{farm_url}/nodes", names)
            register_nodes(plane, names, bucket)
            print(f"N={n}: {len(names)} more nodes (AKs + Node objects) in "
                  f"{time.monotonic() - t:.1f}s")  # fmt: skip
            have = n
            step = measure_step(plane, ca, workdir, farm_url, n, bucket + 1, interval, 3600.0,
                                window, f"n{n}")  # fmt: skip
            steps.append(step)
            _print_step(step)
        best = max((s for s in steps if s["fresh"]), key=lambda s: s["nodes"], default=steps[0])
        publishing = measure_step(plane, ca, workdir, farm_url, best["nodes"], len(ladder),
                                  interval, 10.0, window, f"n{best['nodes']}-publish")  # fmt: skip
        _print_step(publishing)
    finally:
        if farm is not None:
            farm.stop()
        for swtpm in swtpms:
            swtpm.stop(orderly=False)
        plane.stop()
    return steps, publishing


def _print_step(s: dict[str, Any]) -> None:
    age = s["evidence_age_s"]
    print(f"  N={s['nodes']:5d} max-age {s['max_age_s']:g}s: {s['attestations_per_s']:7.1f}"
          f" attestations/s (want {s['wanted_per_s']}), verifier"
          f" {s['verifier_cpu_ms_per_attestation']} ms CPU each ({s['verifier_cpu_share']:.0%}"
          f" of a core), evidence age p50 {age['p50']} s p99 {age['p99']} s max {age['max']} s,"
          f" errors {s['errors']}, fresh {s['fresh']}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", default="250,500,1000,2000", help="the ladder of N")
    parser.add_argument("--interval", type=float, default=2.0)
    parser.add_argument("--window", type=float, default=20.0, help="seconds measured per step")
    parser.add_argument("--tpms", type=int, default=4, help="swtpm processes shared by nodes")
    parser.add_argument("--quick", action="store_true", help="N = 40, 6 s window")
    parser.add_argument("--keep", type=Path, help="use (and keep) this work directory")
    parser.add_argument("--farm", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.farm:
        farm_main(args.farm)
        return
    ladder = [40] if args.quick else sorted({int(x) for x in args.nodes.split(",")})
    window = 6.0 if args.quick else args.window
    load_before = machine()
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        steps, publishing = run(ladder, args.interval, window, args.tpms, args.keep)
    else:
        with tempfile.TemporaryDirectory(prefix="scale-bench-") as tmp:
            steps, publishing = run(ladder, args.interval, window, args.tpms, Path(tmp))
    fresh = [s for s in steps if s["fresh"]]
    largest = max((s["nodes"] for s in fresh), default=0)
    cpu_values = [s["verifier_cpu_ms_per_attestation"] for s in steps if s["attestations"]]
    cpu_ms = min(cpu_values) if cpu_values else float("nan")
    at_largest = next((s for s in steps if s["nodes"] == largest), None)
    cpu_at_largest = at_largest["verifier_cpu_ms_per_attestation"] if at_largest else cpu_ms
    derived = int(args.interval / (cpu_at_largest / 1e3)) if cpu_at_largest else 0
    result = {
        "interval_s": args.interval,
        "swtpms": args.tpms,
        "kubernetes_writes": "excluded in the steps' windows (max-age 3600: nothing due); "
        "included in 'publishing' (max-age 10: status rewritten every 5 s per node)",
        "steps": steps,
        "publishing": publishing,
        "largest_fresh_nodes_measured": largest,
        "verifier_cpu_ms_per_attestation_at_largest": cpu_at_largest,
        "derived_nodes_per_core_at_interval": derived,
        "derived_note": "DERIVED, not measured: interval / verifier CPU per attestation at the "
        "largest fresh N, i.e. nodes one fully used core could keep attested",
        "vs_keylime_agents_per_verifier": round(derived / KEYLIME_AGENTS_PER_VERIFIER, 1),
        "goals": {"cpu_ms": GOAL_CPU_MS, "nodes": GOAL_NODES},
        "goals_met": {
            "cpu": bool(cpu_at_largest and cpu_at_largest <= GOAL_CPU_MS),
            "nodes_measured": largest >= GOAL_NODES,
        },
        "machine": {"before": load_before, "after": machine()},
    }
    print(f"largest N with p99 evidence age < {2 * args.interval:g} s (measured): {largest}")
    print(f"verifier CPU per attestation at that N: {cpu_at_largest} ms (goal <= {GOAL_CPU_MS})")
    ratio = result["vs_keylime_agents_per_verifier"]
    print(f"DERIVED capacity: {derived} nodes per verifier core at {args.interval:g} s "
          f"({ratio}x Keylime's ~500 agents per verifier)")  # fmt: skip
    print(f"with publishing (max-age 10): {publishing['verifier_cpu_ms_per_attestation']} ms CPU"
          f" per attestation at N={publishing['nodes']}; load {result['machine']}")  # fmt: skip
    write_result("scale", result)


if __name__ == "__main__":
    main()

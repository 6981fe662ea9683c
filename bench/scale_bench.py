"""How many nodes one verifier replica keeps fresh, and its CPU per attestation.

    .venv/bin/python bench/scale_bench.py                  # N = 250, 500, 1000, 2000 at T = 2 s
    .venv/bin/python bench/scale_bench.py --quick          # N = 40, a short window
    .venv/bin/python bench/scale_bench.py --nodes 100,300  # another ladder

The real pieces: the control plane with trustgate's CRD and RBAC and N Node objects, and the
``trustgate verifier`` process with its ServiceAccount token, attesting every node each T.

The nodes are simulated by the agent farm (bench/farm.py): real TPM2_Quotes and enrollments on
a few swtpms, one AK per node.

Measured per step, over a window after every node enrolled and a warm-up:
- the verifier's CPU per attestation: /proc/<verifier pid>/stat (all its threads) over the window
  divided by the evidence requests the farm served in it (one per round);
- evidence age: per node, the time between two consecutive evidence requests (the age a verdict
  reaches just before the next one replaces it); p99 over all nodes must stay under 2T.
Kubernetes writes: the main steps run with ``--max-age 3600`` so a steady-state round that
changes nothing writes nothing (the NodeAttestation refresh is due every max_age/2); one more
step at the largest N re-runs with the default ``--max-age 20`` (status rewritten every 10 s per
node) to show the cost of publishing. Every step counts the API server's write requests
(``apiserver_request_total``) per node per minute, by resource.

Replicas (``--replicas 1,2,3``): that many sharded verifiers (issue 11) share ``--replica-nodes``
nodes at the default max-age; after every node is owned and a refresh cycle passed, a window
measures API writes per node per minute at steady state (the control plane's own lease renewals,
measured first with no verifier, taken off) and each replica's CPU per attestation.
Writes bench/out/scale.json.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    http_ok,
    machine,
    percentile,
    poll,
    proc_cpu_seconds,
    proc_memory_mib,
    trustgate_exe,
    verifier_kubeconfig,
    write_result,
)
from farm import (
    BUCKET_LABEL,
    FarmLab,
    api_writes,
    approve_shared_eks,
    call,
    farm_lab,
    node_names,
    register_nodes,
)

from attestation.lab.process import ManagedProcess, free_port

KEYLIME_AGENTS_PER_VERIFIER = 500
GOAL_CPU_MS = 1.0
GOAL_NODES = 2000


@contextlib.contextmanager
def verifier_process(
    lab: FarmLab, names: list[str], buckets: int, interval: float, max_age: float, tag: str,
    *, sharded: bool = False,
) -> Iterator[ManagedProcess]:  # fmt: skip
    """One ``trustgate verifier`` attesting ``names`` (alone, or as one of the sharded replicas:
    identity ``scale-<tag>``)."""
    port = free_port()
    profile = os.environ.get("SCALE_BENCH_PROFILE")  # a path: run the verifier under cProfile
    prefix = [sys.executable, "-m", "cProfile", "-o", f"{profile}.{tag}"] if profile else []
    agents = ",".join(f"{n}={lab.farm_url}/nodes/{n}" for n in names)
    argv = [
        *prefix, trustgate_exe(), "verifier",
        "--kubeconfig", str(verifier_kubeconfig(lab.plane, lab.workdir)), "--agents", agents,
        "--node-selector", f"{BUCKET_LABEL} in ({','.join(map(str, range(buckets)))})",
        "--policies", str(lab.workdir / "policies"), "--ek-ca", str(lab.ca.ca_bundle),
        "--signing-key", str(lab.workdir / "signing.pem"),
        "--audit-log", str(lab.workdir / f"audit-{tag}.jsonl"),
        "--interval", str(interval), "--max-age", str(max_age), "--agent-timeout", "10",
        "--listen", f"127.0.0.1:{port}", "--identity", f"scale-{tag}",
        *(() if sharded else ("--no-sharding",)),
    ]  # fmt: skip
    proc = ManagedProcess(f"verifier-{tag}", argv, lab.workdir / f"verifier-{tag}.log")
    try:
        proc.start().wait_until(
            lambda: http_ok(f"http://127.0.0.1:{port}/readyz"), 120, "verifier ready"
        )
        yield proc
    finally:
        proc.stop()


def measure_step(
    lab: FarmLab, n: int, buckets: int, interval: float, max_age: float, window: float, tag: str
) -> dict[str, Any]:
    names = node_names(n)
    base = call(f"{lab.farm_url}/stats")["activations"]
    with verifier_process(lab, names, buckets, interval, max_age, tag) as proc:
        assert proc.pid is not None
        started = time.monotonic()
        poll(f"{n} nodes enrolled",
             lambda: call(f"{lab.farm_url}/stats")["activations"] - base >= n,
             timeout=60 + n * 0.2, every=0.5)  # fmt: skip
        enrolled_s = time.monotonic() - started
        time.sleep(max(2 * interval, 4.0))  # warm-up: first publishes and rounds settle
        call(f"{lab.farm_url}/stats/reset")
        writes0 = api_writes(lab.plane)
        cpu0 = proc_cpu_seconds(proc.pid)
        t0 = time.monotonic()
        time.sleep(window)
        cpu = proc_cpu_seconds(proc.pid) - cpu0
        elapsed = time.monotonic() - t0
        writes = _diff(api_writes(lab.plane), writes0)
        stats = call(f"{lab.farm_url}/stats/reset")
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
        "api_writes_per_node_per_min": _per_node_minute(writes, n, elapsed),
    }


def _diff(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v - before.get(k, 0.0) > 0}


def _per_node_minute(writes: dict[str, float], n: int, seconds: float) -> dict[str, float]:
    """Writes per node per minute, by resource, and their total."""
    rates = {k: round(v / n / (seconds / 60), 3) for k, v in sorted(writes.items())}
    return {**rates, "total": round(sum(writes.values()) / n / (seconds / 60), 3)}


def measure_replicas(
    lab: FarmLab, n: int, buckets: int, replicas: int, interval: float, max_age: float,
    window: float, background: dict[str, float],
) -> dict[str, Any]:  # fmt: skip
    """``replicas`` sharded verifiers sharing ``n`` nodes at the default max-age: API writes per
    node per minute at steady state (the control plane's own writes, ``background`` a second,
    taken off), and each replica's CPU per attestation (its nodes' rounds: the farm counts per
    node, the owner is the hash's)."""
    names = node_names(n)
    tags = [f"r{replicas}-{i}" for i in range(replicas)]
    with contextlib.ExitStack() as stack:
        procs = [
            stack.enter_context(
                verifier_process(lab, names, buckets, interval, max_age, tag, sharded=True)
            )
            for tag in tags
        ]
        owners = {f"scale-{t}" for t in tags}

        def settled() -> bool:
            items = lab.plane.get("/apis/trustgate.io/v1alpha1/nodeattestations")["items"]
            got = {i["metadata"]["name"]: (i.get("status") or {}).get("owner") for i in items}
            return all(got.get(node) in owners for node in names)

        poll(f"{n} nodes owned by {replicas} replicas", settled, timeout=120 + n * 0.3, every=1.0)
        time.sleep(max_age / 2 + 2 * interval)  # warm-up: hand-overs done, a refresh cycle in
        call(f"{lab.farm_url}/stats/reset")
        writes0 = api_writes(lab.plane)
        cpu0 = [proc_cpu_seconds(p.pid or 0) for p in procs]
        t0 = time.monotonic()
        time.sleep(window)
        cpu = [proc_cpu_seconds(p.pid or 0) - c for p, c in zip(procs, cpu0, strict=True)]
        elapsed = time.monotonic() - t0
        writes = _diff(api_writes(lab.plane), writes0)
        stats = call(f"{lab.farm_url}/stats/reset")
    for resource, rate in background.items():  # the control plane's own lease renewals etc.
        if resource in writes:
            writes[resource] = max(0.0, writes[resource] - rate * elapsed)
    served = stats["served"]
    per_replica = served / replicas if served else 0
    return {
        "replicas": replicas,
        "nodes": n,
        "max_age_s": max_age,
        "window_s": round(elapsed, 1),
        "attestations_per_s": round(served / elapsed, 1),
        "errors": stats["errors"],
        "api_writes_per_node_per_min": _per_node_minute(writes, n, elapsed),
        "verifier_cpu_ms_per_attestation_by_replica": [
            round(c / per_replica * 1e3, 3) if per_replica else None for c in cpu
        ],
        "verifier_cpu_share_by_replica": [round(c / elapsed, 3) for c in cpu],
        "note": "CPU per attestation per replica assumes the rounds split evenly (the hash "
        "spreads nodes within a few percent at this N)",
    }


def background_writes(lab: FarmLab, seconds: float) -> dict[str, float]:
    """The control plane's own writes a second with no verifier running (kube-scheduler's and
    kube-controller-manager's leases, ...): taken off the replicas' figures."""
    before = api_writes(lab.plane)
    time.sleep(seconds)
    return {k: v / seconds for k, v in _diff(api_writes(lab.plane), before).items()}


def run(
    ladder: list[int], interval: float, window: float, tpms: int, workdir: Path,
    replicas: list[int], replica_nodes: int,
) -> Any:  # fmt: skip
    steps: list[dict[str, Any]] = []
    sharded: list[dict[str, Any]] = []
    with farm_lab(workdir, tpms) as lab:
        have = 0
        for bucket, n in enumerate(ladder):
            names = node_names(n)[have:]
            t = time.monotonic()
            call(f"{lab.farm_url}/nodes", names)
            register_nodes(lab.plane, names, bucket)
            approve_shared_eks(lab, names)
            print(f"N={n}: {len(names)} more nodes (AKs + Node objects) in "
                  f"{time.monotonic() - t:.1f}s")  # fmt: skip
            have = n
            step = measure_step(lab, n, bucket + 1, interval, 3600.0, window, f"n{n}")
            steps.append(step)
            _print_step(step)
        best = max((s for s in steps if s["fresh"]), key=lambda s: s["nodes"], default=steps[0])
        publishing = measure_step(lab, best["nodes"], len(ladder), interval, 20.0, window,
                                  f"n{best['nodes']}-publish")  # fmt: skip
        _print_step(publishing)
        if replicas:
            background = background_writes(lab, 15.0)
            n = min(replica_nodes, have)
            for r in replicas:
                step = measure_replicas(lab, n, len(ladder), r, interval, 20.0, max(window, 30.0),
                                        background)  # fmt: skip
                sharded.append(step)
                _print_replicas(step)
    return steps, publishing, sharded


def _print_replicas(s: dict[str, Any]) -> None:
    writes = s["api_writes_per_node_per_min"]
    print(f"  {s['replicas']} replica(s), N={s['nodes']}, max-age {s['max_age_s']:g}s: "
          f"{writes['total']} API writes per node per minute ({writes}); CPU per attestation by "
          f"replica {s['verifier_cpu_ms_per_attestation_by_replica']} ms, "
          f"errors {s['errors']}")  # fmt: skip


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
    parser.add_argument(
        "--replicas", default="1,2,3", help="sharded replica counts at steady state ('' none)"
    )
    parser.add_argument(
        "--replica-nodes", type=int, default=500, help="nodes the replicas share (<= the top N)"
    )
    args = parser.parse_args()
    ladder = [40] if args.quick else sorted({int(x) for x in args.nodes.split(",")})
    replicas = [int(x) for x in args.replicas.split(",") if x]
    window = 6.0 if args.quick else args.window
    load_before = machine()
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        steps, publishing, sharded = run(ladder, args.interval, window, args.tpms, args.keep,
                                         replicas, args.replica_nodes)  # fmt: skip
    else:
        with tempfile.TemporaryDirectory(prefix="scale-bench-") as tmp:
            steps, publishing, sharded = run(ladder, args.interval, window, args.tpms, Path(tmp),
                                             replicas, args.replica_nodes)  # fmt: skip
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
        "included in 'publishing' and 'replicas' (max-age 20, the default: status rewritten "
        "every 10 s per node)",
        "steps": steps,
        "publishing": publishing,
        "replicas": sharded,
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
    print(f"with publishing (max-age 20): {publishing['verifier_cpu_ms_per_attestation']} ms CPU"
          f" per attestation at N={publishing['nodes']}, API writes per node per minute "
          f"{publishing['api_writes_per_node_per_min']}; load {result['machine']}")  # fmt: skip
    write_result("scale", result)


if __name__ == "__main__":
    main()

"""How long the nodes of a verifier replica killed -9 go unattested, and whether any verdict
expires meanwhile (an NF binding would be refused then).

    .venv/bin/python bench/failover_bench.py                 # 3 replicas, 60 nodes, 20 kills
    .venv/bin/python bench/failover_bench.py --kills 5       # a quick look

The real pieces: the control plane with trustgate installed, the agent farm (bench/farm.py: a
real TPM2_Quote per round, a real enrollment per node taken over) and ``--replicas`` sharded
``trustgate verifier`` processes with the default lease, interval and max-age. Each kill: the
replicas in turn get SIGKILL; its failover time is from the kill until every node
it owned carries a verdict newer than the kill signed by another replica; a thread polls every
NodeAttestation every 100 ms and counts a *lapse* for every node whose ``expiresAt`` has passed
(what the webhook would refuse a binding for). Then the Deployment's part is played: the replica
is started again under the same name (a new incarnation) and the nodes settle before the next
kill. Baseline in the same run: the lease duration (a replica is written off once its Lease has
stood still that long). Writes bench/out/failover.json.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import signal
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    http_ok,
    machine,
    percentile,
    poll,
    trustgate_exe,
    verifier_kubeconfig,
    write_result,
)
from farm import (
    BUCKET_LABEL,
    FarmLab,
    approve_shared_eks,
    call,
    farm_lab,
    node_names,
    register_nodes,
)

from attestation.core.clock import parse_time
from attestation.core.sharding import owner_of
from attestation.lab.poll import Lapses
from attestation.lab.process import ManagedProcess, free_port
from attestation.verifier.settings import VerifierSettings

NODEATTESTATIONS = "/apis/trustgate.io/v1alpha1/nodeattestations"


def _replica(lab: FarmLab, names: list[str], index: int, port: int) -> ManagedProcess:
    agents = ",".join(f"{n}={lab.farm_url}/nodes/{n}" for n in names)
    argv = [
        trustgate_exe(), "verifier",
        "--kubeconfig", str(verifier_kubeconfig(lab.plane, lab.workdir)), "--agents", agents,
        "--node-selector", f"{BUCKET_LABEL}=0",
        "--policies", str(lab.workdir / "policies"), "--ek-ca", str(lab.ca.ca_bundle),
        "--signing-key", str(lab.workdir / "signing.pem"),
        "--audit-log", str(lab.workdir / f"audit-{index}.jsonl"),
        "--listen", f"127.0.0.1:{port}", "--identity", f"replica-{index}",
    ]  # fmt: skip
    proc = ManagedProcess(f"replica-{index}", argv, lab.workdir / f"replica-{index}.log")
    proc.start().wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/readyz"), 120, "ready")
    return proc


def _statuses(lab: FarmLab) -> dict[str, dict[str, Any]]:
    items = lab.plane.get(NODEATTESTATIONS)["items"]
    return {i["metadata"]["name"]: i.get("status") or {} for i in items}


def _expired(lab: FarmLab, names: list[str]) -> list[str]:
    """The nodes whose verdict has expired (what the webhook would refuse a binding to)."""
    now = datetime.now(UTC)
    statuses = _statuses(lab)
    return [
        node
        for node in names
        if not (expires := statuses.get(node, {}).get("expiresAt"))
        or parse_time(expires, "expiresAt") <= now
    ]


def _failover(lab: FarmLab, victim: str, nodes: list[str], killed: datetime) -> bool:
    statuses = _statuses(lab)
    for node in nodes:
        status = statuses.get(node, {})
        if status.get("owner") in (None, victim):
            return False
        if parse_time(status["verifiedAt"], "verifiedAt") <= killed:
            return False
    return True


def run(workdir: Path, n: int, replicas: int, kills: int) -> dict[str, Any]:
    names = node_names(n)
    with farm_lab(workdir, tpms=2) as lab, contextlib.ExitStack() as stack:
        call(f"{lab.farm_url}/nodes", names)
        register_nodes(lab.plane, names, 0)
        approve_shared_eks(lab, names)
        ports = [free_port() for _ in range(replicas)]
        procs = [_replica(lab, names, i, ports[i]) for i in range(replicas)]
        for i in range(replicas):  # stops whichever process holds the slot at the end
            stack.callback(lambda i=i: procs[i].stop())  # type: ignore[misc]
        identities = {f"replica-{i}" for i in range(replicas)}
        owners = {node: owner_of(node, identities) for node in names}

        def settled() -> bool:
            """Every node with the owner the hash gives it among all replicas, and fresh."""
            now = datetime.now(UTC)
            statuses = _statuses(lab)
            return all(
                statuses.get(node, {}).get("owner") == owners[node]
                and parse_time(statuses[node]["expiresAt"], "expiresAt") > now
                for node in names
            )

        try:
            poll("every node owned and fresh", settled, timeout=120, every=1.0)
        except TimeoutError:
            for node, status in sorted(_statuses(lab).items()):
                print(node, status.get("state"), status.get("owner"), status.get("expiresAt"),
                      status.get("reason"))  # fmt: skip
            raise
        print(f"{n} nodes attested by {replicas} replicas; {kills} kills follow", flush=True)
        times: list[float] = []
        lapses = Lapses(functools.partial(_expired, lab, names), limit=kills * 120.0)
        with lapses:
            for k in range(kills):
                index = k % replicas
                victim = f"replica-{index}"
                nodes = [node for node, owner in owners.items() if owner == victim]
                killed_at = datetime.now(UTC)
                t0 = time.monotonic()
                procs[index].signal(signal.SIGKILL)
                taken = functools.partial(_failover, lab, victim, nodes, killed_at)
                poll(f"{victim}'s {len(nodes)} nodes taken over", taken, timeout=60, every=0.05)
                times.append(time.monotonic() - t0)
                print(f"  kill {k + 1}: {victim} ({len(nodes)} nodes) replaced in "
                      f"{times[-1]:.2f}s", flush=True)  # fmt: skip
                procs[index] = _replica(lab, names, index, ports[index])
                poll("settled again", settled, timeout=120, every=0.5)
    lease = VerifierSettings().lease_duration
    return {
        "nodes": n,
        "replicas": replicas,
        "kills": kills,
        "defaults": {
            "lease_duration_s": lease,
            "interval_s": VerifierSettings().interval,
            "max_age_s": VerifierSettings().max_age,
        },
        "failover_s": {
            "p50": round(percentile(times, 50), 3),
            "p99": round(percentile(times, 99), 3),
            "max": round(max(times), 3),
            "all": [round(t, 3) for t in times],
        },
        "baseline_lease_duration_s": lease,
        "ratio_p50_to_lease": round(percentile(times, 50) / lease, 2),
        "verdict_lapses": len(lapses.seen),
        "polls": lapses.polls,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, default=60)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--keep", type=Path, help="use (and keep) this work directory")
    args = parser.parse_args()
    before = machine()
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        result = run(args.keep, args.nodes, args.replicas, args.kills)
    else:
        with tempfile.TemporaryDirectory(prefix="failover-bench-") as tmp:
            result = run(Path(tmp), args.nodes, args.replicas, args.kills)
    result["machine"] = {"before": before, "after": machine()}
    f = result["failover_s"]
    print(f"failover over {args.kills} kills: p50 {f['p50']} s, p99 {f['p99']} s, max {f['max']}"
          f" s (lease {result['baseline_lease_duration_s']} s: p50 = "
          f"{result['ratio_p50_to_lease']}x the lease); verdict lapses "
          f"{result['verdict_lapses']} in {result['polls']} polls")  # fmt: skip
    write_result("failover", result)


if __name__ == "__main__":
    main()

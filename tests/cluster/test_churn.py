"""The verifier's memory under churn: 100 nodes and 1,000 NF pods come and go in the real API
server while a Verifier runs in this process (its own informers, publisher and remediator, the
verifier ServiceAccount's RBAC); everything it keeps per node and per pod returns to its size
before the churn.

The nodes are Node objects without agents: each goes Unknown (``agent.missing``) and, with an
unknown-grace of 0 and ``evict_on_unknown``, its pods are evicted, so the remediator's record
of finished evictions fills up too. Without a kubelet an evicted pod stays Terminating until the
test deletes it.
"""

from __future__ import annotations

import asyncio
import contextlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from attestation.adapters.kube import Kube, load_api_client
from attestation.core.names import NF_LABEL
from attestation.core.signing import generate_private_key
from attestation.core.verdict import PolicySet
from attestation.lab.cluster import NAMESPACE, lab_node_label, service_account_kubeconfig
from attestation.lab.poll import wait_for
from attestation.verifier.auditlog import AuditLog
from attestation.verifier.controller import Verifier
from attestation.verifier.metrics import VerifierMetrics
from attestation.verifier.publisher import Publisher
from attestation.verifier.settings import VerifierSettings
from tests.support.controlplane import ClusterHandle

NS = "churn"
NODES, PODS = 100, 1000


def _node(name: str, label: tuple[str, str]) -> dict[str, object]:
    return {"metadata": {"name": name, "labels": {label[0]: label[1]}}}


def _pod(name: str, node: str) -> dict[str, object]:
    return {
        "metadata": {"name": name, "labels": {NF_LABEL: "upf"}},
        "spec": {"nodeName": node, "containers": [{"name": "upf", "image": "open5gs/upf"}]},
    }


def _in_parallel(calls: list[tuple[str, str, object]], cluster: ClusterHandle) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda c: cluster.request(c[0], c[1], c[2]), calls))


async def _churn(cluster: ClusterHandle, workdir: Path) -> tuple[dict[str, int], dict[str, int]]:
    label = lab_node_label("churn")
    settings = VerifierSettings(
        node_selector="=".join(label), interval=0.5, max_age=2.0, unknown_grace=0.0,
        evict_on_unknown=True,
        sharding=False, namespace=NAMESPACE, audit_log=workdir / "audit.jsonl",
    )  # fmt: skip
    kubeconfig = service_account_kubeconfig(cluster.plane, "trustgate-verifier", workdir)
    kube = Kube(load_api_client(kubeconfig))
    metrics = VerifierMetrics()
    audit = AuditLog(settings.audit_log)
    key = generate_private_key()
    publisher = Publisher(kube, settings, key, audit, metrics, cluster_id="churn-cluster")
    verifier = Verifier(settings, kube, publisher, PolicySet({}, None), b"", metrics)
    await verifier.start()
    verifier.loops.activate()
    try:
        baseline = verifier.tracked()
        nodes = [f"churn-{i}" for i in range(NODES)]
        pods = [(f"upf-{i}", nodes[i % NODES]) for i in range(PODS)]
        await asyncio.to_thread(
            _in_parallel, [("POST", "/api/v1/nodes", _node(n, label)) for n in nodes], cluster
        )
        await asyncio.to_thread(
            _in_parallel,
            [("POST", f"/api/v1/namespaces/{NS}/pods", _pod(p, n)) for p, n in pods],
            cluster,
        )

        def everything_evicted() -> dict[str, int] | None:
            sizes = verifier.tracked()
            return sizes if sizes["evictions"] >= baseline["evictions"] + PODS else None

        grown = await asyncio.to_thread(wait_for, "every pod evicted", everything_evicted, 180)
        await asyncio.to_thread(
            _in_parallel,
            [("DELETE", f"/api/v1/namespaces/{NS}/pods/{p}", {"gracePeriodSeconds": 0})
             for p, _ in pods]
            + [("DELETE", f"/api/v1/nodes/{n}", None) for n in nodes],
            cluster,
        )  # fmt: skip
        with contextlib.suppress(TimeoutError):
            await asyncio.to_thread(
                wait_for, "back to baseline", lambda: verifier.tracked() == baseline, 60
            )
        assert verifier.tracked() == baseline, grown
        return baseline, grown
    finally:
        await verifier.close()
        audit.close()
        kube.close()


@pytest.mark.timeout(600)
def test_churn_of_nodes_and_pods_leaves_no_bookkeeping_behind(
    trustgate_installed: ClusterHandle, tmp_path: Path
) -> None:
    trustgate_installed.ensure_namespace(NS)
    baseline, grown = asyncio.run(_churn(trustgate_installed, tmp_path))
    # The churn really filled every map (else the test could not fail); a node may be between
    # two states at the moment of the snapshot, hence "most" for the per-node maps.
    for what in ("workers", "published", "unknown_since", "evidence_age_gauges"):
        assert grown[what] >= baseline[what] + NODES * 9 // 10, (what, baseline, grown)
    for what in ("nf_pods", "evictions"):
        assert grown[what] >= baseline[what] + PODS, (what, baseline, grown)

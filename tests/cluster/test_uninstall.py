"""`trustgate uninstall` on a control plane of its own (it removes what every other cluster test
shares): trustgate installed from manifests/ with its real webhook, NF pods the webhook gated
and pinned, nodes labelled and tainted. After the uninstall nothing of trustgate is left, the
Deployment's pod is made again without gate or pin and the scheduler binds it, and a bare pod
is released and named for its owner to recreate."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from attestation.core.names import (
    ATTESTED_LABEL,
    NF_LABEL,
    PROTECTED_NAMESPACE_LABEL,
    SCHEDULING_GATE,
    UNTRUSTED_TAINT,
)
from attestation.lab.cluster import install_manifests
from attestation.lab.controlplane import ControlPlane
from attestation.lab.node import trustgate_exe
from tests.support.controlplane import ClusterHandle
from tests.support.lab import lab_cluster, wait_for
from tests.support.swtpm import LocalCa

NS = "5g-uninstall"
UPF_DEPLOYMENT = {
    "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "upf"},
    "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "upf"}},
             "template": {"metadata": {"labels": {"app": "upf", NF_LABEL: "upf"}},
                          "spec": {"containers": [{"name": "upf", "image": "upf"}]}}},
}  # fmt: skip


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterHandle]:
    plane = ControlPlane(tmp_path_factory.mktemp("uninstall-plane"), log=lambda _m: None)
    plane.start()
    try:
        install_manifests(plane)
        yield ClusterHandle(plane)
    finally:
        plane.stop()


def _pods(cluster: ClusterHandle) -> list[dict[str, Any]]:
    return list(cluster.request("GET", f"/api/v1/namespaces/{NS}/pods")["items"])


def _uninstall(cluster: ClusterHandle, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [trustgate_exe(), "uninstall", "--kubeconfig", str(cluster.kubeconfig), *extra],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def test_uninstall_leaves_nothing_and_refuses_no_binding(
    cluster: ClusterHandle, swtpm_ca: LocalCa, tmp_path: Path
) -> None:
    cluster.add_node("un-1", {ATTESTED_LABEL: "true"})
    cluster.add_node("un-2", taints=[{"key": UNTRUSTED_TAINT, "effect": "NoSchedule"}])
    cluster.ensure_namespace(NS, {PROTECTED_NAMESPACE_LABEL: "true"})
    with lab_cluster(cluster, swtpm_ca, tmp_path, [], webhook=True) as lab:
        cluster.request("POST", f"/apis/apps/v1/namespaces/{NS}/deployments", UPF_DEPLOYMENT)
        cluster.request("POST", f"/api/v1/namespaces/{NS}/pods", {
            "metadata": {"name": "bare-smf", "labels": {NF_LABEL: "smf"}},
            "spec": {"containers": [{"name": "smf", "image": "smf"}]},
        })  # fmt: skip
        wait_for("both NF pods gated by the webhook", lambda: len([
            p for p in _pods(cluster)
            if any(g["name"] == SCHEDULING_GATE for g in p["spec"].get("schedulingGates") or [])
        ]) == 2)  # fmt: skip
        assert lab.verifier is not None
        lab.verifier.stop()  # as the uninstall's step 2 does to the verifier's Deployment

        planned = _uninstall(cluster, "--dry-run")
        assert planned.returncode == 0, planned.stderr
        assert "would delete mutatingwebhookconfiguration trustgate" in planned.stdout
        assert cluster.get("/apis/admissionregistration.k8s.io/v1/"
                           "mutatingwebhookconfigurations/trustgate") is not None  # fmt: skip

        done = _uninstall(cluster)
        assert done.returncode == 0, done.stderr
    print(done.stdout)
    admission = "/apis/admissionregistration.k8s.io/v1"
    for kind in ("mutatingwebhookconfigurations", "validatingwebhookconfigurations",
                 "validatingadmissionpolicies", "validatingadmissionpolicybindings"):  # fmt: skip
        left = [
            o["metadata"]["name"] for o in cluster.request("GET", f"{admission}/{kind}")["items"]
        ]
        assert not [n for n in left if n.startswith("trustgate")], (kind, left)
    for crd in ("nodeattestations.trustgate.io", "runtimepolicies.trustgate.io"):
        assert cluster.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{crd}") is None
    assert ATTESTED_LABEL not in cluster.get("/api/v1/nodes/un-1")["metadata"]["labels"]
    taints = cluster.get("/api/v1/nodes/un-2")["spec"].get("taints") or []
    assert not any(t["key"] == UNTRUSTED_TAINT for t in taints)
    namespace = cluster.get("/api/v1/namespaces/trustgate-system")
    assert namespace is None or namespace["status"]["phase"] == "Terminating"

    def upf_bound() -> bool:
        pods = [p for p in _pods(cluster) if p["metadata"]["labels"].get("app") == "upf"
                and not p["metadata"].get("deletionTimestamp")]  # fmt: skip
        return len(pods) == 1 and bool(pods[0]["spec"].get("nodeName"))

    wait_for("the Deployment's new pod bound by the scheduler", upf_bound, 60)
    (upf,) = [p for p in _pods(cluster) if p["metadata"]["labels"].get("app") == "upf"
              and not p["metadata"].get("deletionTimestamp")]  # fmt: skip
    assert not upf["spec"].get("schedulingGates")
    assert "affinity" not in upf["spec"]
    bare = cluster.get(f"/api/v1/namespaces/{NS}/pods/bare-smf")
    assert not bare["spec"].get("schedulingGates")
    assert f"pod {NS}/bare-smf" in done.stdout  # named for its owner to recreate
    assert "note:" in done.stdout

"""Leaving attestation, and evictions that do not stop the pod: real verifier process, real swtpm
nodes and agents, the real API server with NodeRestriction and the Node authorizer.

- The kubelet's own credentials (``system:node:<name>``, what root on the node holds) try to take
  the node out of attestation by removing the label the verifier selects nodes by; then the node
  is tampered with and its agent stopped. The node must still be judged: Untrusted, tainted, its
  NF pod evicted, then Unknown.
- Someone who can edit Node objects removes that label (NodeRestriction does not stop them): a
  node with a NodeAttestation stays attested.
- A tampered NF pod asking for a year of termination grace is evicted with the verifier's short
  grace, not its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from attestation.core.names import NF_LABEL
from attestation.lab.poll import wait_for
from tests.support.controlplane import ClusterHandle
from tests.support.lab import FILES, Lab, lab_cluster
from tests.support.swtpm import LocalCa
from tests.support.verdicts import assert_user_sees, pod_view, seen, wait_state

NS = "adv-selection"
KUBELET, EDITED, PODS = "selk-1", "sele-1", "selp-1"
#: The integrity eviction's grace the verifier is configured with, and what the pods ask for.
GRACE = 7
A_YEAR = 31536000


@pytest.fixture(scope="module")
def lab(
    trustgate_installed: ClusterHandle, swtpm_ca: LocalCa, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Lab]:
    trustgate_installed.ensure_namespace(NS)
    workdir = tmp_path_factory.mktemp("adv-selection")
    nodes = [KUBELET, EDITED, PODS]
    args = ("--eviction-deadline", "5", "--eviction-grace", str(GRACE))
    with lab_cluster(
        trustgate_installed, swtpm_ca, workdir, nodes, trusted=nodes, verifier_args=args
    ) as lab:
        yield lab


def _slow_nf_pod(lab: Lab, name: str, nf: str, node: str) -> str:
    """An NF pod that asks for a year to terminate, running its network function's files."""
    pod = lab.cluster.request("POST", f"/api/v1/namespaces/{NS}/pods", {
        "metadata": {"name": name, "labels": {NF_LABEL: nf}},
        "spec": {
            "nodeName": node, "terminationGracePeriodSeconds": A_YEAR,
            "containers": [{"name": nf, "image": f"open5gs/{nf}"}],
        },
    })  # fmt: skip
    uid = str(pod["metadata"]["uid"])
    for path, content in FILES[nf].items():
        lab.nodes[node].run_in_pod(uid, path, content)
    wait_for(f"{name} trusted", lambda: pod_view(lab, NS, name)[0] == "trusted")
    return uid


def _evicted(lab: Lab, name: str) -> dict[str, Any] | None:
    pod = lab.pod(NS, name)
    return pod if pod is not None and pod["metadata"].get("deletionTimestamp") else None


def _selector_label(lab: Lab) -> tuple[str, str]:
    return lab.system.node_label


def test_integrity_eviction_uses_the_verifiers_grace_not_the_pods(lab: Lab) -> None:
    uid = _slow_nf_pod(lab, "upf-slow", "upf", PODS)
    lab.nodes[PODS].run_in_pod(uid, "/usr/bin/nc", b"netcat")  # the attack
    pod = wait_for("upf-slow evicted", lambda: _evicted(lab, "upf-slow"), timeout=20)
    # Without a kubelet the pod stays Terminating: the grace the API server gave it shows.
    assert pod["metadata"]["deletionGracePeriodSeconds"] == GRACE, pod["metadata"]
    assert pod["spec"]["terminationGracePeriodSeconds"] == A_YEAR
    assert seen(lab, PODS).state == "Trusted"  # a pod-level finding: the node is fine


def test_kubelet_cannot_take_its_node_out_of_attestation(lab: Lab) -> None:
    _slow_nf_pod(lab, "amf-k", "amf", KUBELET)
    key, value = _selector_label(lab)
    kubeconfig = lab.system.kubelet_kubeconfig(KUBELET)
    removed = lab.cluster.kubectl(
        "label", "node", KUBELET, f"{key}-", kubeconfig=kubeconfig, check=False
    )
    # Whatever the kubelet managed, the node is still judged: root tampers with the host ...
    lab.nodes[KUBELET].writer.measure("/usr/bin/rootkit", b"evil")
    assert_user_sees(lab, KUBELET, "Untrusted", "ima.policy.unknown_file")
    wait_for("amf-k evicted", lambda: _evicted(lab, "amf-k"), timeout=20)
    # ... and stops the agent: no evidence, Unknown, still tainted.
    lab.nodes[KUBELET].stop_agent()
    shown = wait_state(lab, KUBELET, "Unknown", "agent.unreachable", timeout=20)
    assert shown.tainted
    assert shown.attested_label == "false"
    # NodeRestriction refused the kubelet outright: the selector label is one it cannot change.
    assert removed.returncode != 0, removed.stdout
    assert "forbidden" in removed.stderr.lower(), removed.stderr
    labels = lab.cluster.request("GET", f"/api/v1/nodes/{KUBELET}")["metadata"]["labels"]
    assert labels.get(key) == value


def test_node_editor_removing_the_label_leaves_the_node_attested(lab: Lab) -> None:
    """No NF pod on the node: its NodeAttestation alone keeps it attested."""
    key, _ = _selector_label(lab)
    lab.cluster.kubectl("label", "node", EDITED, f"{key}-")  # an admin's credentials
    lab.nodes[EDITED].stop_agent()
    shown = wait_state(lab, EDITED, "Unknown", "agent.unreachable", timeout=20)
    assert shown.tainted
    assert shown.attested_label == "false"
    assert not shown.trusted

"""The verifier against the real control plane, real swtpm nodes and real agents: per-pod
remediation, stale evidence, reboots, signed verdicts that RBAC protects, and the audit trail."""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from attestation.core.audit import verify_chain
from attestation.core.names import (
    ATTESTED_LABEL,
    NF_LABEL,
    REASON_ANNOTATION,
    TRUST_STATE_ANNOTATION,
    UNTRUSTED_TAINT,
)
from attestation.core.nodeattestation import node_trust
from attestation.lab.cluster import service_account_kubeconfig
from attestation.lab.node import trustgate_exe
from tests.support.controlplane import ClusterHandle
from tests.support.lab import FILES, Lab, lab_cluster, wait_for
from tests.support.swtpm import LocalCa
from tests.support.verdicts import audit_records

NS = "5g-core-verifier"


@pytest.fixture(scope="module")
def lab(
    trustgate_installed: ClusterHandle, swtpm_ca: LocalCa, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Lab]:
    trustgate_installed.ensure_namespace(NS)
    workdir = tmp_path_factory.mktemp("verifier-lab")
    nodes = ["vworker-1", "vworker-2"]
    with lab_cluster(trustgate_installed, swtpm_ca, workdir, nodes, trusted=nodes) as lab:
        yield lab


def _node(lab: Lab, name: str) -> dict:  # type: ignore[type-arg]
    return lab.cluster.request("GET", f"/api/v1/nodes/{name}")  # type: ignore[no-any-return]


def test_nodes_attest_label_and_sign(lab: Lab) -> None:
    keys = lab.system.verifier_keys
    for name in lab.nodes:
        node = _node(lab, name)
        assert node["metadata"]["labels"][ATTESTED_LABEL] == "true"
        assert not any(t["key"] == UNTRUSTED_TAINT for t in node["spec"].get("taints") or [])
        trust = node_trust(lab.nodeattestation(name) or {}, keys)
        assert trust.defect is None
        assert trust.state == "Trusted"
    out = lab.cluster.kubectl("get", "nodeattestations").stdout
    assert "vworker-1" in out
    assert "Trusted" in out


def test_unknown_binary_in_upf_pod_evicts_only_that_pod(lab: Lab) -> None:
    node = lab.nodes["vworker-1"]
    upf = lab.create_nf_pod(NS, "upf-0", "upf", "vworker-1")
    smf = lab.create_nf_pod(NS, "smf-0", "smf", "vworker-1")
    for path, content in FILES["upf"].items():
        node.run_in_pod(upf, path, content)
    node.run_in_pod(smf, "/usr/bin/smfd", FILES["smf"]["/usr/bin/smfd"])
    wait_for("pods annotated trusted", lambda: all(
        (lab.pod(NS, n) or {}).get("metadata", {}).get("annotations", {})
        .get(TRUST_STATE_ANNOTATION) == "trusted" for n in ("upf-0", "smf-0")))  # fmt: skip

    node.run_in_pod(upf, "/usr/bin/nc", b"netcat")  # the attack

    evicted = wait_for(
        "upf-0 evicted",
        lambda: (
            (lab.pod(NS, "upf-0") or {"gone": True})
            .get("metadata", {"deletionTimestamp": "gone"})
            .get("deletionTimestamp")
        ),
    )
    assert evicted
    smf_pod = lab.pod(NS, "smf-0")
    assert smf_pod is not None
    assert not smf_pod["metadata"].get("deletionTimestamp")
    assert smf_pod["metadata"]["annotations"][TRUST_STATE_ANNOTATION] == "trusted"
    assert lab.state_of("vworker-1") == "Trusted"  # the node itself is fine
    upf_pod = lab.pod(NS, "upf-0")
    if upf_pod is not None:
        ann = upf_pod["metadata"]["annotations"]
        assert ann[TRUST_STATE_ANNOTATION] == "untrusted"
        assert "ima.policy.unknown_file" in ann[REASON_ANNOTATION]
        assert "/usr/bin/nc" in ann[REASON_ANNOTATION]
    reasons = {e["reason"] for e in lab.events_for(NS, "upf-0")}
    assert {"AttestationUntrusted", "TrustgateEvicted"} <= reasons
    records = audit_records(lab)
    assert any(r.get("action") == "remediate" and r.get("pod") == "upf-0"
               and r.get("outcome") == "evicted" for r in records)  # fmt: skip
    assert not any(r.get("pod") == "smf-0" for r in records if r["kind"] == "action")


def test_status_shows_verdicts_and_why_each_nf_pod_is_where_it_is(lab: Lab) -> None:
    """After the eviction above: `trustgate status` as an operator runs it (admin kubeconfig),
    checking verdicts with the verifier's key and this cluster's identity."""
    lab.cluster.request("POST", f"/api/v1/namespaces/{NS}/pods", {
        "metadata": {"name": "amf-waiting", "labels": {NF_LABEL: "amf"}},
        "spec": {"schedulerName": "nobody", "containers": [{"name": "amf", "image": "amf"}]},
    })  # fmt: skip
    result = subprocess.run(
        [trustgate_exe(), "status", "--kubeconfig", str(lab.cluster.plane.kubeconfig),
         "--verifier-key", str(lab.system.verifier_public_key), "-o", "json"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    nodes = {n["node"]: n for n in shown["nodes"]}
    assert nodes["vworker-1"]["state"] == "Trusted"
    assert nodes["vworker-2"]["state"] == "Trusted"
    pods = {(p["namespace"], p["name"]): p for p in shown["pods"]}
    assert pods[NS, "smf-0"]["node"] == "vworker-1"
    assert pods[NS, "smf-0"]["why"] == "trusted"
    assert pods[NS, "amf-waiting"]["state"] == "Waiting"
    upf = pods[NS, "upf-0"]  # terminating (no kubelet to finish it) or gone, with its Event
    assert upf["state"] in {"Terminating", "Evicted"}
    assert "/usr/bin/nc" in upf["why"]
    text = subprocess.run(
        [trustgate_exe(), "status", "--kubeconfig", str(lab.cluster.plane.kubeconfig),
         "--verifier-key", str(lab.system.verifier_public_key)],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    assert text.splitlines()[0].split() == ["NODE", "STATE", "AGE", "REASON"]
    assert any(line.split()[:2] == ["vworker-1", "Trusted"] for line in text.splitlines())


def test_agent_down_makes_node_unknown_after_max_age_and_recovers(lab: Lab) -> None:
    node = lab.nodes["vworker-2"]
    node.stop_agent()
    wait_for("vworker-2 Unknown", lambda: lab.state_of("vworker-2") == "Unknown", timeout=20)
    # The status is written first, the label and taint right after it: wait for both.
    n = wait_for("vworker-2 labelled false", lambda: _labelled(lab, "vworker-2", "false"), 5)
    assert any(t["key"] == UNTRUSTED_TAINT for t in n["spec"]["taints"])
    assert lab.state_of("vworker-1") == "Trusted"
    node.start_agent()
    wait_for("vworker-2 Trusted again", lambda: lab.state_of("vworker-2") == "Trusted", timeout=20)
    wait_for("vworker-2 labelled true", lambda: _labelled(lab, "vworker-2", "true"), 5)


def _labelled(lab: Lab, node: str, value: str) -> dict[str, Any] | None:
    """The node once its attested label reads ``value``."""
    obj = _node(lab, node)
    return obj if obj["metadata"]["labels"].get(ATTESTED_LABEL) == value else None


def test_nodeattestation_written_by_another_identity_is_refused(lab: Lab, tmp_path: Path) -> None:
    kc = service_account_kubeconfig(lab.cluster.plane, "trustgate-webhook", tmp_path)
    patch = json.dumps({"status": {"state": "Trusted"}})
    result = lab.cluster.kubectl(
        "patch", "nodeattestation", "vworker-1", "--subresource=status", "--type=merge",
        "-p", patch, kubeconfig=kc, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "forbidden" in result.stderr.lower()


def test_forged_signature_is_not_trusted(lab: Lab) -> None:
    obj = lab.nodeattestation("vworker-1") or {}
    forged = dict(obj["status"])
    forged["reason"] = "hand-edited"
    keys = lab.system.verifier_keys
    trust = node_trust({"metadata": obj["metadata"], "status": forged}, keys)
    assert trust.defect is not None
    assert not trust.trusted_at(trust.verified_at)  # type: ignore[arg-type]
    sig = dict(forged["signature"])
    sig["value"] = base64.b64encode(b"\x00" * 64).decode()
    forged["signature"] = sig
    assert node_trust({"metadata": obj["metadata"], "status": forged}, keys).defect is not None


def test_audit_chain_verifies_with_the_cli(lab: Lab) -> None:
    result = subprocess.run(
        [str(Path(lab.verifier.argv[0])), "audit", "verify", str(lab.audit_log)],  # type: ignore[union-attr]
        capture_output=True, text=True, check=False, timeout=30,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["ok"] is True
    assert verify_chain(lab.audit_log.read_bytes()).records > 0

"""Staged rollout on the real control plane: the namespace label ``trustgate.io/enforcement``
(``enforce`` | ``warn`` | ``audit``) read by the real webhook and the real verifier, with real
swtpm nodes and agents.

- audit: a tampered NF pod is neither gated, pinned nor evicted, its node is not tainted, and the
  finding is in an Event and in the namespace's PolicyReport (wgpolicyk8s.io/v1alpha2);
- warn: the API server hands the webhook's warning to the client (kubectl prints it);
- enforce (the default, and what an unreadable label means): gated and pinned as before;
- an agent killed does not get running NF pods evicted unless ``--evict-on-unknown``;
- only the enforcement admins may lower a namespace's mode (manifests/admission-policies.yaml).
"""

from __future__ import annotations

import contextlib
import json
import time
import urllib.error
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from attestation.core.names import (
    ATTESTED_LABEL,
    ENFORCEMENT_LABEL,
    GATED_ANNOTATION,
    NF_LABEL,
    PROTECTED_NAMESPACE_LABEL,
    SCHEDULING_GATE,
    TRUST_STATE_ANNOTATION,
    UNTRUSTED_TAINT,
)
from tests.support.controlplane import ClusterHandle
from tests.support.lab import FILES, Lab, lab_cluster, wait_for
from tests.support.swtpm import LocalCa

NODES = ("rworker-1", "rworker-2")
REPORTS = "/apis/wgpolicyk8s.io/v1alpha2/namespaces/{ns}/policyreports"


@pytest.fixture(scope="module")
def lab(
    trustgate_installed: ClusterHandle, swtpm_ca: LocalCa, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Lab]:
    workdir = tmp_path_factory.mktemp("rollout-lab")
    args = ("--eviction-deadline", "5", "--unknown-grace", "1")
    with lab_cluster(
        trustgate_installed, swtpm_ca, workdir, NODES, trusted=NODES, webhook=True,
        verifier_args=args,
    ) as lab:  # fmt: skip
        yield lab


def _namespace(lab: Lab, prefix: str, mode: str | None) -> str:
    ns = lab.cluster.unique(prefix)
    labels = {PROTECTED_NAMESPACE_LABEL: "true"}
    if mode is not None:
        labels[ENFORCEMENT_LABEL] = mode
    lab.cluster.ensure_namespace(ns, labels)
    time.sleep(0.5)  # the webhook's and the verifier's namespace watches (a miss is enforce)
    return ns


def _unpinned_pod(lab: Lab, ns: str, name: str, nf: str) -> dict[str, Any]:
    """An NF pod created through admission without a node: what the mutation made of it."""
    return lab.cluster.request("POST", f"/api/v1/namespaces/{ns}/pods", {  # type: ignore[no-any-return]
        "metadata": {"name": name, "labels": {"app": nf}},
        "spec": {"schedulerName": "nobody", "containers": [{"name": nf, "image": nf}]},
    })  # fmt: skip


def _gated(pod: dict[str, Any]) -> bool:
    gates = (pod.get("spec") or {}).get("schedulingGates") or []
    return any(g["name"] == SCHEDULING_GATE for g in gates)


def _pinned(pod: dict[str, Any]) -> bool:
    node_affinity = (pod["spec"].get("affinity") or {}).get("nodeAffinity") or {}
    return "requiredDuringSchedulingIgnoredDuringExecution" in node_affinity


def _report(lab: Lab, ns: str) -> dict[str, Any] | None:
    items = lab.cluster.request("GET", REPORTS.format(ns=ns)).get("items") or []
    return items[0] if items else None


def _failed_result(lab: Lab, ns: str, pod: str) -> dict[str, Any] | None:
    report = _report(lab, ns)
    for result in (report or {}).get("results") or []:
        if result["resources"][0]["name"] == pod and result["result"] == "fail":
            return result  # type: ignore[no-any-return]
    return None


def _node_tainted(lab: Lab, node: str) -> bool:
    obj = lab.cluster.request("GET", f"/api/v1/nodes/{node}")
    return any(t["key"] == UNTRUSTED_TAINT for t in obj["spec"].get("taints") or [])


def test_audit_namespace_reports_a_tampered_pod_and_changes_nothing(lab: Lab) -> None:
    ns = _namespace(lab, "rollout-audit", "audit")
    created = _unpinned_pod(lab, ns, "amf-free", "amf")
    assert not _gated(created), created["spec"].get("schedulingGates")
    assert not _pinned(created), created["spec"].get("affinity")

    node = lab.nodes["rworker-1"]
    upf = lab.create_nf_pod(ns, "upf-a", "upf", "rworker-1")
    for path, content in FILES["upf"].items():
        node.run_in_pod(upf, path, content)
    node.run_in_pod(upf, "/usr/bin/nc", b"netcat")  # the attack

    result = wait_for("a failing PolicyReport result", lambda: _failed_result(lab, ns, "upf-a"))
    assert "ima.policy.unknown_file" in result["properties"]["failures"]
    assert result["properties"]["node"] == "rworker-1"
    assert result["properties"]["enforcement"] == "audit"
    assert result["policy"] == "trustgate-runtime-integrity"
    wait_for("the would-evict Event", lambda: any(
        e["reason"] == "TrustgateWouldEvict" for e in lab.events_for(ns, "upf-a")))  # fmt: skip
    time.sleep(2.0)  # rounds go on (interval 0.5 s): still nothing may happen to the pod
    pod = lab.pod(ns, "upf-a")
    assert pod is not None
    assert not pod["metadata"].get("deletionTimestamp")
    assert pod["metadata"]["annotations"][TRUST_STATE_ANNOTATION] == "untrusted"
    reasons = {e["reason"] for e in lab.events_for(ns, "upf-a")}
    assert "AttestationUntrusted" in reasons
    assert "TrustgateEvicted" not in reasons
    assert lab.state_of("rworker-1") == "Trusted"
    assert not _node_tainted(lab, "rworker-1")
    shown = lab.cluster.kubectl("get", "policyreports", "-n", ns).stdout
    assert "trustgate" in shown


def test_warn_namespace_returns_the_refusal_as_a_warning(lab: Lab) -> None:
    ns = _namespace(lab, "rollout-warn", "warn")
    pod = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "smf-nowhere", "namespace": ns, "labels": {"app": "smf"}},
        "spec": {"nodeName": "rworker-none", "containers": [{"name": "smf", "image": "smf"}]},
    }  # fmt: skip
    result = lab.cluster.kubectl("create", "-f", "-", input=json.dumps(pod), check=False)
    assert result.returncode == 0, result.stderr
    assert "Warning:" in result.stderr
    assert "rworker-none has no NodeAttestation" in result.stderr
    created = _unpinned_pod(lab, ns, "amf-warned", "amf")
    assert not _gated(created)
    assert not _pinned(created)


@pytest.mark.parametrize("mode", ["enforce", "enforcing", None])
def test_enforce_namespace_gates_and_pins_as_before(lab: Lab, mode: str | None) -> None:
    """``enforce``, an unreadable value and no label at all (the default): unchanged."""
    ns = _namespace(lab, "rollout-enforce", mode)
    created = _unpinned_pod(lab, ns, "amf-gated", "amf")
    assert _gated(created)
    assert _pinned(created)
    pod = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "smf-nowhere", "namespace": ns, "labels": {"app": "smf"}},
        "spec": {"nodeName": "rworker-none", "containers": [{"name": "smf", "image": "smf"}]},
    }  # fmt: skip
    result = lab.cluster.kubectl("create", "-f", "-", input=json.dumps(pod), check=False)
    assert result.returncode != 0
    # (the warn test's pod made the verifier attest rworker-none: Unknown, no agent)
    assert "denied the request: node rworker-none " in result.stderr


def test_agent_killed_does_not_evict_running_nf_pods_by_default(lab: Lab) -> None:
    """--unknown-grace 1 s, no --evict-on-unknown: the node goes Unknown (label false,
    tainted), its running NF pod stays."""
    ns = _namespace(lab, "rollout-outage", None)
    node = lab.nodes["rworker-2"]
    smf = lab.create_nf_pod(ns, "smf-b", "smf", "rworker-2")
    node.run_in_pod(smf, "/usr/bin/smfd", FILES["smf"]["/usr/bin/smfd"])
    wait_for("smf-b trusted", lambda: ((lab.pod(ns, "smf-b") or {}).get("metadata", {})
             .get("annotations", {}).get(TRUST_STATE_ANNOTATION) == "trusted"))  # fmt: skip
    node.stop_agent()
    try:
        wait_for("rworker-2 Unknown", lambda: lab.state_of("rworker-2") == "Unknown", timeout=20)
        wait_for("rworker-2 tainted", lambda: _node_tainted(lab, "rworker-2"), 5)
        time.sleep(4.0)  # 4x the grace: evictions, if any, were asked for by now
        pod = lab.pod(ns, "smf-b")
        assert pod is not None
        assert not pod["metadata"].get("deletionTimestamp")
        obj = lab.cluster.request("GET", "/api/v1/nodes/rworker-2")
        assert obj["metadata"]["labels"][ATTESTED_LABEL] == "false"
        reasons = {e["reason"] for e in lab.events_for(ns, "smf-b")}
        assert "TrustgateEvicted" not in reasons
    finally:
        node.start_agent()
    wait_for("rworker-2 Trusted again", lambda: lab.state_of("rworker-2") == "Trusted", timeout=30)


def _namespace_editor(lab: Lab, tmp_path: Path) -> Path:
    """A kubeconfig of a ServiceAccount that may edit Namespaces (as a tenant admin or a GitOps
    controller may) but is in neither system:masters nor trustgate:enforcement-admins."""
    rbac = "/apis/rbac.authorization.k8s.io/v1"
    with contextlib.suppress(urllib.error.HTTPError):  # the module's second run
        lab.cluster.request("POST", f"{rbac}/clusterroles", {
            "metadata": {"name": "rollout-namespace-editor"},
            "rules": [{"apiGroups": [""], "resources": ["namespaces"],
                       "verbs": ["get", "create", "update", "patch"]}],
        })  # fmt: skip
        lab.cluster.request("POST", f"{rbac}/clusterrolebindings", {
            "metadata": {"name": "rollout-namespace-editor"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": "rollout-namespace-editor"},
            "subjects": [{"kind": "ServiceAccount", "name": "namespace-editor",
                          "namespace": "default"}],
        })  # fmt: skip
    token = lab.cluster.token_for("default", "namespace-editor")
    return lab.cluster.plane.kubeconfig_for_token(token, tmp_path / "editor.kubeconfig")


def test_only_enforcement_admins_may_lower_a_namespaces_enforcement(
    lab: Lab, tmp_path: Path
) -> None:
    """manifests/admission-policies.yaml #6: lowering the mode, or removing protected=true, is
    refused to a namespace editor; raising is not; the cluster admin (system:masters) may."""
    editor = _namespace_editor(lab, tmp_path)
    ns = _namespace(lab, "rollout-guarded", "enforce")

    def label(*args: str, kubeconfig: Path | None = editor) -> Any:
        argv = ("label", "namespace", ns, "--overwrite", *args)
        return lab.cluster.kubectl(*argv, kubeconfig=kubeconfig, check=False)

    for change in (f"{ENFORCEMENT_LABEL}=audit", f"{ENFORCEMENT_LABEL}=warn",
                   f"{PROTECTED_NAMESPACE_LABEL}-"):  # fmt: skip
        refused = label(change)
        assert refused.returncode != 0, change
        assert "reserved to the group trustgate:enforcement-admins" in refused.stderr
    assert label(f"{ENFORCEMENT_LABEL}=audit", kubeconfig=None).returncode == 0  # the admin
    assert label(f"{ENFORCEMENT_LABEL}=warn").returncode == 0  # raising: audit -> warn
    assert label(f"{ENFORCEMENT_LABEL}-").returncode == 0  # no label: enforce
    created = lab.cluster.kubectl(
        "create", "namespace", lab.cluster.unique("rollout-lowered"), "--dry-run=server",
        "-o", "name", kubeconfig=editor, check=False,
    )  # fmt: skip
    assert created.returncode == 0  # an unlabelled namespace is enforce (or not protected)
    body = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": lab.cluster.unique("rollout-lowered"),
            "labels": {ENFORCEMENT_LABEL: "audit"},
        },
    }
    lowered = lab.cluster.kubectl(
        "create",
        "--dry-run=server",
        "-f",
        "-",
        input=json.dumps(body),
        kubeconfig=editor,
        check=False,
    )
    assert lowered.returncode != 0
    assert "reserved to the group" in lowered.stderr


def test_a_namespace_switched_to_audit_has_its_gates_lifted(lab: Lab) -> None:
    """A pod gated while its namespace enforced (here: held for want of a loaded policy, which
    no lab policy covers for ``nrf``) is ungated once the namespace is in audit mode."""
    ns = _namespace(lab, "rollout-ungate", "enforce")
    lab.cluster.request("POST", f"/api/v1/namespaces/{ns}/pods", {
        "metadata": {"name": "nrf-held", "labels": {NF_LABEL: "nrf"}},
        "spec": {"schedulerName": "nobody", "schedulingGates": [{"name": SCHEDULING_GATE}],
                 "containers": [{"name": "nrf", "image": "nrf"}]},
    })  # fmt: skip
    wait_for("nrf-held said to wait for a policy", lambda: GATED_ANNOTATION in (
        (lab.pod(ns, "nrf-held") or {}).get("metadata", {}).get("annotations") or {}))  # fmt: skip
    assert _gated(lab.pod(ns, "nrf-held") or {})
    lab.cluster.kubectl("label", "namespace", ns, "--overwrite", f"{ENFORCEMENT_LABEL}=audit")
    wait_for("nrf-held ungated", lambda: not _gated(lab.pod(ns, "nrf-held") or {}), 20)


@pytest.fixture(scope="module")
def audit_cluster(
    trustgate_installed: ClusterHandle, swtpm_ca: LocalCa, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Lab]:
    """A second lab whose verifier runs with --enforcement-default audit (a cluster trying
    trustgate out)."""
    workdir = tmp_path_factory.mktemp("rollout-audit-default")
    args = ("--enforcement-default", "audit")
    with lab_cluster(
        trustgate_installed, swtpm_ca, workdir, ["raudit-1"], trusted=["raudit-1"],
        verifier_args=args,
    ) as lab:  # fmt: skip
        yield lab


def test_an_audit_cluster_labels_but_never_taints_an_untrusted_node(audit_cluster: Lab) -> None:
    """The NoSchedule taint stops every pod, so only an enforce default sets it; the label
    (read by enforce namespaces' pinned pods) still follows the verdict."""
    lab = audit_cluster
    lab.nodes["raudit-1"].stop_agent()
    try:
        wait_for("raudit-1 Unknown", lambda: lab.state_of("raudit-1") == "Unknown", timeout=20)
        node = wait_for("raudit-1 labelled false", lambda: _labelled(lab, "raudit-1", "false"), 5)
        assert not any(t["key"] == UNTRUSTED_TAINT for t in node["spec"].get("taints") or [])
    finally:
        lab.nodes["raudit-1"].start_agent()
    wait_for("raudit-1 Trusted again", lambda: lab.state_of("raudit-1") == "Trusted", timeout=30)


def _labelled(lab: Lab, node: str, value: str) -> dict[str, Any] | None:
    obj: dict[str, Any] = lab.cluster.request("GET", f"/api/v1/nodes/{node}")
    return obj if obj["metadata"]["labels"].get(ATTESTED_LABEL) == value else None

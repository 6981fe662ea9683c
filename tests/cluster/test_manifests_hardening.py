"""The hardening the manifests ship (docs/hardening.md), as the kustomize base renders it and as
the API server reads it: the verifier and the webhook only on the system pool, and every
ValidatingAdmissionPolicy bound, denying, keyed on a trustgate ServiceAccount (or, for the
enforcement label, on everyone but the enforcement admins) and type-checked clean. What they
refuse: tests/adversarial/test_least_privilege.py, test_placement.py and
tests/cluster/test_rollout.py."""

from __future__ import annotations

from typing import Any

import yaml

from attestation.core.names import CORE_NODE_LABEL, NODE_RESTRICTION_PREFIX, SYSTEM_NODE_LABEL
from attestation.lab.cluster import MANIFESTS
from attestation.lab.poll import wait_for
from tests.support.controlplane import ClusterHandle


def _render(cluster: ClusterHandle) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(cluster.kubectl("kustomize", str(MANIFESTS)).stdout) if d]


def _find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (match,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return match


def test_verifier_and_webhook_run_only_on_the_system_pool(control_plane: ClusterHandle) -> None:
    """Required node affinity on a label no kubelet can set on itself, and the toleration of the
    pool's taint: never scheduled beside NF workloads by chance (docs/hardening.md)."""
    base = _render(control_plane)
    assert SYSTEM_NODE_LABEL.startswith(NODE_RESTRICTION_PREFIX)
    for name in ("trustgate-verifier", "trustgate-webhook"):
        pod = _find(base, "Deployment", name)["spec"]["template"]["spec"]
        required = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        terms = required["nodeSelectorTerms"]
        # Every term (they are ORed) must demand the label, or one term would escape the pool.
        assert terms
        for term in terms:
            assert {"key": SYSTEM_NODE_LABEL, "operator": "In", "values": ["true"]} in term[
                "matchExpressions"
            ], name
        assert "nodeSelector" not in pod or CORE_NODE_LABEL not in pod["nodeSelector"]
        assert pod["tolerations"] == [
            {"key": SYSTEM_NODE_LABEL, "operator": "Equal", "value": "true", "effect": "NoSchedule"}
        ], name
    agent = _find(base, "DaemonSet", "trustgate-agent")["spec"]["template"]["spec"]
    assert SYSTEM_NODE_LABEL not in (agent.get("nodeSelector") or {})


def test_every_admission_policy_is_bound_and_denies(control_plane: ClusterHandle) -> None:
    base = _render(control_plane)
    policies = {d["metadata"]["name"] for d in base if d["kind"] == "ValidatingAdmissionPolicy"}
    bindings = [d for d in base if d["kind"] == "ValidatingAdmissionPolicyBinding"]
    assert len(policies) == 7
    assert {b["spec"]["policyName"] for b in bindings} == policies
    assert all(b["spec"]["validationActions"] == ["Deny"] for b in bindings)
    for policy in (d for d in base if d["kind"] == "ValidatingAdmissionPolicy"):
        assert policy["spec"]["failurePolicy"] == "Fail"
        (condition,) = policy["spec"]["matchConditions"]
        if policy["metadata"]["name"] == "trustgate-enforcement-label":
            assert "trustgate:enforcement-admins" in condition["expression"]
            continue
        assert "system:serviceaccount:trustgate-system:trustgate-" in condition["expression"]


def test_policies_type_check_clean(trustgate_installed: ClusterHandle) -> None:
    """The API server type-checks each expression against the OpenAPI schema of what it matches
    (status.typeChecking): a misspelt field would fail at runtime, refusing trustgate's work."""

    def ours() -> list[dict[str, Any]] | None:
        items = trustgate_installed.request(
            "GET", "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies"
        )["items"]
        found = [p for p in items if p["metadata"]["name"].startswith("trustgate-")]
        checked = all("typeChecking" in (p.get("status") or {}) for p in found)
        return found if checked else None

    policies = wait_for("policies type-checked", ours, timeout=30)
    assert len(policies) == 7
    for policy in policies:
        warnings = policy["status"]["typeChecking"].get("expressionWarnings")
        assert not warnings, (policy["metadata"]["name"], warnings)

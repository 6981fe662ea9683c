"""The names a user sees are an API (manifests, dashboards, runbooks and `kubectl` selectors use
them): each constant stays the literal the docs and the manifests spell. Everywhere else the code
and the tests use the constants; here the literal is the point."""

from __future__ import annotations

import pytest

from attestation.core import names

SHIPPED = {
    "GROUP": "trustgate.io",
    "VERSION": "v1alpha1",
    "PREFIX": "trustgate.io/",
    "NODEATTESTATION_KIND": "NodeAttestation",
    "NODEATTESTATION_PLURAL": "nodeattestations",
    "NODEATTESTATION_API_VERSION": "trustgate.io/v1alpha1",
    "APPROVED_EK_FIELD": "approvedEkDigest",
    "AUDIT_HEAD_ANNOTATION": "trustgate.io/audit-head",
    "BUILD_INFO_METRIC": "trustgate_build_info",
    "SHARD_MEMBER_LABEL": "trustgate.io/verifier-shard",
    "PUSH_URL_ANNOTATION": "trustgate.io/push-url",
    "SHARD_VIEW_ANNOTATION": "trustgate.io/view",
    "RUNTIME_POLICY_KIND": "RuntimePolicy",
    "RUNTIME_POLICY_API_VERSION": "trustgate.io/v1alpha1",
    "RUNTIME_POLICY_PLURAL": "runtimepolicies",
    "POLICY_LOADED_CONDITION": "Loaded",
    "POLICY_INVALID_CONDITION": "Invalid",
    "GATED_ANNOTATION": "trustgate.io/gated",
    "NO_POLICY_EVENT_REASON": "TrustgateNoPolicy",
    "ATTESTED_LABEL": "trustgate.io/attested",
    "UNTRUSTED_TAINT": "trustgate.io/untrusted",
    "NF_LABEL": "trustgate.io/network-function",
    "PROTECTED_NAMESPACE_LABEL": "trustgate.io/protected",
    "ENFORCEMENT_LABEL": "trustgate.io/enforcement",
    "TRUST_STATE_ANNOTATION": "trustgate.io/trust-state",
    "LAST_VERIFIED_ANNOTATION": "trustgate.io/last-verified",
    "REASON_ANNOTATION": "trustgate.io/reason",
    "SCHEDULING_GATE": "trustgate.io/attestation",
    "AGENT_SELECTOR": "app.kubernetes.io/name=trustgate-agent",
    "NODE_RESTRICTION_PREFIX": "node-restriction.kubernetes.io/",
    "CORE_NODE_LABEL": "node-restriction.kubernetes.io/trustgate-5g-core",
    "SYSTEM_NODE_LABEL": "node-restriction.kubernetes.io/trustgate-system",
    "MIRROR_ANNOTATION": "kubernetes.io/config.mirror",
    "NODE_STATES": ("Trusted", "Untrusted", "Pending", "Unknown"),
    "POD_STATES": ("trusted", "untrusted", "pending", "unknown"),
}


@pytest.mark.parametrize(("name", "literal"), SHIPPED.items(), ids=list(SHIPPED))
def test_shipped_name_is_stable(name: str, literal: object) -> None:
    assert getattr(names, name) == literal


def test_every_constant_is_pinned() -> None:
    constants = {n for n in names.__all__ if n.isupper()}
    assert constants == set(SHIPPED), "a new name a user sees: pin its literal here"

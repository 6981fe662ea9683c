"""Every name a user sees, and the trust states, in one place.

These are an API: manifests, dashboards, runbooks and `kubectl` selectors depend on them, so once
shipped they do not change. The verifier, the webhook, the lab and the tests all import them from
here; nothing else spells them.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

__all__ = [
    "AGENT_SELECTOR",
    "APPROVED_EK_FIELD",
    "ATTESTED_LABEL",
    "AUDIT_HEAD_ANNOTATION",
    "BUILD_INFO_METRIC",
    "CORE_NODE_LABEL",
    "ENFORCEMENT_LABEL",
    "GATED_ANNOTATION",
    "GROUP",
    "LAST_VERIFIED_ANNOTATION",
    "MIRROR_ANNOTATION",
    "NF_LABEL",
    "NODEATTESTATION_API_VERSION",
    "NODEATTESTATION_KIND",
    "NODEATTESTATION_PLURAL",
    "NODE_RESTRICTION_PREFIX",
    "NODE_STATES",
    "NO_POLICY_EVENT_REASON",
    "POD_STATES",
    "POLICY_INVALID_CONDITION",
    "POLICY_LOADED_CONDITION",
    "PREFIX",
    "PROTECTED_NAMESPACE_LABEL",
    "PUSH_URL_ANNOTATION",
    "REASON_ANNOTATION",
    "RUNTIME_POLICY_API_VERSION",
    "RUNTIME_POLICY_KIND",
    "RUNTIME_POLICY_PLURAL",
    "SCHEDULING_GATE",
    "SHARD_MEMBER_LABEL",
    "SHARD_VIEW_ANNOTATION",
    "SYSTEM_NODE_LABEL",
    "TRUST_STATE_ANNOTATION",
    "UNTRUSTED_TAINT",
    "VERSION",
    "NodeState",
    "PodState",
]

#: The API group of trustgate's own resources, and the prefix of its labels and annotations.
GROUP: Final = "trustgate.io"
VERSION: Final = "v1alpha1"
PREFIX: Final = f"{GROUP}/"

#: ``nodeattestations.trustgate.io``: cluster-scoped, one per node, status signed by the verifier.
NODEATTESTATION_KIND: Final = "NodeAttestation"
NODEATTESTATION_PLURAL: Final = "nodeattestations"
NODEATTESTATION_API_VERSION: Final = f"{GROUP}/{VERSION}"
#: NodeAttestation ``spec`` field: the EK digest a cluster admin approved for the node (an EK
#: change or reuse stays refused until then; ``trustgate node approve``).
APPROVED_EK_FIELD: Final = "approvedEkDigest"

#: A runtime policy document (YAML/JSON): the files a network function may run.
RUNTIME_POLICY_KIND: Final = "RuntimePolicy"
RUNTIME_POLICY_API_VERSION: Final = f"{GROUP}/{VERSION}"
#: ``runtimepolicies.trustgate.io``: the same document as a live object in the verifier's
#: namespace (manifests/crds/runtimepolicies.yaml; docs/policies.md). Status conditions:
RUNTIME_POLICY_PLURAL: Final = "runtimepolicies"
#: ``Loaded``: the object's network function runs on a policy that includes this object.
POLICY_LOADED_CONDITION: Final = "Loaded"
#: ``Invalid``: the object itself is wrong (the reason names the field); the verifier keeps the
#: network function's last loaded policy.
POLICY_INVALID_CONDITION: Final = "Invalid"
#: Pod annotation (and Event reason ``TrustgateNoPolicy``) while an NF pod stays gated because
#: no runtime policy is loaded for its network function.
GATED_ANNOTATION: Final = f"{PREFIX}gated"
NO_POLICY_EVENT_REASON: Final = "TrustgateNoPolicy"

#: Node label: ``true`` while the node's signed verdict is Trusted, ``false`` otherwise.
ATTESTED_LABEL: Final = f"{PREFIX}attested"
#: Node taint (NoSchedule) while the node is not Trusted.
UNTRUSTED_TAINT: Final = f"{PREFIX}untrusted"
#: Pod label naming the pod's network function (``amf``, ``smf``, ``upf``, ...).
NF_LABEL: Final = f"{PREFIX}network-function"
#: The namespace label that puts a namespace's pods under the webhook (manifests'
#: namespaceSelector); only such namespaces' NF pods are listed in a node's status.
PROTECTED_NAMESPACE_LABEL: Final = f"{PREFIX}protected"
#: Namespace label choosing how trustgate acts on the namespace's NF pods: ``enforce`` (gate,
#: pin, deny, evict), ``warn`` (admission warnings, nothing blocked) or ``audit`` (reports only);
#: absent: the cluster default (``--enforcement-default``). See core.enforcement, docs/rollout.md.
ENFORCEMENT_LABEL: Final = f"{PREFIX}enforcement"
#: Pod annotations written by the verifier.
TRUST_STATE_ANNOTATION: Final = f"{PREFIX}trust-state"
LAST_VERIFIED_ANNOTATION: Final = f"{PREFIX}last-verified"
REASON_ANNOTATION: Final = f"{PREFIX}reason"
#: The scheduling gate the webhook puts on NF pods and the verifier lifts.
SCHEDULING_GATE: Final = f"{PREFIX}attestation"
#: Labels under this prefix are ones NodeRestriction forbids a kubelet to add, change or remove
#: on its own Node: root on a node cannot take its node out of a selection made with them.
NODE_RESTRICTION_PREFIX: Final = "node-restriction.kubernetes.io/"
#: Node label marking the 5G core nodes (``true``): the agent DaemonSet's nodeSelector and the
#: verifier's ``--node-selector`` in the manifests. Set by an administrator, never the kubelet.
CORE_NODE_LABEL: Final = f"{NODE_RESTRICTION_PREFIX}trustgate-5g-core"
#: Node label (``true``) and NoSchedule taint of the nodes an administrator set aside for the
#: verifier and the webhook (their Deployments' required node affinity and toleration): a kubelet
#: cannot put its own node into that pool, so root on a worker cannot draw the signing key to it.
SYSTEM_NODE_LABEL: Final = f"{NODE_RESTRICTION_PREFIX}trustgate-system"
#: The agent DaemonSet's pods (how the verifier finds each node's agent).
AGENT_SELECTOR: Final = "app.kubernetes.io/name=trustgate-agent"
#: Annotation on the Lease ``trustgate-audit-<identity>`` holding that verifier replica's newest
#: signed audit checkpoint (JSON): the head `trustgate audit verify --head cluster` compares.
AUDIT_HEAD_ANNOTATION: Final = f"{PREFIX}audit-head"
#: Label of the verifier replicas' membership Leases (``trustgate-verifier-<identity>``,
#: ``core.sharding``), and their annotations: where the replica takes forwarded pushes, and the
#: replica incarnations it has handed its nodes over to (its applied view).
SHARD_MEMBER_LABEL: Final = f"{PREFIX}verifier-shard"
PUSH_URL_ANNOTATION: Final = f"{PREFIX}push-url"
SHARD_VIEW_ANNOTATION: Final = f"{PREFIX}view"
#: Kubernetes' own: a mirror pod's annotation holding its static pod's uid (what its cgroup says).
MIRROR_ANNOTATION: Final = "kubernetes.io/config.mirror"

#: A node's trust state, as the NodeAttestation's ``status.state`` says it.
NodeState = Literal["Trusted", "Untrusted", "Pending", "Unknown"]
NODE_STATES: Final[tuple[NodeState, ...]] = get_args(NodeState)
#: A pod's trust state, as its ``trustgate.io/trust-state`` annotation says it.
PodState = Literal["trusted", "untrusted", "pending", "unknown"]
POD_STATES: Final[tuple[PodState, ...]] = get_args(PodState)

#: Every component's /metrics: ``trustgate_build_info{component,version,python} 1`` (a dashboard
#: joins on it to show which release each replica runs).
BUILD_INFO_METRIC: Final = "trustgate_build_info"

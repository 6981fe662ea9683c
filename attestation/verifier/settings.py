"""The verifier's settings: one frozen tree with named defaults, loaded once, passed down."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Literal

from attestation.core.enforcement import DEFAULT_ENFORCEMENT, Enforcement

__all__ = ["NonNfPods", "RemediationMode", "UntrustedNodeAction", "VerifierSettings"]

RemediationMode = Literal["evict-only", "evict-then-delete", "annotate-only"]
UntrustedNodeAction = Literal["evict", "none"]
NonNfPods = Literal["ignore", "host-policy"]


@dataclass(frozen=True, slots=True)
class VerifierSettings:
    #: Seconds between two pull rounds of one node (push notifications come in between).
    interval: float = 2.0
    #: How long a verdict stays valid: ``expiresAt = verifiedAt + max_age``. A node whose agent
    #: or verifier goes quiet becomes untrusted once it passes. Refreshed every ``max_age / 2``:
    #: the other half covers a replica's failover (``lease_duration``, then a round).
    max_age: float = 20.0
    #: A published status is rewritten at least this often (when nothing changed) so that
    #: ``expiresAt`` keeps moving; default max_age / 2.
    refresh: float | None = None
    #: The cluster every verdict is bound to; "" reads the kube-system Namespace's uid at start.
    cluster_id: str = ""
    #: Seconds for one agent call, and how many nodes are attested at once.
    agent_timeout: float = 3.0
    concurrency: int = 64
    #: Label selector of the nodes to attest (those that host 5G core pods and run the agent);
    #: empty: every node. Use labels under node-restriction.kubernetes.io/ (CORE_NODE_LABEL):
    #: a kubelet cannot change those on its own Node. A node that hosts NF pods, or has this
    #: verifier's NodeAttestation, is attested too, selected or not (core.nodeselection).
    node_selector: str = ""
    #: Explicit node -> agent URL map (tests, the demo, clusters without the DaemonSet).
    agents: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    #: Port of the agent DaemonSet (hostNetwork) when agents are discovered from its pods.
    agent_port: int = 9443
    #: The client certificate (and key) the verifier presents to agents, issued by the CA the
    #: agents trust (their ``--client-ca``): agents started with one serve nobody else.
    agent_client_cert: Path | None = None
    agent_client_key: Path | None = None
    #: Accepted pushes (signed by the node's push key) wake a node's round at most this often
    #: a second, ``push_burst`` at once; more are coalesced into one deferred wake.
    push_rate: float = 5.0
    push_burst: float = 5.0
    #: Namespace of trustgate itself (agent pods, the leader Lease, Events about itself).
    namespace: str = "trustgate-system"
    #: PEM bundle of the CAs that issue TPM EK certificates (vendors' CAs; swtpm's in tests).
    ek_ca_bundle: Path = Path("/etc/trustgate/ek-ca.pem")
    #: Ed25519 private key that signs NodeAttestation statuses.
    signing_key: Path = Path("/etc/trustgate/signing/key.pem")
    #: Directory of runtime policies (YAML/JSON, ours or Keylime's), one per network function.
    policies: Path = Path("/etc/trustgate/policies")
    #: The hash-chained audit trail; ``{identity}`` in it becomes this replica's identity (one
    #: file per replica on a shared volume: a file has one writer, docs/audit.md).
    audit_log: Path = Path("/var/lib/trustgate/audit.jsonl")
    #: A file rotates before it passes this size (``<file>.<first record>``, chained on).
    audit_max_bytes: int = 64 * 1024 * 1024
    #: Seconds between signed checkpoints of the trail's head (and their publication on the
    #: Lease ``trustgate-audit-<identity>``); records younger than this are covered by none.
    audit_checkpoint_interval: float = 10.0
    remediation: RemediationMode = "evict-then-delete"
    #: After this many seconds of PodDisruptionBudget refusals (HTTP 429), delete the pod.
    eviction_deadline: float = 30.0
    #: Termination grace (seconds) of every eviction the verifier makes, whatever the pod's own
    #: ``terminationGracePeriodSeconds``: a tampered pod asking for a year must not get it. An
    #: NF that drains sessions on SIGTERM gets this long to do so (docs/install.md).
    eviction_grace: int = 5
    untrusted_node_action: UntrustedNodeAction = "evict"
    #: A node without fresh evidence (agent down, hung, lying about its identity) is Unknown:
    #: tainted at once, and — only with ``evict_on_unknown`` — after this many seconds its
    #: protected pods are evicted like an Untrusted node's (with untrusted_node_action "evict"):
    #: root on the node could stop the agent and then tamper unseen.
    unknown_grace: float = 300.0
    # -- staged rollout (core.enforcement, docs/rollout.md) --
    #: Opt in to evicting an Unknown node's running NF pods after ``unknown_grace``. Off: an
    #: agent or verifier outage alone never evicts (the node is labelled false and tainted, so
    #: no new NF pod lands there); a real failed verdict (Untrusted) still does.
    evict_on_unknown: bool = False
    #: The enforcement mode of a namespace without the ``trustgate.io/enforcement`` label; it also
    #: decides whether untrusted nodes are tainted (only under ``enforce``).
    enforcement_default: Enforcement = DEFAULT_ENFORCEMENT
    #: Where agents push "the log grew" notifications, and Prometheus scrapes /metrics.
    listen_host: str = "0.0.0.0"  # noqa: S104 - in-cluster Service; NetworkPolicy narrows it
    listen_port: int = 8443
    #: Optional TLS for that endpoint. Notifications carry no evidence (only "attest me now"),
    #: so plain HTTP inside the cluster network is acceptable; set both to serve TLS.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: Sharding (``core.sharding``): the live replicas share the nodes, each holding the Lease
    #: ``<lease_name>-<identity>``; off for a single process attesting every node.
    sharding: bool = True
    lease_name: str = "trustgate-verifier"
    #: A replica whose Lease has not moved for this long (as its peers see it) is written off and
    #: its nodes taken over. With ``max_age >= 2 * (lease_duration + interval)`` a replica killed
    #: at any time is replaced before a verdict it wrote expires.
    lease_duration: float = 3.0
    #: Where the other replicas forward agents' pushes for this replica's nodes ("" none).
    advertise_url: str = ""
    identity: str = "verifier"
    #: What the measurements of a pod that is not a network function mean. ``ignore``: counted,
    #: never judged (such pods never affect the node or its NF pods; root on the node can hide
    #: in such a pod's cgroup). ``host-policy``: judged against the host policy like the node's
    #: own (for nodes dedicated to NFs: every other pod's files must be in the host policy).
    #: Either way, a pod uid that no pod bound to the node has is judged as the host.
    non_nf_pods: NonNfPods = "ignore"
    #: Column size of the agents' binary IMA log (20: the classic SHA-1 file).
    log_column_size: int = 20
    #: Use the C extension when it was built; False forces the pure-Python reference.
    native: bool = True

    @property
    def refresh_every(self) -> float:
        return self.refresh if self.refresh is not None else self.max_age / 2

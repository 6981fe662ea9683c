"""The verifier's Prometheus metrics, on a registry of its own (no process globals)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from attestation.adapters.processmetrics import register_process_metrics

__all__ = ["VerifierMetrics"]


@dataclass
class VerifierMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        register_process_metrics(r, "verifier")
        self.attestations = Counter(
            "trustgate_attestations", "Attestation rounds by result", ["result"], registry=r
        )
        self.duration = Histogram(
            "trustgate_verification_seconds",
            "Time to verify one round's evidence (quote, replay, policy)",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5),
            registry=r,
        )
        self.round_seconds = Histogram(
            "trustgate_round_seconds",
            "Time of one whole round: request evidence, verify, publish",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        )
        self.evidence_age = Gauge(
            "trustgate_evidence_age_seconds",
            "Seconds since the node's last verified evidence",
            ["node"],
            registry=r,
        )
        self.evictions = Counter(
            "trustgate_evictions", "Pod evictions by outcome", ["outcome"], registry=r
        )
        self.pushes = Counter(
            "trustgate_push_notifications", "Log-growth notifications from agents", registry=r
        )
        self.push_refusals = Counter(
            "trustgate_push_refusals",
            "Push notifications refused, by reason (push.bad_mac, push.replayed, ...)",
            ["reason"],
            registry=r,
        )
        self.pushes_forwarded = Counter(
            "trustgate_push_forwards",
            "Pushes forwarded to the replica that attests their node, by its answer (HTTP status)",
            ["status"],
            registry=r,
        )
        self.shard_nodes = Gauge(
            "trustgate_shard_nodes", "Nodes this replica attests (its shard)", registry=r
        )
        self.policy_warnings = Gauge(
            "trustgate_policy_warnings",
            "Warnings about a loaded runtime policy (an exclude covering a writable place)",
            ["policy"],
            registry=r,
        )

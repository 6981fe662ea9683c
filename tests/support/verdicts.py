"""What a user sees of a verdict, read back from the real API server and the audit file, so the
adversarial tests can say, for each attack: it was detected (state, reason, failure id), only its
target was affected, and this is what `kubectl` and the audit trail show."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from attestation.core.clock import parse_time
from attestation.core.names import (
    ATTESTED_LABEL,
    REASON_ANNOTATION,
    TRUST_STATE_ANNOTATION,
    UNTRUSTED_TAINT,
)
from attestation.core.nodeattestation import NodeTrust, node_trust
from attestation.lab.poll import hold_for, wait_for
from attestation.verifier.events import NODE_EVENT_NAMESPACE
from tests.support.lab import Lab

__all__ = [
    "Seen",
    "assert_trusted_and_fresh",
    "assert_user_sees",
    "audit_records",
    "node_events",
    "pod_view",
    "seen",
    "verdict_records",
    "wait_state",
    "watch_freshness",
]


@dataclass(frozen=True)
class Seen:
    """One node as the cluster shows it: its NodeAttestation's status as `kubectl` prints it
    (signed or not), the same status as the webhook reads it (``trust``: signature checked
    against the lab's verifier key; None without a NodeAttestation), its label and its taint."""

    state: str
    reason: str
    failure_ids: tuple[str, ...]
    trust: NodeTrust | None
    attested_label: str | None
    tainted: bool

    @property
    def verified_at(self) -> datetime | None:
        return self.trust.verified_at if self.trust else None

    @property
    def expires_at(self) -> datetime | None:
        return self.trust.expires_at if self.trust else None

    @property
    def trusted(self) -> bool:
        """What the webhook decides now: ``NodeTrust.trusted_at``, its one predicate."""
        return self.trust is not None and self.trust.trusted_at(datetime.now(UTC))


def seen(lab: Lab, node: str) -> Seen:
    attestation = lab.nodeattestation(node)
    status = (attestation or {}).get("status") or {}
    obj = lab.cluster.request("GET", f"/api/v1/nodes/{node}")
    taints = obj["spec"].get("taints") or []
    return Seen(
        state=str(status.get("state", "")),
        reason=str(status.get("reason", "")),
        failure_ids=tuple(str(f.get("id")) for f in status.get("failures") or []),
        trust=None if attestation is None else node_trust(attestation, lab.system.verifier_keys),
        attested_label=(obj["metadata"].get("labels") or {}).get(ATTESTED_LABEL),
        tainted=any(t.get("key") == UNTRUSTED_TAINT for t in taints),
    )


def wait_state(lab: Lab, node: str, state: str, failure_id: str = "", timeout: float = 30) -> Seen:
    """Poll until ``node`` shows ``state`` (with ``failure_id`` among its failures); return it."""

    def check() -> Seen | None:
        now = seen(lab, node)
        if now.state != state or (failure_id and failure_id not in now.failure_ids):
            return None
        return now

    result: Seen = wait_for(f"{node} {state} {failure_id}".strip(), check, timeout=timeout)
    return result


def node_events(lab: Lab, node: str, since: datetime | None = None) -> list[tuple[str, str]]:
    """(reason, message) of the node's Events, those stamped at or after ``since`` (the API
    server keeps whole seconds) when given."""
    floor = since.replace(microsecond=0) if since else None
    return [
        (e["reason"], e.get("message", ""))
        for e in lab.events_for(NODE_EVENT_NAMESPACE, node)
        if floor is None or parse_time(e.get("lastTimestamp"), "lastTimestamp") >= floor
    ]


def audit_records(lab: Lab) -> list[dict[str, Any]]:
    lines = lab.audit_log.read_bytes().split(b"\n")
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # an empty last line, or a tail torn by a kill -9
    return out


def verdict_records(
    lab: Lab, node: str, state: str, since: datetime | None = None
) -> list[dict[str, Any]]:
    return [
        r
        for r in audit_records(lab)
        if r.get("kind") == "verdict"
        and r.get("node") == node
        and r.get("state") == state
        and (since is None or parse_time(r["time"], "time") >= since)
    ]


def assert_user_sees(
    lab: Lab,
    node: str,
    state: str,
    failure_id: str,
    *,
    since: datetime | None = None,
    event: bool = True,
) -> Seen:
    """The node's NodeAttestation, label, taint, Event and audit record all tell the story (the
    Event and the record made at or after ``since``, when given). ``event=False`` where the
    state does not change (Events mark transitions only)."""
    wait_state(lab, node, state, failure_id)
    # The status is written first, then the node's label and taint (a moment later).
    now: Seen = wait_for(
        f"{node}: label attested=false and the untrusted taint",
        lambda: (s := seen(lab, node)).attested_label == "false" and s.tainted and s,
        timeout=10,
    )
    assert now.state == state, now
    assert failure_id in now.failure_ids, now
    if event:
        wait_for(
            f"{node}: Event Attestation{state} naming {failure_id}",
            lambda: any(
                r == f"Attestation{state}" and failure_id in m
                for r, m in node_events(lab, node, since)
            ),
            timeout=10,
        )
    wait_for(
        f"{node}: audit verdict {state} with {failure_id}",
        lambda: any(
            failure_id in {f.get("id") for f in r.get("failures") or []}
            for r in verdict_records(lab, node, state, since)
        ),
        timeout=10,
    )
    return now


def assert_trusted_and_fresh(lab: Lab, *nodes: str) -> None:
    for node in nodes:
        now = seen(lab, node)
        assert now.state == "Trusted", (node, now)
        assert now.trusted, (node, now)
        assert now.attested_label == "true", (node, now)
        assert not now.tainted, (node, now)


def pod_view(lab: Lab, namespace: str, name: str) -> tuple[str, str, bool]:
    """(trust-state annotation, reason annotation, being evicted/deleted)."""
    pod = lab.pod(namespace, name)
    if pod is None:
        return "", "", True
    ann = pod["metadata"].get("annotations") or {}
    return (
        ann.get(TRUST_STATE_ANNOTATION, ""),
        ann.get(REASON_ANNOTATION, ""),
        bool(pod["metadata"].get("deletionTimestamp")),
    )


def watch_freshness(lab: Lab, node: str, seconds: float) -> float:
    """Sample ``node`` for ``seconds``; it must stay trusted (signed, Trusted, unexpired)
    throughout. Returns the largest evidence age seen (now - verifiedAt), the figure the report
    quotes."""
    ages = [0.0]

    def still_trusted() -> None:
        now = seen(lab, node)
        assert now.state == "Trusted", (node, now)
        assert now.trusted, (node, now)
        assert now.verified_at is not None
        ages.append((datetime.now(UTC) - now.verified_at).total_seconds())

    hold_for(seconds, still_trusted)
    return max(ages)

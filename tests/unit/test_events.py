"""Which transition gets a Kubernetes Event, and its body (attestation.verifier.events)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from attestation.core.names import NodeState
from attestation.core.status import PodTrustView
from attestation.core.verdict import PodInfo
from attestation.verifier.events import Event, node_event, pod_event, remediation_event
from attestation.verifier.remediate import PodTarget

NOW = datetime(2025, 3, 1, 12, 0, 0, 250000, tzinfo=UTC)
UPF = PodInfo("uid-upf", "5g-core", "upf-0", "upf")
TRUSTED = PodTrustView("trusted", "")
UNTRUSTED = PodTrustView("untrusted", "ima.policy.unknown_file (/usr/bin/nc)")
UNKNOWN = PodTrustView("unknown", "")


def _summary(ev: Event | None) -> tuple[str, ...] | None:
    if ev is None:
        return None
    ns, body = ev
    return ns, body["reason"], body["type"], body["message"]


def test_the_body() -> None:
    ns, body = node_event("worker-1", "node-uid", "Unknown", "agent.timeout: x", instance="v-0",
                          now=NOW)  # fmt: skip
    assert ns == "default"
    assert body["involvedObject"] == {
        "kind": "Node", "name": "worker-1", "uid": "node-uid", "apiVersion": "v1"
    }  # fmt: skip
    assert body["metadata"] == {"generateName": "worker-1.", "namespace": "default"}
    assert body["firstTimestamp"] == body["lastTimestamp"] == "2025-03-01T12:00:00.250000Z"
    assert (body["reportingComponent"], body["reportingInstance"]) == ("trustgate-verifier", "v-0")


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ("Trusted", ("default", "Attested", "Normal", "TPM quote and IMA log verified")),
        ("Untrusted", ("default", "AttestationUntrusted", "Warning", "why")),
        ("Unknown", ("default", "AttestationUnknown", "Warning", "why")),
        ("Pending", ("default", "AttestationPending", "Warning", "why")),
    ],
)
def test_node_event(state: NodeState, expected: tuple[str, ...]) -> None:
    assert _summary(node_event("worker-1", "u", state, "why", instance="v", now=NOW)) == expected


@pytest.mark.parametrize(
    ("before", "view", "expected"),
    [
        (None, TRUSTED, None),  # first sight of a healthy pod: the annotation says it
        (TRUSTED, TRUSTED, None),
        (UNTRUSTED, PodTrustView("untrusted", "another reason"), None),  # same state
        (None, UNTRUSTED, ("5g-core", "AttestationUntrusted", "Warning", UNTRUSTED.reason)),
        (TRUSTED, UNKNOWN, ("5g-core", "AttestationUnknown", "Warning", "trust state unknown")),
        (UNKNOWN, TRUSTED, ("5g-core", "AttestationTrusted", "Normal", "trust state trusted")),
    ],
)
def test_pod_event(
    before: PodTrustView | None, view: PodTrustView, expected: tuple[str, ...] | None
) -> None:
    assert _summary(pod_event(UPF, before, view, instance="v", now=NOW)) == expected


@pytest.mark.parametrize(
    ("outcome", "reason"),
    [
        ("evicted", "TrustgateEvicted"),
        ("deleted", "TrustgateDeleted"),
        ("audit-only", "TrustgateWouldEvict"),
        ("failed", "TrustgateEvictionFailed"),
        ("gone", None),
    ],
)
def test_remediation_event(outcome: str, reason: str | None) -> None:
    target = PodTarget("5g-core", "upf-0", "uid-upf", "diverged")
    ev = remediation_event(target, outcome, "detail", instance="v", now=NOW)
    expected: Any = None if reason is None else ("5g-core", reason, "Warning", f"{outcome}: detail")
    assert _summary(ev) == expected

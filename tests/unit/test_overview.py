"""`trustgate status`'s lines, on data: what the webhook would do with each verdict, and why
each NF pod waits, runs or is gone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from attestation.core.names import NF_LABEL, REASON_ANNOTATION, SCHEDULING_GATE
from attestation.core.names import TRUST_STATE_ANNOTATION as TRUST
from attestation.core.nodeattestation import NodeTrust
from attestation.core.overview import node_lines, pod_lines, render
from attestation.core.types import Failure

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def test_a_node_line_says_what_the_webhook_would_do() -> None:
    fresh = NodeTrust("a", "Trusted", verified_at=NOW - timedelta(seconds=3),
                      expires_at=NOW + timedelta(seconds=7))  # fmt: skip
    stale = NodeTrust("b", "Trusted", verified_at=NOW - timedelta(minutes=5),
                      expires_at=NOW - timedelta(minutes=4, seconds=50))  # fmt: skip
    forged = NodeTrust("c", "Trusted", defect=Failure("signature.unknown_key", "not ours"))
    lines = {n.node: n for n in node_lines([forged, stale, fresh], NOW)}
    assert (lines["a"].state, lines["a"].age) == ("Trusted", "3s")
    assert (lines["b"].state, lines["b"].age) == ("Expired", "5m")
    assert lines["b"].reason == "verdict expired 4m ago"
    assert lines["c"].state == "Invalid"
    assert "signature.unknown_key" in lines["c"].reason


def _pod(name: str, spec: dict, ann: dict | None = None, **meta: object) -> dict:  # type: ignore[type-arg]
    return {"metadata": {"namespace": "5g", "name": name, "labels": {NF_LABEL: "upf"},
                         "annotations": ann or {}, **meta}, "spec": spec,
            "status": {"phase": "Running" if spec.get("nodeName") else "Pending"}}  # fmt: skip


def test_a_pod_line_says_why_it_waits_runs_or_is_gone() -> None:
    pods = [
        _pod("gated", {"schedulingGates": [{"name": SCHEDULING_GATE}]}),
        _pod("running", {"nodeName": "w1"}, {TRUST: "trusted"}),
        _pod(
            "leaving",
            {"nodeName": "w1"},
            {TRUST: "untrusted", REASON_ANNOTATION: "ima.policy.unknown_file: /usr/bin/nc"},
            deletionTimestamp="2026-11-30T11:59:00Z",
        ),
    ]
    events = [{"reason": "TrustgateEvicted", "message": "evicted: /tmp/x",
               "lastTimestamp": "2026-11-30T11:00:00Z",
               "involvedObject": {"namespace": "5g", "name": "gone"}},
              {"reason": "TrustgateEvicted", "message": "older",
               "involvedObject": {"namespace": "5g", "name": "leaving"}}]  # fmt: skip
    lines = {p.name: p for p in pod_lines(pods, events)}
    assert lines["gated"].state == "Waiting"
    assert "trustgate.io/attestation" in lines["gated"].why
    assert (lines["running"].node, lines["running"].why) == ("w1", "trusted")
    assert lines["leaving"].state == "Terminating"
    assert "/usr/bin/nc" in lines["leaving"].why
    assert lines["gone"].state == "Evicted"
    assert lines["gone"].why == "2026-11-30T11:00:00Z evicted: /tmp/x"
    text = render(node_lines([], NOW), list(lines.values()))
    assert "NAMESPACE  POD" in text

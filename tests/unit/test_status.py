"""What a verdict looks like in Kubernetes (attestation.core.status): the reason line, each pod's
trust view and annotations, and the NodeAttestation status, as tables."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from attestation.core.names import (
    LAST_VERIFIED_ANNOTATION,
    REASON_ANNOTATION,
    TRUST_STATE_ANNOTATION,
    NodeState,
)
from attestation.core.status import (
    MAX_REASON,
    PodTrustView,
    node_status,
    pod_annotations,
    pod_trust,
    reason,
)
from attestation.core.types import Failure, NodeVerdict, PodVerdict
from attestation.core.verdict import PodInfo

UPF = PodInfo("uid-upf", "5g-core", "upf-0", "upf")
SMF = PodInfo("uid-smf", "5g-core", "smf-0", "smf")
PODS = {UPF.uid: UPF, SMF.uid: SMF}
NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)

UNKNOWN_FILE = Failure(
    "ima.policy.unknown_file", "not in the policy", pod_uid=UPF.uid, path="/usr/bin/nc"
)
HOST_FILE = Failure("ima.policy.unknown_file", "not in the host policy", path="/usr/bin/rootkit")
NO_PATH = Failure("quote.nonce_mismatch", "the quote answers another nonce")
WARNING = Failure("ima.violation", "open for writing", severity="warning", path="/tmp/x")


@pytest.mark.parametrize(
    ("failures", "expected"),
    [
        ((), ""),
        ((NO_PATH,), "quote.nonce_mismatch: the quote answers another nonce"),
        ((HOST_FILE,), "ima.policy.unknown_file (/usr/bin/rootkit)"),
        ((UNKNOWN_FILE,), "ima.policy.unknown_file (/usr/bin/nc in pod 5g-core/upf-0)"),
        (
            (Failure("ima.policy.unknown_file", "m", pod_uid="gone"),),
            "ima.policy.unknown_file (in pod gone)",
        ),
        ((WARNING, NO_PATH), "quote.nonce_mismatch: the quote answers another nonce"),
        ((WARNING,), "ima.violation (/tmp/x)"),  # only warnings: the first of them
        (
            (NO_PATH, HOST_FILE, WARNING),  # warnings are not counted among the errors
            "quote.nonce_mismatch: the quote answers another nonce +1 more",
        ),
    ],
    ids=["none", "no-path", "host-path", "pod", "pod-not-known", "warning-skipped",
         "warnings-only", "more"],
)  # fmt: skip
def test_reason(failures: tuple[Failure, ...], expected: str) -> None:
    assert reason(failures, PODS) == expected


def test_reason_is_capped() -> None:
    long = Failure("agent.bad_response", "x" * 5000)
    assert len(reason((long,))) == MAX_REASON


@pytest.mark.parametrize(
    ("node_state", "pod", "expected"),
    [
        ("Trusted", None, PodTrustView("trusted", "")),
        ("Trusted", PodVerdict(UPF.uid, True), PodTrustView("trusted", "")),
        (
            "Trusted",
            PodVerdict(UPF.uid, False, failures=(UNKNOWN_FILE,)),
            PodTrustView("untrusted", "ima.policy.unknown_file (/usr/bin/nc in pod 5g-core/upf-0)"),
        ),
        ("Untrusted", None, PodTrustView("untrusted", "node: host broke")),
        ("Untrusted", PodVerdict(UPF.uid, True), PodTrustView("untrusted", "node: host broke")),
        ("Unknown", None, PodTrustView("unknown", "host broke")),
        ("Pending", PodVerdict(UPF.uid, True), PodTrustView("pending", "host broke")),
        (
            "Unknown",
            PodVerdict(UPF.uid, False, failures=(UNKNOWN_FILE,)),
            PodTrustView("untrusted", "ima.policy.unknown_file (/usr/bin/nc in pod 5g-core/upf-0)"),
        ),
    ],
    ids=["trusted-node", "trusted-pod", "divergent-pod", "untrusted-node",
         "trusted-pod-untrusted-node", "unknown-node", "pending-node", "divergent-on-unknown"],
)  # fmt: skip
def test_pod_trust(node_state: NodeState, pod: PodVerdict | None, expected: PodTrustView) -> None:
    assert pod_trust(node_state, "host broke", pod, PODS) == expected


def test_pod_trust_of_an_untrusted_node_is_capped() -> None:
    view = pod_trust("Untrusted", "x" * 2000, None, PODS)
    assert view.reason.startswith("node: x")
    assert len(view.reason) == MAX_REASON


@pytest.mark.parametrize(
    ("verified_at", "stamp"),
    [
        (NOW, "2025-03-01T12:00:00Z"),
        (NOW + timedelta(microseconds=1500), "2025-03-01T12:00:00.001500Z"),
        (datetime(2025, 3, 1, 14, 0, tzinfo=UTC).astimezone(), "2025-03-01T14:00:00Z"),
    ],
    ids=["whole-second", "fraction", "local-zone"],
)
def test_pod_annotations(verified_at: datetime, stamp: str) -> None:
    assert pod_annotations(PodTrustView("untrusted", "why"), verified_at) == {
        TRUST_STATE_ANNOTATION: "untrusted",
        LAST_VERIFIED_ANNOTATION: stamp,
        REASON_ANNOTATION: "why",
    }


VERDICT = NodeVerdict(
    "worker-1",
    True,
    failures=(WARNING,),
    pods=(
        PodVerdict(UPF.uid, False, "upf", (UNKNOWN_FILE,), 3),
        PodVerdict(SMF.uid, True, "smf", (), 1),
        PodVerdict("uid-gone", True, "amf", (), 1),  # bound elsewhere since: left out
    ),
    quote_digest="ab" * 32,
)


@pytest.mark.parametrize(
    ("state", "expires"),
    [
        ("Trusted", "2025-03-01T12:00:10Z"),  # verifiedAt + max_age
        ("Untrusted", "2025-03-01T12:00:00Z"),  # expired at once: nothing to rely on
        ("Unknown", "2025-03-01T12:00:00Z"),
        ("Pending", "2025-03-01T12:00:00Z"),
    ],
)
def test_node_status(state: NodeState, expires: str) -> None:
    status = node_status(
        VERDICT, state, "the reason", PODS, verified_at=NOW, max_age=timedelta(seconds=10),
        ak_name=b"\x00\x0b\xff", sequence=7, ek_digest="cd" * 32,
    )  # fmt: skip
    upf_state, smf_state = {
        "Trusted": ("untrusted", "trusted"),
        "Untrusted": ("untrusted", "untrusted"),
        "Unknown": ("untrusted", "unknown"),
        "Pending": ("untrusted", "pending"),
    }[state]
    assert status == {
        "state": state,
        "reason": "the reason",
        "verifiedAt": "2025-03-01T12:00:00Z",
        "expiresAt": expires,
        "quoteDigest": "ab" * 32,
        "akName": "000bff",
        "failures": [{"id": "ima.violation", "message": "open for writing"}],
        "pods": [
            {
                "uid": UPF.uid, "namespace": "5g-core", "name": "upf-0", "networkFunction": "upf",
                "state": upf_state,
                "reason": "ima.policy.unknown_file (/usr/bin/nc in pod 5g-core/upf-0)",
            },
            {
                "uid": SMF.uid, "namespace": "5g-core", "name": "smf-0", "networkFunction": "smf",
                "state": smf_state,
                "reason": pod_trust(state, "the reason", VERDICT.pods[1], PODS).reason,
            },
        ],
        "podCount": 2,
        "podsOmitted": 0,
        "sequence": 7,
        "ekDigest": "cd" * 32,  # the EK binding travels with every verdict
    }  # fmt: skip


def test_node_status_bounds_its_failures() -> None:
    many = tuple(Failure(f"f.{i}", "m" * 2000) for i in range(40))
    verdict = NodeVerdict("worker-1", False, failures=many)
    status = node_status(
        verdict, "Untrusted", "r", {}, verified_at=NOW, max_age=timedelta(seconds=10),
        ak_name=b"", sequence=1,
    )  # fmt: skip
    assert [f["id"] for f in status["failures"]] == [f"f.{i}" for i in range(32)]
    assert {len(f["message"]) for f in status["failures"]} == {MAX_REASON}
    assert status["pods"] == []
    assert status["podCount"] == 0

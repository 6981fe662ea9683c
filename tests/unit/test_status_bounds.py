"""The pure parts of items 5 and 6 of issue 12: a status is bounded (listed pods capped, the
untrusted kept; an encoded status over the budget summarised, never refused) and a verdict is
bound to its cluster and object (``bind``, ``node_trust`` with a ``Binding``)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from attestation.core.clock import format_time
from attestation.core.nodeattestation import PAYLOAD_VERSION, Binding, bind, node_trust
from attestation.core.signing import public_keys_by_id, sign_status
from attestation.core.status import MAX_LISTED_PODS, fit_status, node_status
from attestation.core.types import Failure, NodeVerdict, PodVerdict
from attestation.core.verdict import PodInfo

NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
KEY = Ed25519PrivateKey.from_private_bytes(b"s" * 32)
KEYS = public_keys_by_id([KEY.public_key()])
CLUSTER = "cluster-a"
BINDING = Binding(CLUSTER, max_validity=timedelta(minutes=5))


def _many(count: int, bad: frozenset[int] = frozenset()) -> tuple[NodeVerdict, dict[str, PodInfo]]:
    pods = {f"uid-{i}": PodInfo(f"uid-{i}", "5gc", f"upf-{i}" + "x" * 200, "upf")
            for i in range(count)}  # fmt: skip
    fail = (Failure("ima.policy.unknown_file", "nc", path="/usr/bin/nc"),)
    verdicts = tuple(PodVerdict(uid, i not in bad, "upf", fail if i in bad else ())
                     for i, uid in enumerate(pods))  # fmt: skip
    return NodeVerdict("w1", True, pods=verdicts), pods


def _status(verdict: NodeVerdict, pods: dict[str, PodInfo]) -> dict[str, Any]:
    return node_status(verdict, "Trusted", "r", pods, verified_at=NOW,
                       max_age=timedelta(seconds=10), ak_name=b"", sequence=1)  # fmt: skip


def test_a_long_pod_list_is_capped_and_keeps_the_untrusted() -> None:
    verdict, pods = _many(2000, bad=frozenset({1500, 1999}))
    status = _status(verdict, pods)
    assert len(status["pods"]) == MAX_LISTED_PODS
    assert status["podCount"] == 2000
    assert status["podsOmitted"] == 2000 - MAX_LISTED_PODS
    untrusted = [p["uid"] for p in status["pods"] if p["state"] == "untrusted"]
    assert untrusted == ["uid-1500", "uid-1999"]


def test_a_short_pod_list_is_whole() -> None:
    verdict, pods = _many(3)
    status = _status(verdict, pods)
    assert [p["uid"] for p in status["pods"]] == ["uid-0", "uid-1", "uid-2"]
    assert status["podsOmitted"] == 0


def test_fit_status_summarises_what_is_over_the_budget() -> None:
    verdict, pods = _many(MAX_LISTED_PODS)
    status = _status(verdict, pods) | {"checkpoint": {"imaIndex": 5}}
    limit = 8 * 1024
    fitted = fit_status(status, limit)
    assert len(json.dumps(fitted, separators=(",", ":")).encode()) <= limit
    assert "checkpoint" not in fitted
    assert fitted["podCount"] == MAX_LISTED_PODS
    assert fitted["podsOmitted"] == MAX_LISTED_PODS - len(fitted["pods"])
    assert fit_status(status) == status  # under the default budget: unchanged
    findings = [{"id": "x", "message": ""}] * 1025
    assert "checkpoint" not in fit_status(
        _status(verdict, pods) | {"checkpoint": {"podFailures": findings}}
    )  # more findings than the CRD takes: resumed from zero instead


def _object(status: dict[str, Any], uid: str = "uid-na") -> dict[str, Any]:
    return {"metadata": {"name": "w1", "uid": uid}, "status": status}


def _signed(cluster: str = CLUSTER, uid: str = "uid-na", ttl: float = 10) -> dict[str, Any]:
    status = {"state": "Trusted", "reason": "", "verifiedAt": format_time(NOW),
              "expiresAt": format_time(NOW + timedelta(seconds=ttl)), "quoteDigest": "",
              "akName": "", "failures": [], "pods": [], "sequence": 1}  # fmt: skip
    return sign_status("w1", bind(status, cluster, uid), KEY)


def test_a_bound_verdict_is_accepted_for_its_cluster_and_object() -> None:
    trust = node_trust(_object(_signed()), KEYS, BINDING)
    assert trust.defect is None
    assert trust.trusted_at(NOW)
    assert _signed()["payloadVersion"] == PAYLOAD_VERSION


def test_each_binding_refusal_has_its_id() -> None:
    cases = {
        "nodeattestation.other_cluster": _object(_signed(cluster="cluster-b")),
        "nodeattestation.other_object": _object(_signed(), uid="uid-recreated"),
        "nodeattestation.validity_too_long": _object(_signed(ttl=301)),
    }
    for failure_id, obj in cases.items():
        trust = node_trust(obj, KEYS, BINDING)
        assert trust.defect is not None, failure_id
        assert trust.defect.id == failure_id, (failure_id, trust)
        assert not trust.trusted_at(NOW)


def test_an_unbound_verdict_is_refused_unless_the_reader_takes_it_over() -> None:
    status = {"state": "Trusted", "reason": "", "verifiedAt": format_time(NOW),
              "expiresAt": format_time(NOW + timedelta(seconds=10)), "sequence": 1}  # fmt: skip
    obj = _object(sign_status("w1", status, KEY))
    refused = node_trust(obj, KEYS, BINDING)
    assert refused.defect is not None
    assert refused.defect.id == "nodeattestation.unbound"
    assert node_trust(obj, KEYS, Binding(CLUSTER, require_bound=False)).defect is None
    assert node_trust(obj, KEYS).defect is None  # the signature alone, as before


def test_the_binding_is_signed() -> None:
    status = _signed()
    status["clusterId"] = "cluster-b"  # edited after signing: the signature breaks first
    trust = node_trust(_object(status), KEYS, Binding("cluster-b"))
    assert trust.defect is not None
    assert trust.defect.id == "signature.invalid"

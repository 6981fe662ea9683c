"""The verifier's operational behaviour against the real control plane: fenced status writes,
PodDisruptionBudget-refused evictions escalated to delete, new nodes starting untrusted, metrics
(the replicas' shards: test_shards.py)."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from attestation.adapters.kube import Kube, KubeError, load_api_client
from attestation.lab.cluster import NODEATTESTATIONS, service_account_kubeconfig
from attestation.verifier.nodewrites import write_fenced, write_status
from attestation.verifier.remediate import PodTarget, Remediator
from tests.support.controlplane import ClusterHandle
from tests.support.lab import FILES, Lab, lab_cluster, wait_for
from tests.support.swtpm import LocalCa
from tests.support.verdicts import audit_records, pod_view, seen

NS = "5g-core-ha"


class _Owning:
    """A fence that says the node is this replica's, and whose Lease check answers
    ``confirmed``."""

    def __init__(self, confirmed: bool) -> None:
        self.confirmed = confirmed

    def holds(self, node: str) -> bool:  # noqa: ARG002 - the Fence protocol
        return True

    def confirm(self, node: str) -> bool:  # noqa: ARG002
        return self.confirmed


def test_a_status_write_is_fenced_by_the_version_it_last_saw(
    trustgate_installed: ClusterHandle, tmp_path: Path
) -> None:
    """As the verifier's ServiceAccount against the real API server: a status write carries the
    resourceVersion last written; after someone else's write it is refused (409), and written
    again only when the replica's Lease confirms the node is still its own."""
    plane = trustgate_installed.plane
    kube = Kube(load_api_client(service_account_kubeconfig(plane, "trustgate-verifier", tmp_path)))
    node = trustgate_installed.unique("fenced")
    try:
        first = write_status(kube, node, _as({"state": "Pending", "sequence": 1, "ekDigest": "e"}),
                             "", "")  # fmt: skip
        newer = write_status(kube, node, _as({"state": "Untrusted", "sequence": 3}), *first)
        with pytest.raises(KubeError) as refused:  # a deposed writer still holding ``first``
            write_status(kube, node, _as({"state": "Trusted", "sequence": 2}), *first)
        assert refused.value.status == 409
        stale = _as({"state": "Trusted", "sequence": 2})
        assert write_fenced(kube, _Owning(False), node, stale, *first) is None
        status = (plane.get(f"{NODEATTESTATIONS}/{node}") or {})["status"]
        # the whole status is replaced: a field the newer one left out is gone (else the stored
        # status would no longer be what was signed)
        assert status == {"state": "Untrusted", "sequence": 3}
        again = write_fenced(kube, _Owning(True), node, _as({"sequence": 4}), *first)
        assert again not in (None, newer)
        status = (plane.get(f"{NODEATTESTATIONS}/{node}") or {})["status"]
        assert status["sequence"] == 4
        # Signed for the object it is written to: a NodeAttestation created again under the
        # same name gets a status signed for its new uid (the verdict's objectUid).
        plane.delete(f"{NODEATTESTATIONS}/{node}")
        uids: list[str] = []

        def sign(uid: str) -> dict[str, Any]:
            uids.append(uid)
            return {"sequence": 5}

        written = write_status(kube, node, sign, *first)
        assert uids == [first[1], written[1]]  # tried for the old object, then for the new
        assert written[1] != first[1]
    finally:
        plane.delete(f"{NODEATTESTATIONS}/{node}")
        kube.close()


def test_a_refresh_sends_only_what_changed_under_the_same_fence(
    trustgate_installed: ClusterHandle, tmp_path: Path
) -> None:
    """With the status last written at hand, a write is a JSON merge patch of what differs (a
    refresh: times, sequence, signature; a field left out is removed) under that version: the
    stored status is exactly the new one, and a patch from a stale version is refused (409)."""
    plane = trustgate_installed.plane
    kube = Kube(load_api_client(service_account_kubeconfig(plane, "trustgate-verifier", tmp_path)))
    node = trustgate_installed.unique("patched")
    signature = {"keyId": "k", "algorithm": "a", "value": "v1"}
    first_status = {"state": "Trusted", "sequence": 1, "verifiedAt": "2026-11-30T10:00:00Z",
                    "reason": "r", "signature": signature}  # fmt: skip
    second_status = {"state": "Trusted", "sequence": 2, "verifiedAt": "2026-11-30T10:00:10Z",
                     "signature": {**signature, "value": "v2"}}  # fmt: skip
    try:
        first = write_status(kube, node, _as(first_status), "", "")
        second = write_status(kube, node, _as(second_status), *first, first_status)
        stored = (plane.get(f"{NODEATTESTATIONS}/{node}") or {})["status"]
        assert stored == second_status
        with pytest.raises(KubeError) as refused:  # a writer still holding ``first``
            write_status(kube, node, _as({**first_status, "sequence": 3}), *first, first_status)
        assert refused.value.status == 409
        assert (plane.get(f"{NODEATTESTATIONS}/{node}") or {})["status"] == second_status
        assert second[1] == first[1]
    finally:
        plane.delete(f"{NODEATTESTATIONS}/{node}")
        kube.close()


def test_an_eviction_stops_once_the_node_is_no_longer_this_replicas(
    trustgate_installed: ClusterHandle, tmp_path: Path
) -> None:
    """As the verifier's ServiceAccount: an eviction a budget refuses is retried, and escalated
    to a delete after the deadline — but only while the pod's node is still this replica's. A
    replica that lost the node (a peer took it, or it was paused past its lease) drops it."""
    plane = trustgate_installed.plane
    ns = trustgate_installed.unique("fence-evict")
    trustgate_installed.ensure_namespace(ns)
    plane.create(f"/api/v1/namespaces/{ns}/pods", {
        "metadata": {"name": "upf", "labels": {"nf": "upf"}},
        "spec": {"nodeName": "elsewhere", "containers": [{"name": "upf", "image": "upf"}]},
    })  # fmt: skip
    plane.request(
        "PATCH", f"/api/v1/namespaces/{ns}/pods/upf/status",
        {"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}},
        content_type="application/strategic-merge-patch+json",
    )  # fmt: skip
    plane.create(f"/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets", {
        "metadata": {"name": "upf"},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"nf": "upf"}}},
    })  # fmt: skip

    def exhausted() -> bool:
        pdb = plane.get(f"/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets/upf") or {}
        return (pdb.get("status") or {}).get("disruptionsAllowed") == 0 and bool(
            (pdb.get("status") or {}).get("currentHealthy")
        )

    wait_for("the budget to count the pod", exhausted, 30)
    kube = Kube(load_api_client(service_account_kubeconfig(plane, "trustgate-verifier", tmp_path)))
    uid = plane.get(f"/api/v1/namespaces/{ns}/pods/upf")["metadata"]["uid"]
    outcomes: list[str] = []
    asked: list[str] = []

    async def report(_target: PodTarget, outcome: str, _detail: str) -> None:
        outcomes.append(outcome)

    def still_mine(node: str) -> bool:
        asked.append(node)
        return len(asked) < 3  # the node moves away after two refused attempts

    async def remove() -> None:
        remediator = Remediator(kube, "evict-then-delete", 0.5, report, grace=0)
        remediator.may_act = still_mine
        remediator.request(PodTarget(ns, "upf", uid, "diverged", "node-a"))
        await asyncio.sleep(3.0)  # past the 0.5 s deadline: a delete would have come
        await remediator.close()

    try:
        asyncio.run(remove())
        assert asked == ["node-a"] * 3
        assert outcomes == []  # neither evicted nor deleted: left to the node's owner
        pod = plane.get(f"/api/v1/namespaces/{ns}/pods/upf")
        assert pod is not None
        assert not pod["metadata"].get("deletionTimestamp")
    finally:
        plane.delete(f"/api/v1/namespaces/{ns}")
        kube.close()


def _as(status: dict[str, Any]) -> Callable[[str], dict[str, Any]]:
    """A ``nodewrites.Sign`` that writes ``status`` whatever the object's uid."""
    return lambda _uid: status


@pytest.fixture(scope="module")
def lab(
    trustgate_installed: ClusterHandle, swtpm_ca: LocalCa, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Lab]:
    trustgate_installed.ensure_namespace(NS)
    workdir = tmp_path_factory.mktemp("verifier-ops")
    args = ("--eviction-deadline", "5", "--unknown-grace", "2", "--evict-on-unknown")
    with lab_cluster(
        trustgate_installed, swtpm_ca, workdir, ["ops-1"], verifier_args=args, trusted=["ops-1"]
    ) as lab:
        yield lab


def test_eviction_refused_by_a_budget_is_escalated_to_delete(lab: Lab) -> None:
    uid = lab.create_nf_pod(NS, "upf-pdb", "upf", "ops-1")
    lab.cluster.request("POST", f"/apis/policy/v1/namespaces/{NS}/poddisruptionbudgets", {
        "metadata": {"name": "upf-pdb"},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"nf": "upf"}}},
    })  # fmt: skip
    # Eviction ignores budgets for pods that never ran: play the kubelet and report it Running
    # and Ready, so the budget (minAvailable 1 of 1) really refuses.
    lab.cluster.request(
        "PATCH", f"/api/v1/namespaces/{NS}/pods/upf-pdb/status",
        {"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}},
        content_type="application/strategic-merge-patch+json",
    )  # fmt: skip

    def budget_exhausted() -> bool:
        pdb = lab.cluster.request(
            "GET", f"/apis/policy/v1/namespaces/{NS}/poddisruptionbudgets/upf-pdb"
        )
        status = pdb.get("status") or {}
        return status.get("currentHealthy") == 1 and status.get("disruptionsAllowed") == 0

    wait_for("the budget to count the pod", budget_exhausted, 30)
    lab.nodes["ops-1"].run_in_pod(uid, "/usr/bin/upfd", FILES["upf"]["/usr/bin/upfd"])
    lab.nodes["ops-1"].run_in_pod(uid, "/usr/bin/nc", b"netcat")

    def outcome() -> str | None:
        for record in audit_records(lab):
            if record.get("action") == "remediate" and record.get("uid") == uid:
                return str(record["outcome"])
        return None

    # The lab's verifier escalates after 5 s of 429s (--eviction-deadline 5).
    assert wait_for("the pod removed despite the budget", outcome, 30) == "deleted"
    pod = lab.pod(NS, "upf-pdb")
    assert pod is None or pod["metadata"].get("deletionTimestamp")
    # The Event follows the audit record (audit first, then the Event): wait for it.
    wait_for(
        "the TrustgateDeleted event",
        lambda: "TrustgateDeleted" in {e["reason"] for e in lab.events_for(NS, "upf-pdb")},
        10,
    )


def test_a_new_node_starts_untrusted(lab: Lab) -> None:
    name = lab.cluster.unique("ops-new")
    lab.cluster.add_node(name, {lab.system.node_label[0]: lab.system.node_label[1]})

    def flagged() -> bool:
        now = seen(lab, name)
        return now.attested_label == "false" and now.tainted

    wait_for(f"{name} labelled untrusted and tainted", flagged, 15)
    assert lab.state_of(name) in ("Pending", "Unknown")


Sample = tuple[str, frozenset[tuple[str, str]]]
TRUSTED_ROUNDS: Sample = ("trustgate_attestations_total", frozenset({("result", "trusted")}))
VERIFICATIONS: Sample = ("trustgate_verification_seconds_count", frozenset())
EVIDENCE_AGE: Sample = ("trustgate_evidence_age_seconds", frozenset({("node", "ops-1")}))


def _scrape(lab: Lab) -> dict[Sample, float]:
    """The verifier's /metrics as Prometheus parses it: (name, labels) -> value."""
    url = f"http://127.0.0.1:{lab.system.verifier_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_count_rounds(lab: Lab) -> None:
    """The counters move with the rounds (every series exists from the start, at zero: being
    present proves nothing), and the node's evidence age stays below max-age."""
    before = _scrape(lab)
    assert before[TRUSTED_ROUNDS] > 0, "ops-1 was Trusted before this test: rounds were counted"
    after = wait_for(
        "three more trusted rounds counted",
        lambda: (now := _scrape(lab))[TRUSTED_ROUNDS] >= before[TRUSTED_ROUNDS] + 3 and now,
        timeout=15,
    )
    assert after[VERIFICATIONS] >= before[VERIFICATIONS] + 3
    assert 0 <= after[EVIDENCE_AGE] < 3.0  # the lab's max-age


def test_pods_on_a_node_unknown_for_longer_than_the_grace_are_evicted(lab: Lab) -> None:
    """Root on the node stops the agent, then could tamper unseen: with --evict-on-unknown, after
    --unknown-grace (2 s here) without fresh evidence, the node's NF pods are evicted like an
    Untrusted node's."""
    uid = lab.create_nf_pod(NS, "smf-dark", "smf", "ops-1")
    lab.nodes["ops-1"].run_in_pod(uid, "/usr/bin/smfd", FILES["smf"]["/usr/bin/smfd"])
    wait_for("smf-dark trusted", lambda: pod_view(lab, NS, "smf-dark")[0] == "trusted", 20)
    lab.nodes["ops-1"].stop_agent()
    try:
        wait_for("ops-1 Unknown", lambda: lab.state_of("ops-1") == "Unknown", 20)
        pod = wait_for("smf-dark evicted", lambda: pod_view(lab, NS, "smf-dark")[2], 20)
        assert pod
    finally:
        lab.nodes["ops-1"].start_agent()
    records = audit_records(lab)
    (record,) = [r for r in records if r.get("action") == "remediate" and r.get("uid") == uid]
    assert "no fresh evidence" in record["detail"]

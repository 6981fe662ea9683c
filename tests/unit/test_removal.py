"""What `trustgate uninstall` does to each node and pod, on data."""

from __future__ import annotations

from attestation.core.names import ATTESTED_LABEL, SCHEDULING_GATE, UNTRUSTED_TAINT
from attestation.core.removal import node_patch, pod_action

PINNED = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
    "nodeSelectorTerms": [{"matchExpressions": [
        {"key": ATTESTED_LABEL, "operator": "In", "values": ["true"]}]}]}}}  # fmt: skip
OWNED = [{"kind": "ReplicaSet", "name": "upf-1", "controller": True}]


def test_a_node_loses_only_trustgates_label_and_taint() -> None:
    node = {"metadata": {"resourceVersion": "7", "labels": {ATTESTED_LABEL: "true", "a": "b"}},
            "spec": {"taints": [{"key": UNTRUSTED_TAINT, "effect": "NoSchedule"},
                                {"key": "other", "effect": "NoSchedule"}]}}  # fmt: skip
    assert node_patch(node) == {
        "metadata": {"resourceVersion": "7", "labels": {ATTESTED_LABEL: None}},
        "spec": {"taints": [{"key": "other", "effect": "NoSchedule"}]},
    }
    assert node_patch({"metadata": {"labels": {"a": "b"}}, "spec": {}}) is None


def test_a_pinned_pod_is_recreated_by_its_controller_or_released_and_named() -> None:
    gated = {"schedulingGates": [{"name": SCHEDULING_GATE}], "affinity": PINNED}
    owned = {"metadata": {"ownerReferences": OWNED}, "spec": gated}
    assert pod_action(owned).kind == "recreate"
    bare = pod_action({"metadata": {"annotations": {"trustgate.io/reason": "x"}}, "spec": gated})
    assert bare.kind == "release"
    assert bare.patch == {"metadata": {"annotations": {"trustgate.io/reason": None}},
                          "spec": {"schedulingGates": []}}  # fmt: skip
    assert ATTESTED_LABEL in bare.note
    ungated_but_pinned = {"metadata": {"ownerReferences": OWNED}, "spec": {"affinity": PINNED}}
    assert pod_action(ungated_but_pinned).kind == "recreate"


def test_a_running_pod_keeps_running_without_trustgates_annotations() -> None:
    running = {"metadata": {"annotations": {"trustgate.io/trust-state": "trusted", "x": "y"}},
               "spec": {"nodeName": "w1", "affinity": PINNED}}  # fmt: skip
    action = pod_action(running)
    assert action.kind == "clean"
    assert action.patch == {"metadata": {"annotations": {"trustgate.io/trust-state": None}}}
    assert pod_action({"metadata": {}, "spec": {"nodeName": "w1"}}).kind == "none"

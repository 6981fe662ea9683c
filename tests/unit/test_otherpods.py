"""The pods each node has, as their cgroups name them, and the ones it had a moment ago (their last
entries can reach the verifier after the API object is gone); the slimmed watch of the pods that
are not network functions."""

from __future__ import annotations

from typing import Any

from attestation.verifier.otherpods import NodePods, _slim

UID_A = "0b4f6a1e-3c2d-4e5f-8a9b-0c1d2e3f4a5b"
UID_B = "1c5a7b2f-4d3e-4f60-9bac-1d2e3f4a5b6c"
HASH = "6a8d0f3c1b2e4d5f9a7c8b6e5d4c3b2a"
STATIC = "6a8d0f3c-1b2e-4d5f-9a7c-8b6e5d4c3b2a"


def _pod(uid: str, node: str | None, mirror: str = "") -> dict[str, Any]:
    meta: dict[str, Any] = {"uid": uid, "name": "p", "labels": {"app": "web"}}
    if mirror:
        meta["annotations"] = {"kubernetes.io/config.mirror": mirror, "other": "x"}
    return {"metadata": meta, "spec": {"nodeName": node, "containers": [{"name": "c"}]}}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_live_pods_by_node_and_mirror_pods_by_their_static_uid() -> None:
    pods = NodePods(clock=Clock())
    pods.update(UID_A, _pod(UID_A, "n1"))
    pods.update(UID_B, _pod(UID_B, "n1", mirror=HASH))
    pods.update("pending", _pod("2d6b8c3a-5e4f-4071-8cbd-2e3f4a5b6c7d", None))
    assert pods.known("n1") == {UID_A, STATIC}
    assert pods.known("n2") == frozenset()
    assert pods.gone("n1") == frozenset()


def test_a_deleted_pod_lingers_then_is_forgotten() -> None:
    clock = Clock()
    pods = NodePods(linger=60, clock=clock)
    pods.update(UID_A, _pod(UID_A, "n1"))
    pods.update(UID_A, _pod(UID_A, "n1"))  # a modification is not a deletion
    assert pods.gone("n1") == frozenset()
    pods.update(UID_A, None)
    assert pods.known("n1") == pods.gone("n1") == {UID_A}
    assert pods.size() == 1
    clock.now += 61
    assert pods.known("n1") == frozenset()
    assert pods.size() == 0


def test_the_watch_keeps_only_uid_mirror_and_node() -> None:
    slim = _slim(_pod(UID_A, "n1", mirror=HASH))
    assert slim == {
        "metadata": {
            "uid": UID_A,
            "resourceVersion": None,
            "annotations": {"kubernetes.io/config.mirror": HASH},
        },
        "spec": {"nodeName": "n1"},
    }
    assert _slim(_pod(UID_A, None))["metadata"]["annotations"] == {}

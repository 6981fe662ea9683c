"""attestation.adapters.kube on the real API server: list + watch, patches, eviction, errors."""

from __future__ import annotations

import threading

import pytest

from attestation.adapters.kube import Kube, KubeError, node_path, pod_path
from tests.support.controlplane import ClusterHandle


@pytest.fixture
def kube(control_plane: ClusterHandle) -> Kube:
    return Kube(control_plane.api_client)


def test_list_then_watch_sees_a_new_node(control_plane: ClusterHandle, kube: Kube) -> None:
    _, version = kube.list(node_path())
    name = control_plane.unique("watched")
    seen: list[tuple[str, str]] = []

    def consume() -> None:
        for kind, obj in kube.watch(node_path(), version):
            seen.append((kind, obj["metadata"]["name"]))
            if obj["metadata"]["name"] == name:
                return

    t = threading.Thread(target=consume, daemon=True)
    t.start()
    control_plane.add_node(name)
    t.join(20)
    assert ("ADDED", name) in seen


def test_merge_patch_and_404(control_plane: ClusterHandle, kube: Kube) -> None:
    name = control_plane.unique("patched")
    control_plane.add_node(name)
    node = kube.merge_patch(node_path(name), {"metadata": {"labels": {"a": "b"}}})
    assert node["metadata"]["labels"]["a"] == "b"
    assert kube.get(node_path("no-such-node")) is None
    with pytest.raises(KubeError) as err:
        kube.merge_patch(node_path("no-such-node"), {"metadata": {"labels": {"a": "b"}}})
    assert err.value.status == 404


def test_eviction_of_a_bound_pod(control_plane: ClusterHandle, kube: Kube) -> None:
    ns = control_plane.unique("evict")
    control_plane.ensure_namespace(ns)
    kube.create(
        pod_path(ns),
        {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "x"}]}},
    )
    kube.evict(ns, "p")
    pod = kube.get_pod(ns, "p")
    # No kubelet: an evicted pod that never ran is deleted at once, or left terminating.
    assert pod is None or pod["metadata"].get("deletionTimestamp")

"""The ground every cluster test stands on: the real scheduler binds a pod to a registered node."""

from __future__ import annotations

import time

from tests.support.controlplane import ClusterHandle


def test_scheduler_binds_pod_to_registered_node(control_plane: ClusterHandle) -> None:
    node = control_plane.unique("ground-node")
    ns = control_plane.unique("ground")
    control_plane.ensure_namespace(ns)
    control_plane.add_node(node, {"ground-test": "yes"})
    control_plane.request(
        "POST",
        f"/api/v1/namespaces/{ns}/pods",
        {
            "metadata": {"name": "pause"},
            "spec": {
                "nodeSelector": {"ground-test": "yes"},
                "containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.10"}],
            },
        },
    )
    deadline = time.monotonic() + 30
    bound_to = None
    while time.monotonic() < deadline and not bound_to:
        pod = control_plane.core.read_namespaced_pod("pause", ns)
        bound_to = pod.spec.node_name
        if not bound_to:
            time.sleep(0.1)
    assert bound_to == node


def test_version_is_current(control_plane: ClusterHandle) -> None:
    version = control_plane.request("GET", "/version")
    assert (int(version["major"]), int(version["minor"])) >= (1, 31)


def test_rbac_is_enforced_for_service_accounts(control_plane: ClusterHandle, tmp_path) -> None:  # type: ignore[no-untyped-def]
    token = control_plane.token_for("default", control_plane.unique("nobody"))
    kc = control_plane.plane.kubeconfig_for_token(token, tmp_path / "nobody.kubeconfig")
    result = control_plane.kubectl("get", "nodes", kubeconfig=kc, check=False)
    assert result.returncode != 0
    assert "forbidden" in result.stderr.lower()

"""The ground every cluster test stands on: the real scheduler binds a pod to a registered node."""

from __future__ import annotations

from pathlib import Path

from attestation.lab.binaries import K8S_VERSION
from attestation.lab.poll import wait_for
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
    bound_to = wait_for(
        "the pod bound", lambda: control_plane.core.read_namespaced_pod("pause", ns).spec.node_name
    )
    assert bound_to == node


def test_version_is_current(control_plane: ClusterHandle) -> None:
    """The API server runs the release scripts/build-control-plane.sh pins (its ldflags stamp
    the version), not whatever binaries happen to be cached."""
    version = control_plane.request("GET", "/version")
    assert version["gitVersion"] == K8S_VERSION
    minor = K8S_VERSION.removeprefix("v1.").split(".")[0]
    assert (version["major"], version["minor"]) == ("1", minor)


def test_rbac_is_enforced_for_service_accounts(
    control_plane: ClusterHandle, tmp_path: Path
) -> None:
    token = control_plane.token_for("default", control_plane.unique("nobody"))
    kc = control_plane.plane.kubeconfig_for_token(token, tmp_path / "nobody.kubeconfig")
    result = control_plane.kubectl("get", "nodes", kubeconfig=kc, check=False)
    assert result.returncode != 0
    assert "forbidden" in result.stderr.lower()

"""pytest fixtures for the real control plane (etcd + kube-apiserver + kube-scheduler +
kube-controller-manager), started once per test session."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from attestation.lab.controlplane import ControlPlane

__all__ = ["ClusterHandle", "control_plane"]


class ClusterHandle:
    """What a cluster test gets: the running control plane plus a ready API client."""

    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane
        self.kubeconfig: Path = plane.kubeconfig
        self.server = plane.server
        self.api_client: k8s.ApiClient = k8s_config.new_client_from_config(
            config_file=str(plane.kubeconfig)
        )
        self.core = k8s.CoreV1Api(self.api_client)
        self._names = itertools.count(1)
        self.kubectl = plane.kubectl
        self.token_for = plane.token_for
        self.add_node = plane.add_node
        self.ensure_namespace = plane.ensure_namespace
        self.request = plane.request
        self.get = plane.get
        self.delete = plane.delete

    def unique(self, prefix: str) -> str:
        """Names unique within the session: cluster tests share one API server."""
        return f"{prefix}-{next(self._names)}"


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterHandle]:
    workdir = tmp_path_factory.mktemp("control-plane")
    plane = ControlPlane(workdir, log=lambda msg: print(f"\n[control-plane] {msg}"))
    plane.start()
    handle = ClusterHandle(plane)
    try:
        yield handle
    finally:
        handle.api_client.close()
        plane.stop()

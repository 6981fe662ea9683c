"""Attested clusters for cluster-layer tests, on the session's control plane.

``lab_cluster`` builds on attestation.lab.cluster.LabCluster (the same pieces `make demo` runs):
simulated nodes, each a real swtpm, an IMA log written like the kernel's and a real
`trustgate agent` process, and the verifier (and optionally the webhook) as real processes with
their manifests' ServiceAccount tokens. Each lab labels its own nodes, so labs sharing the control
plane do not see each other's nodes.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from attestation.core.names import NF_LABEL
from attestation.lab.cluster import LabCluster, install_manifests, lab_node_label, manifests_dir
from attestation.lab.node import SimNode
from attestation.lab.poll import wait_for
from attestation.lab.process import ManagedProcess
from attestation.lab.swtpm import LocalCa
from tests.support.controlplane import ClusterHandle

__all__ = ["FILES", "Lab", "lab_cluster", "policy_document", "trustgate_installed", "wait_for"]

#: What the simulated nodes run, and so what the example policies allow.
FILES: dict[str, dict[str, bytes]] = {
    "host": {"/usr/bin/containerd": b"containerd 2.0", "/usr/bin/kubelet": b"kubelet 1.34"},
    "upf": {"/usr/bin/upfd": b"open5gs-upfd 2.7", "/usr/lib/libgtp5g.so": b"gtp5g"},
    "smf": {"/usr/bin/smfd": b"open5gs-smfd 2.7"},
    "amf": {"/usr/bin/amfd": b"open5gs-amfd 2.7"},
}


def policy_document(nf: str, excludes: Sequence[str] = ()) -> dict[str, Any]:
    """The SHIPPED runtime policy of ``nf`` (``manifests/policies/<nf>.yaml``), which allows
    exactly ``FILES[nf]`` and excludes nothing: every lab runs with what an operator installs,
    plus the operator's own ``excludes`` if given."""
    doc: dict[str, Any] = yaml.safe_load((manifests_dir() / "policies" / f"{nf}.yaml").read_text())
    digests = {p: [f"sha256:{hashlib.sha256(c).hexdigest()}"] for p, c in FILES[nf].items()}
    shipped = doc["spec"]["digests"]  # it may also allow its sample image's entry point
    assert all(shipped.get(p) == d for p, d in digests.items()), f"{nf}.yaml no longer fits FILES"
    if excludes:
        doc["spec"]["excludes"] = [*doc["spec"].get("excludes", []), *excludes]
    return doc


@pytest.fixture(scope="session")
def trustgate_installed(control_plane: ClusterHandle) -> ClusterHandle:
    """The namespace, CRDs and RBAC from manifests/, applied server-side."""
    install_manifests(control_plane.plane)
    return control_plane


@dataclass
class Lab:
    """What a cluster test holds: the shared control plane and this lab's system."""

    cluster: ClusterHandle
    system: LabCluster

    @property
    def nodes(self) -> dict[str, SimNode]:
        return self.system.nodes

    @property
    def audit_log(self) -> Path:
        return self.system.audit_log

    @property
    def verifier(self) -> ManagedProcess | None:
        return self.system.verifier

    def _get(self, path: str) -> dict[str, Any] | None:
        obj: dict[str, Any] | None = self.system.get(path)
        return obj

    def pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._get(f"/api/v1/namespaces/{namespace}/pods/{name}")

    def nodeattestation(self, node: str) -> dict[str, Any] | None:
        return self.system.nodeattestation(node)

    def state_of(self, node: str) -> str | None:
        return self.system.nodeattestation_state(node)

    def trusted(self, node: str) -> bool:
        """Signed by this lab's verifier, Trusted and not expired: what the webhook admits on."""
        return self.system.trusted(node)

    def create_plain_pod(self, namespace: str, name: str, node: str) -> str:
        """A pod that is no network function (``app: web``), bound to ``node``: its uid."""
        pod = self.cluster.request("POST", f"/api/v1/namespaces/{namespace}/pods", {
            "metadata": {"name": name, "labels": {"app": "web"}},
            "spec": {"nodeName": node, "containers": [{"name": "web", "image": "nginx"}]},
        })  # fmt: skip
        return str(pod["metadata"]["uid"])

    def create_nf_pod(self, namespace: str, name: str, nf: str, node: str) -> str:
        pod = self.cluster.request("POST", f"/api/v1/namespaces/{namespace}/pods", {
            "metadata": {"name": name, "labels": {NF_LABEL: nf, "nf": nf}},
            "spec": {"nodeName": node, "containers": [{"name": nf, "image": f"open5gs/{nf}"}]},
        })  # fmt: skip
        return str(pod["metadata"]["uid"])

    def events_for(self, namespace: str, name: str) -> list[dict[str, Any]]:
        events = self.cluster.request(
            "GET", f"/api/v1/namespaces/{namespace}/events"
            f"?fieldSelector=involvedObject.name%3D{name}",
        )  # fmt: skip
        return list(events.get("items") or [])


@contextlib.contextmanager
def lab_cluster(
    cluster: ClusterHandle,
    ca: LocalCa,
    workdir: Path,
    node_names: Sequence[str],
    *,
    interval: float = 0.5,
    max_age: float = 3.0,
    webhook: bool = False,
    push: bool = True,
    verifier_args: Sequence[str] = ("--eviction-deadline", "5"),
    agent_urls: Callable[[Mapping[str, SimNode]], Mapping[str, str]] | None = None,
    trusted: Sequence[str] = (),
    excludes: Mapping[str, Sequence[str]] | None = None,
) -> Iterator[Lab]:
    """Start the simulated nodes, the verifier (and the webhook); tear everything down after.

    ``agent_urls`` is called once the nodes' agents run, before the verifier starts; the URLs it
    returns replace those nodes' agents in the verifier's ``--agents`` (a hostile proxy, say).
    ``excludes``: an operator's own excludes, by network function, added to the shipped policies.
    The lab is handed over once the ``trusted`` nodes are (enrollment included: up to 60 s)."""
    label = lab_node_label(workdir.name)
    system = LabCluster(workdir, cluster.plane, node_label=label, tpm_ca=ca, log=lambda _m: None)
    try:
        system.start()
        system.write_policies(
            {nf: policy_document(nf, (excludes or {}).get(nf, ())) for nf in FILES}
        )
        for name in node_names:
            system.add_node(name, FILES["host"], push=push)
        if webhook:
            system.start_webhook()
        if agent_urls is not None:
            system.agent_urls.update(agent_urls(system.nodes))  # restarts keep them too
        system.start_verifier(interval=interval, max_age=max_age, extra_args=verifier_args)
        for name in trusted:
            wait_for(f"{name} trusted", functools.partial(system.trusted, name), 60)
        yield Lab(cluster, system)
    finally:
        system.stop()

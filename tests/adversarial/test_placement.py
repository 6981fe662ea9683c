"""Where the verifier and the webhook run decides who can take their secrets: root on a node holds
that node's kubelet credentials (``system:node:<name>``), and the API server's Node authorizer
lets a kubelet read exactly the Secrets, and mint exactly the ServiceAccount tokens, of the pods
bound to its node. So the signing key is as safe as the nodes the verifier's pods land on.

Against the real API server (Node authorizer + NodeRestriction on, the real scheduler, the
Deployments as the kustomize base renders them; there is no kubelet, so bound pods stay Pending,
which is all the Node authorizer looks at): a system node X (label and taint an administrator
sets) and a worker Y (an NF node). Y's kubelet credentials, real client certificates from the
lab's cluster CA, can neither read the signing key nor mint the verifier's token, nor label Y into
the system pool; X's can, and only while a verifier pod is bound to X.
"""

from __future__ import annotations

import base64
import contextlib
import json
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from attestation.core.names import CORE_NODE_LABEL, SYSTEM_NODE_LABEL
from attestation.lab.cluster import MANIFESTS, NAMESPACE
from attestation.lab.pki import CertFiles
from attestation.lab.planecerts import kubelet_client
from attestation.lab.poll import wait_for
from tests.support.controlplane import ClusterHandle

X, Y = "placement-system", "placement-worker"
KEY_SECRET = f"/api/v1/namespaces/{NAMESPACE}/secrets/trustgate-signing-key"
COMPONENTS = ("trustgate-verifier", "trustgate-webhook")
PODS = f"/api/v1/namespaces/{NAMESPACE}/pods"


class Kubelet:
    """Node ``name``'s kubelet client certificate, used directly against the API server."""

    def __init__(self, cluster: ClusterHandle, files: CertFiles) -> None:
        self._server = cluster.server
        self._ctx = ssl.create_default_context(cafile=str(cluster.plane.ca_file))
        self._ctx.load_cert_chain(str(files.cert), str(files.key))

    def status(self, method: str, path: str, body: Any = None, ctype: str = "") -> int:
        request = urllib.request.Request(  # noqa: S310 - our own API server
            f"{self._server}{path}",
            data=None if body is None else json.dumps(body).encode(),
            method=method,
            headers={"Content-Type": ctype or "application/json"},
        )
        try:
            with urllib.request.urlopen(request, context=self._ctx, timeout=10) as response:  # noqa: S310
                return int(response.status)
        except urllib.error.HTTPError as e:
            return int(e.code)


def _deployments(cluster: ClusterHandle) -> list[dict[str, Any]]:
    docs = yaml.safe_load_all(cluster.kubectl("kustomize", str(MANIFESTS)).stdout)
    return [d for d in docs if d and d["kind"] == "Deployment"]


def _pods(cluster: ClusterHandle) -> list[dict[str, Any]]:
    items = cluster.request("GET", PODS)["items"]
    return [
        p for p in items
        if (p["metadata"].get("labels") or {}).get("app.kubernetes.io/name") in COMPONENTS
    ]  # fmt: skip


def _remove_workloads(cluster: ClusterHandle) -> None:
    for name in COMPONENTS:
        cluster.delete(f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{name}")

    def gone() -> bool:
        for pod in _pods(cluster):  # no kubelet finishes a graceful deletion: force it
            with contextlib.suppress(urllib.error.HTTPError):
                cluster.request(
                    "DELETE", f"{PODS}/{pod['metadata']['name']}", {"gracePeriodSeconds": 0}
                )
        return not _pods(cluster)

    wait_for("trustgate's pods gone", gone, timeout=30)


@pytest.fixture(scope="module")
def placed(
    trustgate_installed: ClusterHandle, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ClusterHandle, Kubelet, Kubelet]]:
    cluster = trustgate_installed
    work: Path = tmp_path_factory.mktemp("placement")
    system_taint = {"key": SYSTEM_NODE_LABEL, "value": "true", "effect": "NoSchedule"}
    cluster.plane.add_node(X, {SYSTEM_NODE_LABEL: "true"}, taints=[system_taint])
    cluster.add_node(Y, {CORE_NODE_LABEL: "true"})
    key = base64.b64encode(b"-----BEGIN PRIVATE KEY-----\n(lab)\n").decode()
    cluster.plane.create(
        f"/api/v1/namespaces/{NAMESPACE}/secrets",
        {"metadata": {"name": "trustgate-signing-key"}, "data": {"key.pem": key}},
    )
    _remove_workloads(cluster)
    cluster.kubectl(
        "apply", "--server-side", "-f", "-",
        input="\n---\n".join(yaml.safe_dump(d) for d in _deployments(cluster)),
    )  # fmt: skip
    ca = cluster.plane.certs.ca
    kubelets = (Kubelet(cluster, kubelet_client(ca, work, X)),
                Kubelet(cluster, kubelet_client(ca, work, Y)))  # fmt: skip
    try:
        yield cluster, *kubelets
    finally:
        _remove_workloads(cluster)
        cluster.delete(KEY_SECRET)
        for node in (X, Y):
            cluster.delete(f"/api/v1/nodes/{node}")


def _bound(cluster: ClusterHandle) -> dict[str, str] | None:
    """Pod name -> node, once all four replicas are bound."""
    pods = _pods(cluster)
    nodes = {p["metadata"]["name"]: p["spec"].get("nodeName") or "" for p in pods}
    return nodes if len(nodes) == 4 and all(nodes.values()) else None


def test_verifier_and_webhook_are_scheduled_only_onto_the_system_node(
    placed: tuple[ClusterHandle, Kubelet, Kubelet],
) -> None:
    cluster, _, _ = placed
    nodes = wait_for("the scheduler to bind trustgate's replicas", lambda: _bound(cluster), 60)
    assert set(nodes.values()) == {X}, nodes


def test_a_worker_nodes_credentials_cannot_read_the_signing_key_or_mint_the_verifiers_token(
    placed: tuple[ClusterHandle, Kubelet, Kubelet],
) -> None:
    cluster, x, y = placed
    nodes = wait_for("bound", lambda: _bound(cluster), 60)
    verifier = next(
        p for p in _pods(cluster) if p["metadata"]["name"] in nodes
        and p["metadata"]["labels"]["app.kubernetes.io/name"] == "trustgate-verifier"
    )  # fmt: skip
    token_request = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {"boundObjectRef": {"kind": "Pod", "apiVersion": "v1",
                                    "name": verifier["metadata"]["name"],
                                    "uid": verifier["metadata"]["uid"]}},
    }  # fmt: skip
    token_path = f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts/trustgate-verifier/token"

    assert y.status("GET", KEY_SECRET) == 403
    assert y.status("POST", token_path, token_request) == 403
    # The system node can, because a verifier pod is bound to it: what root there still gets.
    assert wait_for("X may read the key", lambda: x.status("GET", KEY_SECRET) == 200, 20)
    assert x.status("POST", token_path, token_request) == 201


def test_a_worker_cannot_label_itself_into_the_system_pool(
    placed: tuple[ClusterHandle, Kubelet, Kubelet],
) -> None:
    cluster, _, y = placed
    merge = "application/merge-patch+json"
    join = {"metadata": {"labels": {SYSTEM_NODE_LABEL: "true"}}}
    assert y.status("PATCH", f"/api/v1/nodes/{Y}", join, merge) == 403
    # Why the node-restriction.kubernetes.io/ prefix: a label of any other domain, a kubelet
    # may set on its own Node, and a pool selected by it would take root on Y's word.
    anywhere = {"metadata": {"labels": {"example.com/trustgate-system": "true"}}}
    assert y.status("PATCH", f"/api/v1/nodes/{Y}", anywhere, merge) == 200
    # Nor can it touch the system node's taint or label.
    untaint = {"spec": {"taints": None}}
    assert y.status("PATCH", f"/api/v1/nodes/{X}", untaint, merge) == 403
    assert cluster.get(f"/api/v1/nodes/{Y}")["metadata"]["labels"].get(SYSTEM_NODE_LABEL) is None


def test_the_system_nodes_access_ends_with_the_pods(
    placed: tuple[ClusterHandle, Kubelet, Kubelet],
) -> None:
    cluster, x, _ = placed
    wait_for("bound", lambda: _bound(cluster), 60)
    assert wait_for("X may read the key", lambda: x.status("GET", KEY_SECRET) == 200, 20)
    _remove_workloads(cluster)
    assert wait_for("X refused", lambda: x.status("GET", KEY_SECRET) == 403, 20)

"""What a stolen trustgate token can do, against the real API server: the verifier's and the
webhook's ServiceAccount tokens (TokenRequest, exactly what their pods hold) try what RBAC grants
them in verb but not in purpose, and trustgate's own work is done with the same tokens.

RBAC grants ``patch pods`` and ``patch nodes`` cluster-wide, ``patch`` on the two webhook
configurations and ``create secrets`` in trustgate-system; it cannot say which fields. The
ValidatingAdmissionPolicies in manifests/admission-policies.yaml can, and ``install_manifests``
applies them like every lab does.
"""

from __future__ import annotations

import base64
import contextlib
import urllib.error
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from attestation.adapters.kube import (
    Kube,
    KubeError,
    load_api_client,
    node_path,
    pod_path,
    secret_path,
    webhook_configuration_path,
)
from attestation.core.names import ATTESTED_LABEL, NF_LABEL, SCHEDULING_GATE, UNTRUSTED_TAINT
from attestation.lab.cluster import (
    NAMESPACE,
    register_webhooks,
    service_account_kubeconfig,
    unregister_webhooks,
)
from attestation.lab.process import free_port
from tests.support.controlplane import ClusterHandle

NS = "least-privilege"
NODE = "least-privilege-node"
TLS_SECRET = "trustgate-webhook-tls"


class Identity:
    """One ServiceAccount's client: ``status(call)`` is the HTTP status the API server answers."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube

    def status(self, method: str, path: str, body: Any = None) -> int:
        try:
            if method == "MERGE":
                self.kube.merge_patch(path, body)
            elif method == "JSON":
                self.kube.json_patch(path, body)
            elif method == "POST":
                self.kube.create(path, body)
            elif method == "DELETE":
                self.kube.call("DELETE", path)
            elif method == "EVICT":
                ns, name = body
                self.kube.evict(ns, name)
            else:
                raise AssertionError(method)
        except KubeError as e:
            self.last_error = str(e)
            return e.status
        return 200


@pytest.fixture(scope="module")
def cluster(
    trustgate_installed: ClusterHandle, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ClusterHandle]:
    c = trustgate_installed
    c.ensure_namespace(NS)
    c.add_node(NODE, {"example.com/rack": "r1"})
    c.request(
        "PATCH", node_path(NODE),
        {"spec": {"taints": [{"key": "example.com/maintenance", "effect": "NoSchedule"}]}},
        content_type="application/merge-patch+json",
    )  # fmt: skip
    try:
        yield c
    finally:
        c.delete(node_path(NODE))
        c.delete(f"/api/v1/namespaces/{NS}")
        for name in ("lp-victim", "lp-evictable"):
            _remove_pod(c, "kube-system", name)


def _identity(cluster: ClusterHandle, sa: str, directory: Path) -> Iterator[Identity]:
    kube = Kube(load_api_client(service_account_kubeconfig(cluster.plane, sa, directory)))
    try:
        yield Identity(kube)
    finally:
        kube.close()


@pytest.fixture(scope="module")
def verifier(
    cluster: ClusterHandle, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Identity]:
    yield from _identity(cluster, "trustgate-verifier", tmp_path_factory.mktemp("lp-verifier"))


@pytest.fixture(scope="module")
def webhook(cluster: ClusterHandle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Identity]:
    yield from _identity(cluster, "trustgate-webhook", tmp_path_factory.mktemp("lp-webhook"))


def _pod(
    cluster: ClusterHandle,
    namespace: str,
    name: str,
    labels: Mapping[str, str],
    *,
    gates: Sequence[str] = (),
) -> None:
    _remove_pod(cluster, namespace, name)
    spec: dict[str, Any] = {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]}
    if gates:
        spec["schedulingGates"] = [{"name": g} for g in gates]
    else:
        spec["nodeName"] = NODE
    body = {"metadata": {"name": name, "labels": dict(labels)}, "spec": spec}
    cluster.request("POST", pod_path(namespace), body)


def _remove_pod(cluster: ClusterHandle, namespace: str, name: str) -> None:
    """Gone at once: there is no kubelet to finish a graceful deletion."""
    with contextlib.suppress(urllib.error.HTTPError):
        cluster.request("DELETE", pod_path(namespace, name), {"gracePeriodSeconds": 0})


def _refused(identity: Identity, method: str, path: str, body: Any = None) -> str:
    status = identity.status(method, path, body)
    assert status == 403, f"{method} {path} {body!r}: not refused ({status})"
    return identity.last_error


# -- the verifier's token --------------------------------------------------------------------------

SYSTEM_POD_PATCHES: Sequence[tuple[str, Any]] = [
    # swap the image of a privileged kube-system pod (the review's headline attack)
    ("JSON", [{"op": "replace", "path": "/spec/containers/0/image", "value": "evil.example/x"}]),
    # even trustgate's own annotation: the verifier has no business in kube-system
    ("MERGE", {"metadata": {"annotations": {"trustgate.io/reason": "x"}}}),
]


@pytest.mark.parametrize(("method", "body"), SYSTEM_POD_PATCHES, ids=["image", "annotation"])
def test_verifier_token_cannot_patch_a_kube_system_pod(
    cluster: ClusterHandle, verifier: Identity, method: str, body: Any
) -> None:
    _pod(cluster, "kube-system", "lp-victim", {"k8s-app": "kube-proxy"})
    message = _refused(verifier, method, pod_path("kube-system", "lp-victim"), body)
    assert "trustgate" in message
    pod = cluster.get(pod_path("kube-system", "lp-victim"))
    assert pod["spec"]["containers"][0]["image"] == "registry.k8s.io/pause:3.10"


TOLERATE_ALL = {"operator": "Exists"}
NF_POD_PATCHES: Sequence[tuple[str, str, Any]] = [
    ("image", "JSON", [{"op": "replace", "path": "/spec/containers/0/image", "value": "evil/upf"}]),
    ("label", "MERGE", {"metadata": {"labels": {"app": "web"}}}),
    ("nf-label", "MERGE", {"metadata": {"labels": {NF_LABEL: "amf"}}}),
    ("other-annotation", "MERGE", {"metadata": {"annotations": {"example.com/x": "y"}}}),
    ("toleration", "JSON", [{"op": "add", "path": "/spec/tolerations/-", "value": TOLERATE_ALL}]),
    ("deadline", "MERGE", {"spec": {"activeDeadlineSeconds": 1}}),
    ("finalizer", "MERGE", {"metadata": {"finalizers": ["example.com/hold"]}}),
]


@pytest.mark.parametrize(
    ("method", "body"), [(m, b) for _, m, b in NF_POD_PATCHES], ids=[i for i, *_ in NF_POD_PATCHES]
)
def test_verifier_token_cannot_change_an_nf_pod_beyond_trustgates_fields(
    cluster: ClusterHandle, verifier: Identity, method: str, body: Any
) -> None:
    _pod(cluster, NS, "upf-1", {NF_LABEL: "upf", "app": "upf"})
    _refused(verifier, method, pod_path(NS, "upf-1"), body)


def test_verifier_token_cannot_add_another_scheduling_gate_or_lift_a_foreign_one(
    cluster: ClusterHandle, verifier: Identity
) -> None:
    _pod(cluster, NS, "gated", {NF_LABEL: "upf"}, gates=(SCHEDULING_GATE, "example.com/hold"))
    _refused(verifier, "JSON", pod_path(NS, "gated"), [
        {"op": "remove", "path": "/spec/schedulingGates/1"},
    ])  # fmt: skip


def test_verifiers_own_pod_work_is_still_allowed(
    cluster: ClusterHandle, verifier: Identity
) -> None:
    _pod(cluster, NS, "gated-nf", {NF_LABEL: "amf", "app": "amf"}, gates=(SCHEDULING_GATE,))
    path = pod_path(NS, "gated-nf")
    annotations = {"trustgate.io/trust-state": "Trusted", "trustgate.io/reason": "ok"}
    assert verifier.status("MERGE", path, {"metadata": {"annotations": annotations}}) == 200
    assert verifier.status("MERGE", path, {"metadata": {"annotations": {
        "trustgate.io/reason": None}}}) == 200  # fmt: skip
    ungate = [
        {"op": "test", "path": "/spec/schedulingGates/0/name", "value": SCHEDULING_GATE},
        {"op": "remove", "path": "/spec/schedulingGates/0"},
    ]
    assert verifier.status("JSON", path, ungate) == 200
    pod = cluster.get(path)
    assert not pod["spec"].get("schedulingGates")
    assert pod["metadata"]["annotations"]["trustgate.io/trust-state"] == "Trusted"


NODE_PATCHES: Sequence[tuple[str, Any]] = [
    ("noexecute", [{"key": UNTRUSTED_TAINT, "value": "true", "effect": "NoExecute"}]),
    ("other-taint", [{"key": "example.com/evil", "effect": "NoExecute"}]),
    ("drop-taints", None),
]


@pytest.mark.parametrize(("what", "added"), NODE_PATCHES, ids=[n for n, _ in NODE_PATCHES])
def test_verifier_token_cannot_set_any_taint_but_its_noschedule_one(
    cluster: ClusterHandle, verifier: Identity, what: str, added: Any
) -> None:
    node = cluster.get(node_path(NODE))
    current = node["spec"].get("taints") or []
    taints = None if added is None else [*current, *added]
    _refused(verifier, "MERGE", node_path(NODE), {"spec": {"taints": taints}})
    assert cluster.get(node_path(NODE))["spec"].get("taints") == current


@pytest.mark.parametrize(
    "patch",
    [
        {"metadata": {"labels": {"example.com/rack": "r2"}}},
        {"metadata": {"labels": {"node-restriction.kubernetes.io/trustgate-5g-core": "true"}}},
        {"metadata": {"annotations": {"example.com/x": "y"}}},
        {"spec": {"unschedulable": True}},
    ],
    ids=["label", "selector-label", "annotation", "cordon"],
)
def test_verifier_token_cannot_change_other_node_fields(
    cluster: ClusterHandle, verifier: Identity, patch: dict[str, Any]
) -> None:
    _refused(verifier, "MERGE", node_path(NODE), patch)


def test_verifiers_own_node_work_is_still_allowed(
    cluster: ClusterHandle, verifier: Identity
) -> None:
    node = cluster.get(node_path(NODE))
    others = [t for t in node["spec"].get("taints") or [] if t["key"] != UNTRUSTED_TAINT]
    untrusted = {"key": UNTRUSTED_TAINT, "value": "true", "effect": "NoSchedule"}
    patch = {"metadata": {"labels": {ATTESTED_LABEL: "false"}}, "spec": {"taints": [
        *others, untrusted]}}  # fmt: skip
    assert verifier.status("MERGE", node_path(NODE), patch) == 200
    patch = {"metadata": {"labels": {ATTESTED_LABEL: "true"}}, "spec": {"taints": others}}
    assert verifier.status("MERGE", node_path(NODE), patch) == 200
    node = cluster.get(node_path(NODE))
    assert node["metadata"]["labels"][ATTESTED_LABEL] == "true"
    assert node["spec"]["taints"] == others


def test_verifier_token_cannot_evict_or_delete_system_or_non_nf_pods(
    cluster: ClusterHandle, verifier: Identity
) -> None:
    _pod(cluster, "kube-system", "lp-evictable", {"k8s-app": "kube-dns"})
    _refused(verifier, "EVICT", "", ("kube-system", "lp-evictable"))
    _refused(verifier, "DELETE", pod_path("kube-system", "lp-evictable"))
    _pod(cluster, NS, "web", {"app": "web"})
    _refused(verifier, "DELETE", pod_path(NS, "web"))
    assert cluster.get(pod_path("kube-system", "lp-evictable")) is not None
    assert cluster.get(pod_path(NS, "web")) is not None


def test_verifier_token_still_evicts_and_deletes_nf_pods(
    cluster: ClusterHandle, verifier: Identity
) -> None:
    _pod(cluster, NS, "upf-evict", {NF_LABEL: "upf", "app": "upf"})
    assert verifier.status("EVICT", "", (NS, "upf-evict")) == 200
    _pod(cluster, NS, "upf-delete", {"app": "open5gs-upf"})
    assert verifier.status("DELETE", pod_path(NS, "upf-delete")) == 200


# -- the webhook's token ---------------------------------------------------------------------------


@pytest.fixture
def configurations(cluster: ClusterHandle) -> Iterator[None]:
    register_webhooks(cluster.plane, free_port())
    try:
        yield
    finally:
        unregister_webhooks(cluster.plane)


EVERYTHING = [{"apiGroups": ["*"], "apiVersions": ["*"], "operations": ["*"], "resources": ["*/*"]}]
WEBHOOK_EDITS: Sequence[tuple[str, Any]] = [
    ("rules-everything", [{"op": "replace", "path": "/webhooks/0/rules", "value": EVERYTHING}]),
    ("failure-policy", [{"op": "replace", "path": "/webhooks/0/failurePolicy", "value": "Ignore"}]),
    (
        "namespace-selector",
        [{"op": "replace", "path": "/webhooks/0/namespaceSelector", "value": {}}],
    ),
    (
        "url",
        [{"op": "replace", "path": "/webhooks/0/clientConfig/url", "value": "https://x.example"}],
    ),
    ("match-conditions", [{"op": "remove", "path": "/webhooks/0/matchConditions"}]),
    ("label", [{"op": "add", "path": "/metadata/labels/example.com~1x", "value": "y"}]),
]


@pytest.mark.parametrize("kind", ["mutating", "validating"])
@pytest.mark.parametrize(("what", "ops"), WEBHOOK_EDITS, ids=[w for w, _ in WEBHOOK_EDITS])
@pytest.mark.usefixtures("configurations")
def test_webhook_token_cannot_change_its_configurations_beyond_ca_bundle(
    cluster: ClusterHandle, webhook: Identity, kind: str, what: str, ops: Any
) -> None:
    path = webhook_configuration_path(kind, "trustgate")
    before = cluster.get(path)
    _refused(webhook, "JSON", path, ops)
    assert cluster.get(path)["webhooks"] == before["webhooks"]


@pytest.mark.usefixtures("configurations")
def test_webhook_token_still_sets_the_ca_bundle(cluster: ClusterHandle, webhook: Identity) -> None:
    bundle = base64.b64encode(b"-----BEGIN CERTIFICATE-----\n").decode()
    for kind in ("mutating", "validating"):
        path = webhook_configuration_path(kind, "trustgate")
        ops = [{"op": "add", "path": "/webhooks/0/clientConfig/caBundle", "value": bundle}]
        assert webhook.status("JSON", path, ops) == 200
        assert cluster.get(path)["webhooks"][0]["clientConfig"]["caBundle"] == bundle


def _secret(name: str, secret_type: str, **extra: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, **extra}, "type": secret_type, "data": {}}


def test_webhook_token_cannot_create_an_arbitrary_secret(
    cluster: ClusterHandle, webhook: Identity
) -> None:
    path = f"/api/v1/namespaces/{NAMESPACE}/secrets"
    _refused(webhook, "POST", path, _secret("anything", "Opaque"))
    _refused(webhook, "POST", path, _secret("", "Opaque", generateName="anything-"))
    assert cluster.get(secret_path(NAMESPACE, "anything")) is None


def test_webhook_token_cannot_mint_a_token_secret_under_its_own_name(
    cluster: ClusterHandle, webhook: Identity
) -> None:
    """The one name it may read: a ``service-account-token`` Secret of that name would be filled
    by the token controller with the verifier's token, which the webhook could then read."""
    existing = cluster.get(secret_path(NAMESPACE, TLS_SECRET))
    cluster.delete(secret_path(NAMESPACE, TLS_SECRET))
    try:
        body = _secret(
            TLS_SECRET, "kubernetes.io/service-account-token",
            annotations={"kubernetes.io/service-account.name": "trustgate-verifier"},
        )  # fmt: skip
        _refused(webhook, "POST", f"/api/v1/namespaces/{NAMESPACE}/secrets", body)
        assert cluster.get(secret_path(NAMESPACE, TLS_SECRET)) is None
    finally:
        cluster.delete(secret_path(NAMESPACE, TLS_SECRET))
        if existing is not None:
            meta = {k: v for k, v in existing["metadata"].items() if k in {"name", "labels"}}
            cluster.request(
                "POST", f"/api/v1/namespaces/{NAMESPACE}/secrets", {**existing, "metadata": meta}
            )


def test_webhook_token_still_creates_its_own_tls_secret(
    cluster: ClusterHandle, webhook: Identity
) -> None:
    existing = cluster.get(secret_path(NAMESPACE, TLS_SECRET))
    if existing is not None:
        pytest.skip("the webhook's Secret exists (another test's replica made it)")
    body = {**_secret(TLS_SECRET, "kubernetes.io/tls"), "data": {"tls.crt": "", "tls.key": ""}}
    try:
        assert webhook.status("POST", f"/api/v1/namespaces/{NAMESPACE}/secrets", body) == 200
    finally:
        cluster.delete(secret_path(NAMESPACE, TLS_SECRET))

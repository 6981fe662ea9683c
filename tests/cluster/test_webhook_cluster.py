"""The real kube-apiserver and kube-scheduler calling trustgate's webhook over TLS.

The webhook runs in-process under uvicorn on 127.0.0.1 with the manifests' configurations pointed
at it by URL; its trust comes from a real NodeAttestation watch and its pod look-ups from the API
(attestation.adapters.kube). NodeAttestations are signed with a test verifier key.
"""

from __future__ import annotations

import functools
import json
import threading
import urllib.error
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from attestation.adapters.kube import Kube, Resource, nodeattestation_path
from attestation.core.names import (
    ATTESTED_LABEL,
    NF_LABEL,
    NODEATTESTATION_API_VERSION,
    NODEATTESTATION_KIND,
    SCHEDULING_GATE,
    TRUST_STATE_ANNOTATION,
)
from attestation.core.nodeattestation import bind
from attestation.core.signing import public_keys_by_id, sign_status
from attestation.lab.cluster import (
    NAMESPACE,
    register_webhooks,
    service_account_kubeconfig,
    unregister_webhooks,
)
from attestation.lab.pki import CertificateAuthority
from attestation.lab.poll import wait_for
from attestation.lab.process import free_port
from tests.support.controlplane import ClusterHandle
from tests.unit.webhook_data import CLUSTER, status
from webhook.app import create_app, server_config
from webhook.settings import WebhookSettings

VERIFIER_SA = "trustgate-verifier"
KEY = Ed25519PrivateKey.generate()


@dataclass
class Webhook:
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@dataclass
class Env:
    cluster: ClusterHandle
    kube: Kube
    ns: str
    open_ns: str
    webhook: Webhook
    verifier_kubeconfig: Path

    def pods(self, ns: str | None = None) -> str:
        return f"/api/v1/namespaces/{ns or self.ns}/pods"

    def create_pod(
        self, name: str, labels: dict[str, str], ns: str | None = None, **spec: Any
    ) -> Any:
        body = {
            "metadata": {"name": name, "labels": labels},
            "spec": {
                "containers": [{"name": "main", "image": "registry.k8s.io/pause:3.10"}],
                **spec,
            },
        }
        return self.cluster.request("POST", self.pods(ns), body)

    def pod(self, name: str, ns: str | None = None) -> Any:
        return self.cluster.request("GET", f"{self.pods(ns)}/{name}")

    def attest(self, node: str, state: str = "Trusted") -> None:
        verdict = status(
            state, reason="test verdict", verified=datetime.now(UTC), ttl=timedelta(minutes=10)
        )
        path = nodeattestation_path(node)
        obj = self.kube.get(path)
        if obj is None:
            body = {
                "apiVersion": NODEATTESTATION_API_VERSION,
                "kind": NODEATTESTATION_KIND,
                "metadata": {"name": node},
            }
            obj = self.kube.create(nodeattestation_path(), body)
        signed = sign_status(node, bind(verdict, CLUSTER, obj["metadata"]["uid"]), KEY)
        self.kube.merge_patch(f"{path}/status", {"status": signed})


@pytest.fixture(scope="module")
def env(
    trustgate_installed: ClusterHandle, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Env]:
    cluster = trustgate_installed
    work = tmp_path_factory.mktemp("webhook")
    kube = Kube(cluster.api_client)
    wait_for("the NodeAttestation CRD", lambda: _served(kube), 60)
    ns, open_ns = cluster.unique("core5g"), cluster.unique("plain")
    cluster.ensure_namespace(ns, {"trustgate.io/protected": "true"})
    cluster.ensure_namespace(open_ns)
    verifier_kubeconfig = service_account_kubeconfig(cluster.plane, VERIFIER_SA, work)
    cluster.kubectl(
        "create",
        "clusterrole",
        "trustgate-verifier-test",
        "--verb=get,patch,update",
        "--resource=pods",
        check=False,
    )
    cluster.kubectl(
        "create",
        "clusterrolebinding",
        "trustgate-verifier-test",
        "--clusterrole=trustgate-verifier-test",
        f"--serviceaccount={NAMESPACE}:{VERIFIER_SA}",
        check=False,
    )
    ca = CertificateAuthority.create(work, "webhook-test-ca")
    cert = ca.issue(work, "webhook", "127.0.0.1", ip_addresses=("127.0.0.1",), server=True)
    settings = WebhookSettings(
        verifier_keys=public_keys_by_id([KEY.public_key()]),
        cluster_id=CLUSTER,
        max_verdict_validity=timedelta(minutes=15),  # attest() signs for 10 minutes
        verifier_username=f"system:serviceaccount:{NAMESPACE}:{VERIFIER_SA}",
        host="127.0.0.1",
        port=free_port(),
        tls_cert_file=str(cert.cert),
        tls_key_file=str(cert.key),
    )
    app = create_app(
        settings, trust_source=Resource(kube, nodeattestation_path()), pod_lookup=kube.get_pod
    )
    config = server_config(app, settings)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    webhook = Webhook(server, thread)
    try:
        wait_for("the webhook to start", lambda: server.started, 10)
        wait_for("the NodeAttestation view to sync", lambda: app.state.trust_view.synced, 10)
        register_webhooks(cluster.plane, settings.port, ca.files.cert.read_bytes())
        e = Env(
            cluster,
            kube,
            ns,
            open_ns,
            webhook,
            verifier_kubeconfig,
        )
        wait_for("the webhooks to take effect", lambda: _mutated_probe(e), 30)
        yield e
    finally:
        unregister_webhooks(cluster.plane)
        webhook.stop()


def _served(kube: Kube) -> bool:
    try:
        kube.list(nodeattestation_path())
    except Exception:
        return False
    return True


def _mutated_probe(env: Env) -> bool:
    probe = {
        "metadata": {"name": "probe", "labels": {"app": "upf"}},
        "spec": {"containers": [{"name": "c", "image": "i"}]},
    }
    pod = env.cluster.request("POST", env.pods() + "?dryRun=All", probe)
    return bool(pod["spec"].get("schedulingGates"))


def _scheduled_condition(pod: Any) -> dict[str, Any]:
    for condition in pod.get("status", {}).get("conditions") or []:
        if condition["type"] == "PodScheduled":
            return dict(condition)
    return {}


def _events_for(env: Env, name: str) -> str:
    events = env.cluster.request("GET", f"/api/v1/namespaces/{env.ns}/events")
    return "\n".join(
        e.get("message", "") for e in events["items"] if e["involvedObject"].get("name") == name
    )


def _remove_gate_as(env: Env, name: str, kubeconfig: Path | None) -> Any:
    patch = json.dumps([{"op": "remove", "path": "/spec/schedulingGates/0"}])
    return env.cluster.kubectl(
        "-n",
        env.ns,
        "patch",
        "pod",
        name,
        "--type=json",
        "-p",
        patch,
        kubeconfig=kubeconfig,
        check=False,
    )


def test_nf_pod_is_gated_until_an_attested_node_exists_then_binds_only_there(env: Env) -> None:
    stale, good = env.cluster.unique("stale"), env.cluster.unique("good")
    # Only this test's two nodes are candidates: other tests' nodes in the shared control plane
    # would otherwise take the scheduler's retries.
    mine = {"trustgate.test/webhook": stale}
    # A node labelled attested without a NodeAttestation: affinity matches, the binding must not.
    env.cluster.add_node(stale, {ATTESTED_LABEL: "true", **mine})
    env.create_pod("upf-a", {"app": "free5gc-upf"}, nodeSelector=mine)
    pod = env.pod("upf-a")
    assert pod["spec"]["schedulingGates"] == [{"name": SCHEDULING_GATE}]
    assert pod["metadata"]["labels"][NF_LABEL] == "upf"
    assert pod["metadata"]["annotations"][TRUST_STATE_ANNOTATION] == "pending"
    wait_for(
        "SchedulingGated",
        lambda: _scheduled_condition(env.pod("upf-a")).get("reason") == "SchedulingGated",
        30,
    )

    # Nobody but the verifier may lift the gate; the kube-scheduler never does.
    refused = _remove_gate_as(env, "upf-a", None)
    assert refused.returncode != 0
    assert "only the trustgate verifier may change" in refused.stderr
    lifted = _remove_gate_as(env, "upf-a", env.verifier_kubeconfig)
    assert lifted.returncode == 0, lifted.stderr

    # The scheduler picks the stale node; the webhook refuses the binding.
    wait_for(
        "the binding to the stale node to be refused",
        lambda: f"node {stale} has no NodeAttestation" in _events_for(env, "upf-a"),
        60,
    )
    assert not env.pod("upf-a")["spec"].get("nodeName")

    # A signed Trusted verdict for another node: the pod binds there, never to the stale one.
    env.cluster.add_node(good, {ATTESTED_LABEL: "true", **mine})
    env.attest(good)
    node = wait_for("the pod to bind", lambda: env.pod("upf-a")["spec"].get("nodeName"), 90)
    assert node == good


def test_nodename_preset_on_untrusted_node_is_rejected_at_create(env: Env) -> None:
    bad, good = env.cluster.unique("bad"), env.cluster.unique("trusted")
    env.cluster.add_node(bad)
    env.cluster.add_node(good)
    env.attest(bad, "Untrusted")
    env.attest(good)
    with pytest.raises(urllib.error.HTTPError) as refused:
        env.create_pod("smf-pinned", {"nf": "smf"}, nodeName=bad)
    body = refused.value.read().decode()
    assert refused.value.code == 403
    assert f"node {bad} is not attested (Untrusted): test verdict" in body
    wait_for("the watch to see the trusted node", lambda: _create_pinned(env, good), 10)
    assert env.pod("smf-ok")["spec"]["nodeName"] == good


def _create_pinned(env: Env, node: str) -> bool:
    try:
        env.create_pod("smf-ok", {"nf": "smf"}, nodeName=node)
    except urllib.error.HTTPError:
        return False
    return True


def test_non_nf_pod_schedules_anywhere(env: Env) -> None:
    plain = env.cluster.unique("plain-node")
    env.cluster.add_node(plain, {"plain": "yes"})
    env.create_pod("nginx", {"app": "nginx"}, nodeSelector={"plain": "yes"})
    assert not env.pod("nginx")["spec"].get("schedulingGates")
    assert wait_for("nginx to bind", lambda: env.pod("nginx")["spec"].get("nodeName"), 60) == plain


def test_webhook_down_refuses_nf_pods_only(env: Env) -> None:
    env.create_pod("upf-up", {"app": "upf"})
    env.create_pod("web", {"app": "web"})
    env.webhook.stop()
    with pytest.raises(urllib.error.HTTPError) as refused:
        env.create_pod("upf-down", {"app": "upf"})
    assert refused.value.code == 500
    assert "trustgate" in refused.value.read().decode()
    # Pods that are not NFs never reach the webhook (matchConditions), in any namespace: a
    # plain pod is relabelled (staying plain) and debugged as ever ...
    _relabel(env, "web", {"app": "web2", "tier": "front"})
    _debug(env, "web")
    # ... while the UPDATEs that would make it an NF, or debug an NF, are sent (and so refused).
    for sent in (
        functools.partial(_relabel, env, "web", {"app": "upf"}),
        functools.partial(_debug, env, "upf-up"),
    ):
        with pytest.raises(urllib.error.HTTPError) as refused:
            sent()
        assert refused.value.code == 500
        assert "validate.pods.trustgate.io" in refused.value.read().decode()
    env.create_pod("web", {"app": "web"}, ns=env.open_ns)
    assert wait_for(
        "the open namespace's pod to bind",
        lambda: env.pod("web", env.open_ns)["spec"].get("nodeName"),
        60,
    )


def _relabel(env: Env, name: str, labels: dict[str, str]) -> Any:
    return env.cluster.request(
        "PATCH", f"{env.pods()}/{name}", {"metadata": {"labels": labels}},
        content_type="application/merge-patch+json",
    )  # fmt: skip


def _debug(env: Env, name: str) -> Any:
    """What ``kubectl debug`` sends: a strategic merge patch of the ephemeralcontainers
    subresource."""
    debugger = {"name": "debugger", "image": "busybox", "targetContainerName": "main"}
    return env.cluster.request(
        "PATCH", f"{env.pods()}/{name}/ephemeralcontainers",
        {"spec": {"ephemeralContainers": [debugger]}},
        content_type="application/strategic-merge-patch+json",
    )  # fmt: skip

"""Self-managed TLS against the real kube-apiserver: `trustgate webhook --self-signed-tls`
processes with the webhook ServiceAccount's token create the Secret, patch the caBundle into the
manifests' configurations (registered by URL, without one), and the API server then calls them
over TLS; a second replica serves the same certificate; a certificate seeded close to expiry is
renewed by the replicas racing on the Secret and the API server accepts the new one.
"""

from __future__ import annotations

import logging
import socket
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from attestation.adapters.kube import (
    Kube,
    NamedSecret,
    WebhookConfigurations,
    secret_path,
    webhook_configuration_path,
)
from attestation.core.names import NF_LABEL, SCHEDULING_GATE
from attestation.core.signing import public_key_to_pem
from attestation.lab.cluster import (
    NAMESPACE,
    register_webhooks,
    service_account_kubeconfig,
    unregister_webhooks,
)
from attestation.lab.node import trustgate_exe
from attestation.lab.planecerts import kubelet_client
from attestation.lab.poll import wait_for
from attestation.lab.process import ManagedProcess, free_port, tcp_open
from tests.support.controlplane import ClusterHandle
from webhook.cabundle import ca_bundle_in_place
from webhook.certpolicy import CertPolicy
from webhook.certs import TlsMaterial, reissue, renewal_due
from webhook.settings import SelfTlsSettings
from webhook.tls import KINDS, SelfManagedTls
from webhook.tlssecret import material_from_secret, secret_for

SA, SECRET = "trustgate-webhook", "trustgate-webhook-tls"
DNS = f"{SA}.{NAMESPACE}.svc"
POLICY = CertPolicy(dns_names=(DNS, f"{DNS}.cluster.local"), ip_addresses=("127.0.0.1",))


@dataclass
class Env:
    cluster: ClusterHandle
    work: Path
    ns: str
    argv: list[str]
    replicas: list[ManagedProcess] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)

    def start_replica(self, port: int | None = None) -> int:
        port = port or free_port()
        name = f"webhook-{len(self.replicas)}"
        process = ManagedProcess(
            name, [*self.argv, "--port", str(port)], self.work / "logs" / f"{name}.log"
        )
        self.replicas.append(process.start())
        self.ports.append(port)
        process.wait_until(lambda: tcp_open("127.0.0.1", port), 60, "listening")
        return port

    def secret(self) -> dict[str, Any] | None:
        secret: dict[str, Any] | None = self.cluster.get(secret_path(NAMESPACE, SECRET))
        return secret

    def material(self) -> TlsMaterial:
        secret = self.secret()
        assert secret is not None
        return material_from_secret(secret)

    def configuration(self, kind: str) -> dict[str, Any]:
        config: dict[str, Any] | None = self.cluster.get(
            webhook_configuration_path(kind, "trustgate")
        )
        assert config is not None
        return config

    def create_nf_pod(self, name: str) -> dict[str, Any]:
        pod: dict[str, Any] = self.cluster.request("POST", f"/api/v1/namespaces/{self.ns}/pods", {
            "metadata": {"name": name, "labels": {"app": "free5gc-upf"}},
            "spec": {"containers": [{"name": "upf", "image": "free5gc/upf"}]},
        })  # fmt: skip
        return pod

    def point_webhooks_at(self, port: int) -> None:
        """A URL the API server has not used yet: its next call opens a new TLS connection."""
        for kind in KINDS:
            ops = [
                {"op": "replace", "path": f"/webhooks/{i}/clientConfig/url", "value": url}
                for i, url in enumerate(_urls(self.configuration(kind), port))
            ]
            self.cluster.plane.request(
                "PATCH", webhook_configuration_path(kind, "trustgate"), ops,
                content_type="application/json-patch+json",
            )  # fmt: skip


def _urls(config: dict[str, Any], port: int) -> list[str]:
    out = []
    for hook in config["webhooks"]:
        path = hook["clientConfig"]["url"].split("/", 3)[3]
        out.append(f"https://127.0.0.1:{port}/{path}")
    return out


def served_cert(port: int) -> x509.Certificate:
    """What a new TLS connection to the replica gets (no verification: we compare bytes)."""
    pem = ssl.get_server_certificate(("127.0.0.1", port), timeout=5)
    return x509.load_pem_x509_certificate(pem.encode())


def readyz(port: int, bundle: bytes) -> int:
    context = ssl.create_default_context(cadata=bundle.decode())
    try:
        with urllib.request.urlopen(
            f"https://127.0.0.1:{port}/readyz", context=context, timeout=5
        ) as response:
            return int(response.status)
    except urllib.error.HTTPError as e:
        return e.code


@pytest.fixture(scope="module")
def env(
    trustgate_installed: ClusterHandle, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Env]:
    cluster = trustgate_installed
    work = tmp_path_factory.mktemp("webhook-tls")
    ns = cluster.unique("tls-core")
    cluster.ensure_namespace(ns, {"trustgate.io/protected": "true"})
    key = work / "verifier.pub"
    key.write_bytes(public_key_to_pem(Ed25519PrivateKey.generate().public_key()))
    kubeconfig = service_account_kubeconfig(cluster.plane, SA, work)
    argv = [
        trustgate_exe(), "webhook", "--kubeconfig", str(kubeconfig), "--verifier-key", str(key),
        "--self-signed-tls", "--tls-namespace", NAMESPACE, "--tls-ip-san", "127.0.0.1",
        "--tls-check-interval", "1s", "--host", "127.0.0.1",
    ]  # fmt: skip
    cluster.delete(secret_path(NAMESPACE, SECRET))
    e = Env(cluster, work, ns, argv)
    try:
        yield e
    finally:
        unregister_webhooks(cluster.plane)  # failurePolicy Fail would break later NF pods
        for process in e.replicas:
            process.stop()
        cluster.delete(secret_path(NAMESPACE, SECRET))
        cluster.delete(f"/api/v1/namespaces/{ns}")


def test_first_replica_creates_the_secret_patches_ca_bundle_and_is_called(env: Env) -> None:
    # Registered first, without a caBundle: until the webhook patches it, the API server cannot
    # trust any certificate, and failurePolicy Fail refuses NF pods.
    port = free_port()
    register_webhooks(env.cluster.plane, port)  # as the manifests ship: no caBundle
    with pytest.raises(urllib.error.HTTPError):
        env.create_nf_pod("upf-before")

    env.start_replica(port)
    secret = env.secret()
    assert secret is not None
    assert secret["type"] == "kubernetes.io/tls"
    material = material_from_secret(secret)
    assert renewal_due(material, POLICY, datetime.now(UTC)) is None
    assert served_cert(port) == material.serving_cert

    wait_for(
        "caBundle in both configurations",
        lambda: all(ca_bundle_in_place(env.configuration(k), material.ca_bundle) for k in KINDS),
    )
    assert wait_for("ready", lambda: readyz(port, material.ca_bundle) == 200)

    pod = wait_for("the API server to call the webhook", lambda: _try_create(env, "upf-a"))
    assert pod["metadata"]["labels"][NF_LABEL] == "upf"
    assert pod["spec"]["schedulingGates"] == [{"name": SCHEDULING_GATE}]


def _try_create(env: Env, name: str) -> dict[str, Any] | None:
    try:
        return env.create_nf_pod(name)
    except urllib.error.HTTPError:
        return None


def test_second_replica_serves_the_same_certificate(env: Env) -> None:
    before = env.secret()
    assert before is not None
    port = env.start_replica()
    material = env.material()
    assert served_cert(port) == served_cert(env.ports[0]) == material.serving_cert
    assert wait_for("second replica ready", lambda: readyz(port, material.ca_bundle) == 200)
    after = env.secret()
    assert after is not None
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]

    env.point_webhooks_at(port)
    pod = wait_for("the API server to call the second replica", lambda: _try_create(env, "upf-b"))
    assert pod["spec"]["schedulingGates"] == [{"name": SCHEDULING_GATE}]


def test_a_certificate_close_to_expiry_is_renewed_and_still_accepted(env: Env) -> None:
    original = env.material()
    now = datetime.now(UTC)
    short = CertPolicy(
        dns_names=POLICY.dns_names, ip_addresses=POLICY.ip_addresses,
        serving_validity=timedelta(days=2), serving_renew_before=timedelta(days=1),
    )  # fmt: skip
    seeded = reissue(original, short, now)
    current = env.secret()
    env.cluster.request(
        "PUT",
        secret_path(NAMESPACE, SECRET),
        secret_for(seeded, NAMESPACE, SECRET, current=current),
    )

    def renewed() -> TlsMaterial | None:
        material = env.material()
        return material if material.cert not in (original.cert, seeded.cert) else None

    material = wait_for("a replica to renew the serving certificate", renewed)
    assert material.ca_bundle == original.ca_bundle  # same CA: no caBundle change needed
    left = material.serving_cert.not_valid_after_utc - datetime.now(UTC)
    assert left > timedelta(days=89)
    for port in env.ports:
        wait_for(
            f"replica on {port} to serve the renewed certificate",
            lambda p=port: served_cert(p) == material.serving_cert,  # type: ignore[misc]
        )

    # The API server's connections to both replicas may still carry the old certificate; a
    # replica it has not called yet makes it handshake with the renewed one.
    port = env.start_replica()
    assert served_cert(port) == material.serving_cert
    env.point_webhooks_at(port)
    pod = wait_for("the API server to accept the renewed certificate",
                      lambda: _try_create(env, "upf-c"))  # fmt: skip
    assert pod["metadata"]["labels"][NF_LABEL] == "upf"
    for kind in KINDS:
        assert ca_bundle_in_place(env.configuration(kind), material.ca_bundle)


class StaleFirstRead:
    """The real Secret store, whose first ``get`` answers what it saw before another replica
    wrote: the race a replica loses, made deterministic. Everything else is the API server."""

    def __init__(self, store: NamedSecret, stale: dict[str, Any] | None) -> None:
        self._store, self._stale, self.reads = store, stale, 0

    def get(self) -> dict[str, Any] | None:
        self.reads += 1
        return self._stale if self.reads == 1 else self._store.get()

    def create(self, body: Mapping[str, Any]) -> dict[str, Any] | None:
        return self._store.create(body)

    def replace(self, body: Mapping[str, Any]) -> dict[str, Any] | None:
        return self._store.replace(body)


@pytest.mark.parametrize("stale", ["absent", "old-version"])
def test_a_replica_that_loses_the_race_reads_the_winners_secret(
    env: Env, stale: str, caplog: pytest.LogCaptureFixture
) -> None:
    """create answered 409 (it exists now) or replace answered 409 (resourceVersion is stale):
    re-read and adopt what the other replica stored, writing nothing."""
    before = env.secret()
    assert before is not None
    seen: dict[str, Any] | None = None
    if stale == "old-version":
        seen = {**before, "metadata": {**before["metadata"], "resourceVersion": "1"}}
        seen["data"] = {}  # unreadable: the replica wants to replace it
    kube = Kube(env.cluster.api_client)
    store = StaleFirstRead(NamedSecret(kube, NAMESPACE, SECRET), seen)
    tls = SelfManagedTls(
        SelfTlsSettings(POLICY), store, WebhookConfigurations(kube, "trustgate"), env.work
    )
    with caplog.at_level(logging.INFO, logger="webhook.tls"):
        material = tls.settle()
    assert "another replica wrote first" in caplog.text
    assert store.reads == 2
    assert material == env.material()
    after = env.secret()
    assert after is not None
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]


def _handshake_error(port: int, bundle: bytes, client: tuple[Path, Path] | None) -> str | None:
    """None when an HTTP answer comes back over TLS; else the TLS error the caller sees (with
    TLS 1.3 the server's alert arrives on the first read, after the client's side of the
    handshake)."""
    context = ssl.create_default_context(cadata=bundle.decode())
    if client is not None:
        context.load_cert_chain(str(client[0]), str(client[1]))
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: webhook\r\nConnection: close\r\n\r\n")
            answer = tls.recv(4096)
    except (ssl.SSLError, ConnectionError) as e:
        return str(e) or type(e).__name__
    return None if answer.startswith(b"HTTP/1.1 ") else f"no HTTP answer: {answer!r}"


def test_with_client_ca_only_the_api_servers_certificate_completes_tls(env: Env) -> None:
    """--client-ca: the webhook requires a client certificate from that CA. The lab API server
    presents one (its AdmissionConfiguration's kubeConfigFile, planecerts.webhook_admission_config)
    and its calls succeed; a caller without one, or with another CA's (a kubelet's), is refused
    in the handshake, before any HTTP."""
    certs = env.cluster.plane.certs
    port = free_port()
    process = ManagedProcess(
        "webhook-mtls",
        [*env.argv, "--port", str(port), "--client-ca", str(certs.webhook_client_ca.files.cert)],
        env.work / "logs" / "webhook-mtls.log",
    )
    env.replicas.append(process.start())
    process.wait_until(lambda: tcp_open("127.0.0.1", port), 60, "listening")
    bundle = env.material().ca_bundle
    apiserver = (certs.webhook_client.cert, certs.webhook_client.key)
    assert wait_for("ready", lambda: _handshake_error(port, bundle, apiserver) is None)

    register_webhooks(env.cluster.plane, port)  # no caBundle: the replica patches it in
    pod = wait_for("the API server's call over mutual TLS", lambda: _try_create(env, "upf-m"))
    assert pod["spec"]["schedulingGates"] == [{"name": SCHEDULING_GATE}]

    refused = _handshake_error(port, bundle, None)
    # The server drops the connection in the handshake (no alert reaches the client with
    # TLS 1.3 under asyncio): no HTTP answer, where the same request with the API server's
    # certificate got one.
    assert refused is not None
    kubelet = kubelet_client(certs.ca, env.work, "some-node")  # the cluster CA: not enough
    assert _handshake_error(port, bundle, (kubelet.cert, kubelet.key)) is not None
    assert _handshake_error(port, bundle, apiserver) is None

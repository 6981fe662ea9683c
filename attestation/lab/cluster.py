"""The whole system on one machine: the real control plane with trustgate's manifests, simulated
worker nodes (swtpm + kernel-like IMA log + real agent), and the verifier and webhook as real
processes running with the manifests' ServiceAccount tokens. Used by `trustgate demo`."""

from __future__ import annotations

import base64
import contextlib
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from attestation.adapters.httpclient import unverified_tls
from attestation.core.names import (
    CORE_NODE_LABEL,
    GROUP,
    NODE_RESTRICTION_PREFIX,
    NODEATTESTATION_API_VERSION,
    NODEATTESTATION_PLURAL,
)
from attestation.core.nodeattestation import NodeTrust, node_trust
from attestation.core.signing import (
    generate_private_key,
    private_key_to_pem,
    public_key_to_pem,
    public_keys_by_id,
)
from attestation.lab.controlplane import ControlPlane
from attestation.lab.kubeconfig import write_kubeconfig
from attestation.lab.node import SimNode, trustgate_exe
from attestation.lab.pki import CertFiles, CertificateAuthority
from attestation.lab.planecerts import kubelet_client
from attestation.lab.process import ManagedProcess, free_port, tcp_open
from attestation.lab.swtpm import LocalCa

__all__ = [
    "MANIFESTS",
    "NAMESPACE",
    "NODEATTESTATIONS",
    "NODE_LABEL",
    "LabCluster",
    "install_manifests",
    "lab_node_label",
    "manifests_dir",
    "register_webhooks",
    "service_account_kubeconfig",
    "unregister_webhooks",
]

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"
NAMESPACE = "trustgate-system"
#: The agent DaemonSet's and the verifier's node selector in manifests/.
NODE_LABEL = (CORE_NODE_LABEL, "true")
#: The API path of the NodeAttestation collection.
NODEATTESTATIONS = f"/apis/{NODEATTESTATION_API_VERSION}/{NODEATTESTATION_PLURAL}"
_ADMISSION = "/apis/admissionregistration.k8s.io/v1"


def lab_node_label(name: str) -> tuple[str, str]:
    """The label that marks lab ``name``'s nodes (its verifier's ``--node-selector``), for labs
    sharing one control plane. Under node-restriction.kubernetes.io/ like the manifests' label,
    so that a test acting as a node's kubelet cannot remove it either."""
    return (f"{NODE_RESTRICTION_PREFIX}trustgate-lab", name.replace("_", "-")[-50:].strip("-"))


def manifests_dir() -> Path:
    if not (MANIFESTS / "crds").is_dir():
        raise FileNotFoundError(
            f"trustgate's manifests are not at {MANIFESTS}: run from a checkout"
        )
    return MANIFESTS


class LabCluster:
    """``plane``: an already running control plane to share (tests); by default the lab starts
    and stops its own (the demo). ``node_label`` marks this lab's nodes (``lab_node_label``): the
    verifier selects those, and leaves nodes whose NodeAttestation another lab's verifier signed
    alone even when NF pods run there, so labs sharing one control plane do not see each other's
    nodes."""

    def __init__(
        self,
        workdir: Path,
        plane: ControlPlane | None = None,
        *,
        node_label: tuple[str, str] = NODE_LABEL,
        tpm_ca: LocalCa | None = None,
        log: Callable[[str], None] = print,
    ) -> None:
        self.workdir = workdir.resolve()  # kubeconfigs hold paths; relative ones break
        self.log = log
        self._owns_plane = plane is None
        self.plane = plane or ControlPlane(workdir / "control-plane", log=log)
        self.node_label = node_label
        self.tls_ca: CertificateAuthority | None = None
        self.client_ca: CertificateAuthority | None = None
        self.verifier_client: CertFiles | None = None
        self.tpm_ca: LocalCa | None = tpm_ca
        self.nodes: dict[str, SimNode] = {}
        self.verifiers: list[ManagedProcess] = []
        #: Override where the verifier reaches a node's agent (a hostile proxy in attack tests).
        self.agent_urls: dict[str, str] = {}
        self.webhook: ManagedProcess | None = None
        self.verifier_port = free_port()
        self.webhook_port = free_port()
        self.signing_key = workdir / "verifier-signing.pem"
        self.verifier_public_key = workdir / "verifier-public.pem"
        self.audit_log = workdir / "audit.jsonl"
        self.policies = workdir / "policies"

    # -- set-up ----------------------------------------------------------------------------------

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self._owns_plane:
            self.plane.start()
        self.tls_ca = CertificateAuthority.create(self.workdir / "lab-tls", "trustgate-lab-tls")
        # Agents serve only the verifier: they trust this CA's client certificates (the
        # DaemonSet's trustgate-agent-client-ca), the verifier presents one of them.
        self.client_ca = CertificateAuthority.create(
            self.workdir / "agent-client-ca", "trustgate-agent-client-ca"
        )
        self.verifier_client = self.client_ca.issue(
            self.workdir / "agent-client-ca", "verifier", "trustgate-verifier", client=True
        )
        if self.tpm_ca is None:
            self.log("creating the TPM manufacturer's CA (swtpm-localca, private to this lab)")
            self.tpm_ca = LocalCa.create(self.workdir / "tpm-ca")
        key = generate_private_key()
        self.signing_key.write_bytes(private_key_to_pem(key))
        self.signing_key.chmod(0o600)
        self.verifier_public_key.write_bytes(public_key_to_pem(key.public_key()))
        #: What the webhook is given to check NodeAttestation signatures with.
        self.verifier_keys: dict[str, Ed25519PublicKey] = public_keys_by_id([key.public_key()])

    def install(self) -> None:
        install_manifests(self.plane)

    def add_node(self, name: str, host_files: Mapping[str, bytes], *, push: bool = True) -> SimNode:
        assert self.tpm_ca is not None
        assert self.tls_ca is not None
        notify = f"http://127.0.0.1:{self.verifier_port}/v1/notify" if push else None
        node = SimNode.create(
            name, self.workdir / "nodes" / name, self.tpm_ca, self.tls_ca, notify,
            self.client_ca, self.verifier_client,
        )  # fmt: skip
        node.boot(dict(host_files))
        self.plane.add_node(name, {self.node_label[0]: self.node_label[1]})
        node.start_agent()
        self.nodes[name] = node
        return node

    def write_policies(self, documents: Mapping[str, Mapping[str, Any]]) -> None:
        self.policies.mkdir(parents=True, exist_ok=True)
        for name, doc in documents.items():
            (self.policies / f"{name}.yaml").write_text(yaml.safe_dump(dict(doc), sort_keys=False))

    def start_verifier(
        self,
        *,
        interval: float,
        max_age: float,
        extra_args: Sequence[str] = (),
        replica: int = 0,
        sharding: bool = False,
        lease_duration: float = 3.0,
    ) -> ManagedProcess:
        """Start verifier replica ``replica`` (its own push port and audit log after the first;
        agents push to replica 0's port, which forwards a push to the node's replica). With
        ``sharding`` the replicas share the nodes (``verifier.shards``); without, it attests
        every node alone."""
        port = self.verifier_port if replica == 0 else free_port()
        audit = self.audit_log if replica == 0 else self.audit_log.with_suffix(f".{replica}.jsonl")
        kubeconfig = service_account_kubeconfig(self.plane, "trustgate-verifier", self.workdir)
        assert self.verifier_client is not None, "start() first"
        argv = [
            trustgate_exe(), "verifier", "--kubeconfig", str(kubeconfig),
            # agent_urls alone may name a node too (a real-kernel node, attestation.lab.realnode)
            "--agents", ",".join(f"{n}={url}" for n, url in (
                {n: node.agent_url for n, node in self.nodes.items()} | self.agent_urls).items()),
            "--node-selector", "=".join(self.node_label),
            "--policies", str(self.policies), "--ek-ca", str(self.tpm_ca.ca_bundle),  # type: ignore[union-attr]
            "--signing-key", str(self.signing_key), "--audit-log", str(audit),
            "--interval", str(interval), "--max-age", str(max_age),
            "--listen", f"127.0.0.1:{port}", "--identity", f"verifier-{replica}",
            "--namespace", NAMESPACE, "--lease-duration", str(lease_duration),
            "--agent-client-cert", str(self.verifier_client.cert),
            "--agent-client-key", str(self.verifier_client.key), *extra_args,
        ]  # fmt: skip
        if not sharding:
            argv.append("--no-sharding")
        proc = ManagedProcess(
            f"verifier-{replica}", argv, self.workdir / "logs" / f"verifier-{replica}.log"
        )
        proc.start()
        proc.wait_until(lambda: tcp_open("127.0.0.1", port), 60, "verifier listening")
        self.verifiers.append(proc)
        return proc

    @property
    def verifier(self) -> ManagedProcess | None:
        """The first verifier replica."""
        return self.verifiers[0] if self.verifiers else None

    def start_webhook(self) -> None:
        """The webhook as the manifests run it: self-managed TLS (its CA and serving certificate
        in a Secret, the caBundle patched into the configurations by the webhook itself)."""
        register_webhooks(self.plane, self.webhook_port)  # no caBundle: the webhook's job
        kubeconfig = service_account_kubeconfig(self.plane, "trustgate-webhook", self.workdir)
        argv = [
            trustgate_exe(), "webhook", "--kubeconfig", str(kubeconfig),
            "--verifier-key", str(self.verifier_public_key),
            "--self-signed-tls", "--tls-namespace", NAMESPACE, "--tls-ip-san", "127.0.0.1",
            "--host", "127.0.0.1", "--port", str(self.webhook_port),
        ]  # fmt: skip
        self.webhook = ManagedProcess("webhook", argv, self.workdir / "logs" / "webhook.log")
        self.webhook.start()
        ctx = unverified_tls()  # only asking whether it is ready
        url = f"https://127.0.0.1:{self.webhook_port}/readyz"
        self.webhook.wait_until(lambda: _ready(url, ctx), 60, "webhook ready (caBundle in place)")

    def kubelet_kubeconfig(self, name: str) -> Path:
        """A kubeconfig with node ``name``'s kubelet credentials (``system:node:<name>``): what
        root on that node holds, to act against the API server as the kubelet can."""
        directory = self.workdir / "kubelets"
        files = kubelet_client(self.plane.certs.ca, directory, name)
        user = {"client-certificate": str(files.cert), "client-key": str(files.key)}
        return write_kubeconfig(
            directory / f"{name}.kubeconfig", self.plane.server, self.plane.ca_file, user
        )

    # -- reads ---------------------------------------------------------------------------------

    def get(self, path: str) -> Any:
        return self.plane.get(path)

    def nodeattestation(self, node: str) -> dict[str, Any] | None:
        obj: dict[str, Any] | None = self.get(f"{NODEATTESTATIONS}/{node}")
        return obj

    def nodeattestation_state(self, node: str) -> str | None:
        """The state as published, signed or not (what `kubectl get nodeattestations` shows)."""
        state = ((self.nodeattestation(node) or {}).get("status") or {}).get("state")
        return str(state) if state else None

    def node_trust(self, node: str) -> NodeTrust | None:
        """The node's NodeAttestation as the webhook reads it (signature checked); None while
        there is none."""
        obj = self.nodeattestation(node)
        return None if obj is None else node_trust(obj, self.verifier_keys)

    def trusted(self, node: str, now: datetime | None = None) -> bool:
        """Whether the webhook would admit NF pods to ``node`` at ``now`` (default: now)."""
        trust = self.node_trust(node)
        return trust is not None and trust.trusted_at(now or datetime.now(UTC))

    def pods(self, namespace: str) -> list[dict[str, Any]]:
        return list((self.get(f"/api/v1/namespaces/{namespace}/pods") or {}).get("items") or [])

    # -- teardown --------------------------------------------------------------------------------

    def stop(self) -> None:
        if self.webhook is not None:
            if not self._owns_plane:
                unregister_webhooks(self.plane)
            self.webhook.stop()
        for verifier in self.verifiers:
            verifier.stop()
        for node in self.nodes.values():
            node.shutdown()
        if self._owns_plane:
            self.plane.stop()
        else:
            self._forget_nodes()

    def _forget_nodes(self) -> None:
        """On a shared control plane, remove this lab's Nodes, NodeAttestations and the pods
        bound to them: a node left labelled attested=true with no verifier behind it sends later
        labs' schedulers astray, and NF pods left on a node without a NodeAttestation would be
        a later lab's verifier's to attest."""
        for name in self.nodes:
            bound = self.get(f"/api/v1/pods?fieldSelector=spec.nodeName%3D{name}") or {}
            for pod in bound.get("items") or []:
                meta = pod["metadata"]
                path = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}"
                with contextlib.suppress(urllib.error.HTTPError):
                    self.plane.request("DELETE", path, {"gracePeriodSeconds": 0})
            self.plane.delete(f"/api/v1/nodes/{name}")
            self.plane.delete(f"{NODEATTESTATIONS}/{name}")


def install_manifests(plane: ControlPlane) -> None:
    """Namespace, CRDs, RBAC and the admission policies that narrow it, from manifests/,
    server-side applied (the one install path of the demo, the tests and the benches)."""
    m = manifests_dir()
    plane.kubectl(
        "apply", "--server-side", "-f", str(m / "namespace.yaml"), "-f", str(m / "crds"),
        "-f", str(m / "rbac.yaml"), "-f", str(m / "admission-policies.yaml"),
    )  # fmt: skip
    plane.kubectl(
        "wait", "--for=condition=Established", "--timeout=30s",
        f"crd/{NODEATTESTATION_PLURAL}.{GROUP}",
    )  # fmt: skip


def register_webhooks(plane: ControlPlane, port: int, ca_bundle: bytes | None = None) -> None:
    """The manifests' webhook configurations, (re)created pointing at a local webhook on
    ``port`` by URL (a cluster points them at the Service instead), with ``ca_bundle`` or, by
    default, without one (as the manifests ship: a self-managing webhook patches it in)."""
    docs = yaml.safe_load_all((manifests_dir() / "webhook-configurations.yaml").read_text())
    for doc in docs:
        if not doc:
            continue
        for hook in doc["webhooks"]:
            path = hook["clientConfig"]["service"]["path"]
            hook["clientConfig"] = {"url": f"https://127.0.0.1:{port}{path}"}
            if ca_bundle is not None:
                hook["clientConfig"]["caBundle"] = base64.b64encode(ca_bundle).decode()
        base = f"{_ADMISSION}/{doc['kind'].lower()}s"
        plane.delete(f"{base}/{doc['metadata']['name']}")
        plane.request("POST", base, doc)


def unregister_webhooks(plane: ControlPlane) -> None:
    """Remove the webhook configurations: with failurePolicy Fail they would refuse NF pods
    (and, in protected namespaces, bindings) once the webhook process is gone."""
    for kind in ("mutatingwebhookconfigurations", "validatingwebhookconfigurations"):
        plane.delete(f"{_ADMISSION}/{kind}/trustgate")


def service_account_kubeconfig(plane: ControlPlane, name: str, directory: Path) -> Path:
    """``directory``/``name``.kubeconfig holding a token of trustgate's ServiceAccount ``name``:
    a component run with it gets exactly what the manifests' RBAC grants."""
    token = plane.token_for(NAMESPACE, name)
    return plane.kubeconfig_for_token(token, directory / f"{name}.kubeconfig")


def _ready(url: str, ctx: ssl.SSLContext) -> bool:
    try:
        with urllib.request.urlopen(url, context=ctx, timeout=2) as response:  # noqa: S310
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False

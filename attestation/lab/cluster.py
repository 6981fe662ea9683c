"""The whole system on one machine: the real control plane with trustgate's manifests, simulated
worker nodes (swtpm + kernel-like IMA log + real agent), and the verifier and webhook as real
processes running with the manifests' ServiceAccount tokens. Used by `trustgate demo`."""

from __future__ import annotations

import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from attestation.core.signing import generate_private_key, private_key_to_pem, public_key_to_pem
from attestation.lab.controlplane import ControlPlane
from attestation.lab.node import SimNode, trustgate_exe
from attestation.lab.pki import CertificateAuthority
from attestation.lab.process import ManagedProcess, free_port, tcp_open
from attestation.lab.swtpm import LocalCa

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"
NAMESPACE = "trustgate-system"
NODE_LABEL = ("trustgate.io/5g-core", "true")


def manifests_dir() -> Path:
    if not (MANIFESTS / "crds").is_dir():
        raise FileNotFoundError(
            f"trustgate's manifests are not at {MANIFESTS}: run from a checkout"
        )
    return MANIFESTS


class LabCluster:
    """``plane``: an already running control plane to share (tests); by default the lab starts
    and stops its own (the demo). ``node_label`` marks this lab's nodes: the verifier attests only
    those, so labs sharing one control plane do not see each other's nodes."""

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
        if self.tpm_ca is None:
            self.log("creating the TPM manufacturer's CA (swtpm-localca, private to this lab)")
            self.tpm_ca = LocalCa.create(self.workdir / "tpm-ca")
        key = generate_private_key()
        self.signing_key.write_bytes(private_key_to_pem(key))
        self.signing_key.chmod(0o600)
        self.verifier_public_key.write_bytes(public_key_to_pem(key.public_key()))

    def install(self) -> None:
        install_manifests(self.plane)

    def add_node(self, name: str, host_files: Mapping[str, bytes], *, push: bool = True) -> SimNode:
        assert self.tpm_ca is not None
        assert self.tls_ca is not None
        notify = f"http://127.0.0.1:{self.verifier_port}/v1/notify" if push else None
        node = SimNode.create(name, self.workdir / "nodes" / name, self.tpm_ca, self.tls_ca, notify)
        node.boot(dict(host_files))
        self.plane.add_node(name, {self.node_label[0]: self.node_label[1]})
        node.start_agent()
        self.nodes[name] = node
        return node

    def write_policies(self, documents: Mapping[str, Mapping[str, Any]]) -> None:
        self.policies.mkdir(parents=True, exist_ok=True)
        for name, doc in documents.items():
            (self.policies / f"{name}.yaml").write_text(yaml.safe_dump(dict(doc), sort_keys=False))

    def _service_account_kubeconfig(self, name: str) -> Path:
        token = self.plane.token_for(NAMESPACE, name)
        return self.plane.kubeconfig_for_token(token, self.workdir / f"{name}.kubeconfig")

    def start_verifier(
        self,
        *,
        interval: float,
        max_age: float,
        extra_args: Sequence[str] = (),
        replica: int = 0,
        leader_election: bool = False,
    ) -> ManagedProcess:
        """Start verifier replica ``replica`` (its own push port and audit log after the first;
        agents push to replica 0's port). With ``leader_election`` replicas share a Lease."""
        port = self.verifier_port if replica == 0 else free_port()
        audit = self.audit_log if replica == 0 else self.audit_log.with_suffix(f".{replica}.jsonl")
        argv = [
            trustgate_exe(), "verifier",
            "--kubeconfig", str(self._service_account_kubeconfig("trustgate-verifier")),
            "--agents", ",".join(f"{n}={self.agent_urls.get(n, node.agent_url)}"
                                 for n, node in self.nodes.items()),
            "--node-selector", "=".join(self.node_label),
            "--policies", str(self.policies), "--ek-ca", str(self.tpm_ca.ca_bundle),  # type: ignore[union-attr]
            "--signing-key", str(self.signing_key), "--audit-log", str(audit),
            "--interval", str(interval), "--max-age", str(max_age),
            "--listen", f"127.0.0.1:{port}", "--identity", f"verifier-{replica}",
            "--namespace", NAMESPACE, "--lease-duration", "6", *extra_args,
        ]  # fmt: skip
        if not leader_election:
            argv.append("--no-leader-election")
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
        self._register_webhooks()
        argv = [
            trustgate_exe(), "webhook",
            "--kubeconfig", str(self._service_account_kubeconfig("trustgate-webhook")),
            "--verifier-key", str(self.verifier_public_key),
            "--self-signed-tls", "--tls-namespace", NAMESPACE, "--tls-ip-san", "127.0.0.1",
            "--host", "127.0.0.1", "--port", str(self.webhook_port),
        ]  # fmt: skip
        self.webhook = ManagedProcess("webhook", argv, self.workdir / "logs" / "webhook.log")
        self.webhook.start()
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # only asking whether it is ready
        url = f"https://127.0.0.1:{self.webhook_port}/readyz"
        self.webhook.wait_until(lambda: _ready(url, ctx), 60, "webhook ready (caBundle in place)")

    def _register_webhooks(self) -> None:
        """The manifests' webhook configurations, pointed at the local process by URL (a
        cluster points them at the Service instead). No caBundle: the webhook fills it in."""
        docs = yaml.safe_load_all((manifests_dir() / "webhook-configurations.yaml").read_text())
        for doc in docs:
            if not doc:
                continue
            for hook in doc["webhooks"]:
                path = hook["clientConfig"]["service"]["path"]
                hook["clientConfig"] = {"url": f"https://127.0.0.1:{self.webhook_port}{path}"}
            base = f"/apis/admissionregistration.k8s.io/v1/{doc['kind'].lower()}s"
            try:
                self.plane.request("DELETE", f"{base}/{doc['metadata']['name']}")
            except urllib.error.HTTPError as e:
                if e.code != 404:
                    raise
            self.plane.request("POST", base, doc)

    # -- reads ---------------------------------------------------------------------------------

    def get(self, path: str) -> Any:
        try:
            return self.plane.request("GET", path)
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return None
            raise

    def nodeattestation_state(self, node: str) -> str | None:
        obj = self.get(f"/apis/trustgate.io/v1alpha1/nodeattestations/{node}")
        state = ((obj or {}).get("status") or {}).get("state")
        return str(state) if state else None

    def pods(self, namespace: str) -> list[dict[str, Any]]:
        return list((self.get(f"/api/v1/namespaces/{namespace}/pods") or {}).get("items") or [])

    # -- teardown --------------------------------------------------------------------------------

    def unregister_webhooks(self) -> None:
        """Remove the webhook configurations: with failurePolicy Fail they would refuse NF pods
        (and, in protected namespaces, bindings) once the webhook process is gone."""
        for kind in ("mutatingwebhookconfigurations", "validatingwebhookconfigurations"):
            try:
                self.plane.request(
                    "DELETE", f"/apis/admissionregistration.k8s.io/v1/{kind}/trustgate"
                )
            except urllib.error.HTTPError as e:
                if e.code != 404:
                    raise

    def stop(self) -> None:
        if self.webhook is not None:
            if not self._owns_plane:
                self.unregister_webhooks()
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
        """On a shared control plane, remove this lab's Nodes and NodeAttestations: a node left
        labelled attested=true with no verifier behind it sends later labs' schedulers astray."""
        for name in self.nodes:
            for path in (
                f"/api/v1/nodes/{name}",
                f"/apis/trustgate.io/v1alpha1/nodeattestations/{name}",
            ):
                try:
                    self.plane.request("DELETE", path)
                except urllib.error.HTTPError as e:
                    if e.code != 404:
                        raise


def install_manifests(plane: ControlPlane) -> None:
    """Namespace, CRDs and RBAC from manifests/, server-side applied (the one install path of
    the demo, the tests and the benches)."""
    m = manifests_dir()
    plane.kubectl(
        "apply", "--server-side", "-f", str(m / "namespace.yaml"), "-f", str(m / "crds"),
        "-f", str(m / "rbac.yaml"),
    )  # fmt: skip
    plane.kubectl(
        "wait", "--for=condition=Established", "--timeout=30s",
        "crd/nodeattestations.trustgate.io",
    )  # fmt: skip


def _ready(url: str, ctx: ssl.SSLContext) -> bool:
    try:
        with urllib.request.urlopen(url, context=ctx, timeout=2) as response:  # noqa: S310
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def wait_for(what: str, check: Callable[[], Any], timeout: float = 30, every: float = 0.05) -> Any:
    """Poll ``check`` until truthy; raise TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise TimeoutError(f"{what}: not within {timeout:.0f}s (last seen: {last!r})")

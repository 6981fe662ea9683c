"""A small attested cluster for cluster-layer tests: trustgate's manifests installed in the real
control plane, simulated nodes (each a real swtpm, an IMA log written like the kernel's, and a
real agent over HTTP), and the verifier as a real process running with its ServiceAccount."""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import sys
import time
import urllib.error
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from attestation.agent.app import create_app
from attestation.agent.settings import AgentSettings
from attestation.lab.ima_writer import ImaWriter, systemd_pod_cgroup
from attestation.lab.process import ManagedProcess, free_port
from attestation.signing import generate_private_key, private_key_to_pem, public_key_to_pem
from attestation.types import HashAlg
from tests.support.controlplane import ClusterHandle
from tests.support.serve import serve
from tests.support.swtpm import LocalCa, SwTpm

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "manifests"

#: What the simulated nodes run, and so what the example policies allow.
FILES: dict[str, dict[str, bytes]] = {
    "host": {"/usr/bin/containerd": b"containerd 2.0", "/usr/bin/kubelet": b"kubelet 1.34"},
    "upf": {"/usr/bin/upfd": b"open5gs-upfd 2.7", "/usr/lib/libgtp5g.so": b"gtp5g"},
    "smf": {"/usr/bin/smfd": b"open5gs-smfd 2.7"},
    "amf": {"/usr/bin/amfd": b"open5gs-amfd 2.7"},
}


def policy_document(nf: str) -> dict[str, Any]:
    return {
        "apiVersion": "trustgate.io/v1alpha1",
        "kind": "RuntimePolicy",
        "metadata": {"name": nf},
        "spec": {
            "networkFunction": nf,
            "digests": {
                p: [f"sha256:{hashlib.sha256(c).hexdigest()}"] for p, c in FILES[nf].items()
            },
            "excludes": ["^/tmp/"],
        },
    }


def wait_for(what: str, check: Callable[[], Any], timeout: float = 30, every: float = 0.05) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


@pytest.fixture(scope="session")
def trustgate_installed(control_plane: ClusterHandle) -> ClusterHandle:
    """The namespace, CRDs and RBAC from manifests/, applied server-side."""
    control_plane.kubectl(
        "apply", "--server-side", "-f", str(MANIFESTS / "namespace.yaml"),
        "-f", str(MANIFESTS / "crds"), "-f", str(MANIFESTS / "rbac.yaml"),
    )  # fmt: skip
    control_plane.kubectl(
        "wait", "--for=condition=Established", "--timeout=30s",
        "crd/nodeattestations.trustgate.io",
    )  # fmt: skip
    return control_plane


@dataclass
class SimNode:
    """A node with a real TPM, a kernel-like IMA log and a real agent."""

    name: str
    tpm: SwTpm
    writer: ImaWriter
    workdir: Path
    notify_url: str
    port: int = field(default_factory=free_port)
    _agent: contextlib.ExitStack | None = None

    @property
    def agent_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start_agent(self) -> None:
        settings = AgentSettings(
            node_name=self.name, tcti=self.tpm.tcti, ima_log=self.writer.log_path,
            state_dir=self.workdir / "agent-state", notify_url=self.notify_url,
        )  # fmt: skip
        stack = contextlib.ExitStack()
        stack.enter_context(serve(create_app(settings), port=self.port))
        self._agent = stack

    def stop_agent(self) -> None:
        if self._agent is not None:
            self._agent.close()
            self._agent = None

    def boot(self) -> None:
        pcrs = self.tpm.read_pcrs(list(range(8)), (HashAlg.SHA256,))[HashAlg.SHA256]
        self.writer.boot_aggregate(pcrs)
        for path, content in FILES["host"].items():
            self.writer.measure(path, content)

    def run_in_pod(self, pod_uid: str, path: str, content: bytes, container: str = "c0") -> None:
        self.writer.measure(path, content, cgroup_path=systemd_pod_cgroup(pod_uid, container))


@dataclass
class Lab:
    cluster: ClusterHandle
    workdir: Path
    selector: tuple[str, str]
    nodes: dict[str, SimNode]
    verifier_port: int
    audit_log: Path
    signing_public_pem: bytes
    verifier: ManagedProcess | None = None

    def pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            pod: dict[str, Any] = self.cluster.request(
                "GET", f"/api/v1/namespaces/{namespace}/pods/{name}"
            )
            return pod
        except urllib.error.HTTPError as e:
            if e.code != 404:
                raise
            return None

    def nodeattestation(self, node: str) -> dict[str, Any] | None:
        try:
            obj: dict[str, Any] = self.cluster.request(
                "GET", f"/apis/trustgate.io/v1alpha1/nodeattestations/{node}"
            )
            return obj
        except urllib.error.HTTPError as e:
            if e.code != 404:
                raise
            return None

    def state_of(self, node: str) -> str | None:
        obj = self.nodeattestation(node)
        state = (obj or {}).get("status", {}).get("state")
        return str(state) if state else None

    def create_nf_pod(self, namespace: str, name: str, nf: str, node: str) -> str:
        pod = self.cluster.request("POST", f"/api/v1/namespaces/{namespace}/pods", {
            "metadata": {"name": name, "labels": {"trustgate.io/network-function": nf, "nf": nf}},
            "spec": {"nodeName": node, "containers": [{"name": nf, "image": f"open5gs/{nf}"}]},
        })  # fmt: skip
        return str(pod["metadata"]["uid"])

    def events_for(self, namespace: str, name: str) -> list[dict[str, Any]]:
        events = self.cluster.request(
            "GET", f"/api/v1/namespaces/{namespace}/events"
            f"?fieldSelector=involvedObject.name%3D{name}",
        )  # fmt: skip
        return list(events.get("items") or [])


def _trustgate_exe() -> str:
    exe = shutil.which("trustgate", path=str(Path(sys.executable).parent))
    assert exe, "the trustgate console script is not installed in this venv (make setup)"
    return exe


@contextlib.contextmanager
def lab_cluster(
    cluster: ClusterHandle,
    ca: LocalCa,
    workdir: Path,
    node_names: list[str],
    *,
    interval: float = 0.5,
    max_age: float = 3.0,
    extra_args: Mapping[str, str] | None = None,
) -> Iterator[Lab]:
    """Start len(node_names) simulated nodes and the verifier; tear everything down after."""
    selector = ("trustgate.test/lab", workdir.name.replace("_", "-")[-50:].strip("-"))
    verifier_port = free_port()
    notify = f"http://127.0.0.1:{verifier_port}/v1/notify"
    policies = workdir / "policies"
    policies.mkdir()
    for nf in FILES:
        (policies / f"{nf}.yaml").write_text(yaml.safe_dump(policy_document(nf)))
    key = generate_private_key()
    (workdir / "signing.pem").write_bytes(private_key_to_pem(key))
    nodes: dict[str, SimNode] = {}
    lab = Lab(cluster, workdir, selector, nodes, verifier_port, workdir / "audit.jsonl",
              public_key_to_pem(key.public_key()))  # fmt: skip
    try:
        for name in node_names:
            nd = workdir / name
            nd.mkdir()
            tpm = SwTpm(ca, nd)
            tpm.start()
            writer = ImaWriter(nd / "binary_runtime_measurements", extend=tpm.extend_pcr,
                               template="ima-cgpath")  # fmt: skip
            node = SimNode(name, tpm, writer, nd, notify)
            node.boot()
            nodes[name] = node
            cluster.add_node(name, {selector[0]: selector[1]})
            node.start_agent()
        token = cluster.token_for("trustgate-system", "trustgate-verifier")
        kubeconfig = cluster.plane.kubeconfig_for_token(token, workdir / "verifier.kubeconfig")
        argv = [
            _trustgate_exe(), "verifier", "--kubeconfig", str(kubeconfig),
            "--agents", ",".join(f"{n}={nodes[n].agent_url}" for n in node_names),
            "--node-selector", f"{selector[0]}={selector[1]}",
            "--policies", str(policies), "--ek-ca", str(ca.ca_bundle),
            "--signing-key", str(workdir / "signing.pem"), "--audit-log", str(lab.audit_log),
            "--interval", str(interval), "--max-age", str(max_age),
            "--listen", f"127.0.0.1:{verifier_port}", "--no-leader-election",
            "--identity", f"verifier-{selector[1]}", "--eviction-deadline", "5",
        ]  # fmt: skip
        for k, v in (extra_args or {}).items():
            argv += [k, v]
        lab.verifier = ManagedProcess("verifier", argv, workdir / "verifier.log").start()
        yield lab
    finally:
        if lab.verifier is not None:
            lab.verifier.stop()
        for node in nodes.values():
            node.stop_agent()
            node.tpm.stop(orderly=False)

"""A real Kubernetes control plane on 127.0.0.1: etcd, kube-apiserver (RBAC on), kube-scheduler and
kube-controller-manager, run the way controller-runtime's envtest runs them.

There is no kubelet: nodes are registered through the API with a Ready status and capacity, so the
real scheduler binds pods to them; bound pods stay Pending, which is all attestation gating needs.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from attestation.adapters.httpclient import unverified_tls
from attestation.core.clock import format_time, utcnow
from attestation.lab.binaries import K8S_VERSION, Binaries
from attestation.lab.kubeconfig import write_kubeconfig
from attestation.lab.pki import CertFiles
from attestation.lab.planecerts import PlaneCerts, webhook_admission_config
from attestation.lab.process import ManagedProcess, ProcessError, free_port

__all__ = ["CONTROLLERS", "ControlPlane"]

#: Controllers this lab runs. The node-lifecycle controller is left out on purpose: with no kubelet
#: posting heartbeats it would mark every node NotReady and evict its pods.
CONTROLLERS = (
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "namespace-controller",
    "garbage-collector-controller",
    "replicaset-controller",
    "deployment-controller",
    "disruption-controller",
    "root-ca-certificate-publisher-controller",
    # Type-checks trustgate's ValidatingAdmissionPolicies (status.typeChecking).
    "validatingadmissionpolicy-status-controller",
    # Folds trustgate-view into the built-in view/edit/admin roles.
    "clusterrole-aggregation-controller",
)


class ControlPlane:
    """Start with :meth:`start`, stop with :meth:`stop` (idempotent; kills every child)."""

    def __init__(
        self,
        workdir: Path,
        binaries: Binaries | None = None,
        *,
        log: Callable[[str], None] = print,
    ) -> None:
        self.workdir = workdir.resolve()  # kubeconfigs hold paths; relative ones break
        self.bin = binaries or Binaries.locate()
        self._log = log
        self._procs: list[ManagedProcess] = []
        self.pki_dir = workdir / "pki"
        self.etcd_port = free_port()
        self.api_port = free_port()
        self.server = f"https://127.0.0.1:{self.api_port}"
        self.kubeconfig = workdir / "admin.kubeconfig"
        self.ca_file = self.pki_dir / "ca.crt"
        self.apiserver: ManagedProcess | None = None
        self.etcd: ManagedProcess | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> ControlPlane:
        started = time.monotonic()
        try:
            self._make_pki()
            self._start_etcd()
            self._start_apiserver()
            self._start_scheduler()
            self._start_controller_manager()
        except BaseException:
            self.stop()
            raise
        self._log(
            f"control plane {K8S_VERSION} ready at {self.server} in "
            f"{time.monotonic() - started:.1f}s (workdir {self.workdir})"
        )
        return self

    def stop(self) -> None:
        for proc in reversed(self._procs):
            proc.stop()
        self._procs.clear()

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- set-up steps --------------------------------------------------------------------------

    def _make_pki(self) -> None:
        self.certs = PlaneCerts.create(self.pki_dir)
        self._write_kubeconfig(self.kubeconfig, _client_cert_user(self.certs.admin))
        self.admission_config = webhook_admission_config(self.certs, self.workdir)

    def _spawn(self, name: str, argv: Sequence[str]) -> ManagedProcess:
        proc = ManagedProcess(name, argv, self.workdir / "logs" / f"{name}.log").start()
        self._procs.append(proc)
        return proc

    def _start_etcd(self) -> None:
        peer = free_port()
        self.etcd = self._spawn(
            "etcd",
            [
                str(self.bin.etcd), "--data-dir", str(self.workdir / "etcd"),
                "--listen-client-urls", f"http://127.0.0.1:{self.etcd_port}",
                "--advertise-client-urls", f"http://127.0.0.1:{self.etcd_port}",
                "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                "--initial-cluster", f"default=http://127.0.0.1:{peer}",
                "--unsafe-no-fsync", "--log-level", "warn",
            ],
        )  # fmt: skip
        url = f"http://127.0.0.1:{self.etcd_port}/health"
        self.etcd.wait_until(lambda: b'"true"' in _http_get(url), 30, "etcd healthy")

    def _start_apiserver(self) -> None:
        d = self.pki_dir
        self.apiserver = self._spawn(
            "kube-apiserver",
            [
                str(self.bin.kube_apiserver),
                f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.api_port}",
                f"--cert-dir={d}",
                f"--tls-cert-file={self.certs.serving.cert}",
                f"--tls-private-key-file={self.certs.serving.key}",
                f"--client-ca-file={self.ca_file}",
                "--authorization-mode=Node,RBAC",
                "--service-cluster-ip-range=10.0.0.0/24",
                f"--service-account-issuer={self.server}",
                f"--service-account-key-file={self.certs.sa_pub}",
                f"--service-account-signing-key-file={self.certs.sa_key}",
                "--allow-privileged=true",
                "--enable-admission-plugins=NodeRestriction",
                f"--admission-control-config-file={self.admission_config}",
                "--endpoint-reconciler-type=none",
                "--profiling=false",
                "--v=1",
            ],
        )
        ctx = self.ssl_context()
        self.apiserver.wait_until(
            lambda: _http_get(f"{self.server}/readyz", ctx) == b"ok", 60, "kube-apiserver ready"
        )

    def _start_scheduler(self) -> None:
        self._start_component("kube-scheduler", self.bin.kube_scheduler, self.certs.scheduler, [])

    def _start_controller_manager(self) -> None:
        self._start_component(
            "kube-controller-manager",
            self.bin.kube_controller_manager,
            self.certs.controller_manager,
            [
                f"--service-account-private-key-file={self.certs.sa_key}",
                f"--root-ca-file={self.ca_file}",
                "--use-service-account-credentials=false",
                f"--controllers={','.join(CONTROLLERS)}",
            ],
        )

    def _start_component(
        self, name: str, binary: Path, cert: CertFiles, flags: Sequence[str]
    ) -> None:
        """A controller-style component: its own client certificate, no leader election, a
        secure health port we poll until it answers."""
        kc = self.workdir / f"{name}.kubeconfig"
        self._write_kubeconfig(kc, _client_cert_user(cert))
        port = free_port()
        proc = self._spawn(
            name,
            [
                str(binary),
                f"--kubeconfig={kc}",
                f"--authentication-kubeconfig={kc}",
                f"--authorization-kubeconfig={kc}",
                *flags,
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={port}",
                "--v=1",
            ],
        )
        # The health port serves a self-signed certificate: only liveness is checked here.
        ctx = unverified_tls()
        proc.wait_until(
            lambda: _http_get(f"https://127.0.0.1:{port}/healthz", ctx) == b"ok",
            30,
            f"{name} healthy",
        )

    # -- clients -------------------------------------------------------------------------------

    def ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        ctx.load_cert_chain(str(self.certs.admin.cert), str(self.certs.admin.key))
        return ctx

    def _write_kubeconfig(self, path: Path, user: Mapping[str, str]) -> Path:
        return write_kubeconfig(path, self.server, self.ca_file, user)

    def kubeconfig_for_token(self, token: str, path: Path) -> Path:
        """A kubeconfig that authenticates with a bearer token (e.g. a ServiceAccount's)."""
        return self._write_kubeconfig(path, user={"token": token})

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        kubeconfig: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        argv = [str(self.bin.kubectl), f"--kubeconfig={kubeconfig or self.kubeconfig}", *args]
        result = subprocess.run(
            argv, input=input, capture_output=True, text=True, timeout=60, check=False
        )
        if check and result.returncode != 0:
            raise ProcessError(
                f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stderr.strip()}"
            )
        return result

    def request(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json"
    ) -> Any:
        """A raw admin API call; returns the decoded JSON. For set-up, not for product code."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(  # noqa: S310 (https to our own API server)
            f"{self.server}{path}",
            data=data,
            method=method,
            headers={"Content-Type": content_type, "Accept": "application/json"},
        )
        with urllib.request.urlopen(req, context=self.ssl_context(), timeout=30) as resp:  # noqa: S310
            return json.loads(resp.read() or b"null")

    def get(self, path: str) -> Any:
        """The object at ``path``, or None when there is none (404)."""
        try:
            return self.request("GET", path)
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return None
            raise

    def delete(self, path: str) -> None:
        """Delete the object at ``path``; one already gone (404) is fine."""
        try:
            self.request("DELETE", path)
        except urllib.error.HTTPError as e:
            if e.code != 404:
                raise

    def create(self, path: str, body: Any) -> None:
        """Create an object unless one of that name exists (409): set-up that may run twice."""
        try:
            self.request("POST", path, body)
        except urllib.error.HTTPError as e:
            if e.code != 409:
                raise

    def token_for(self, namespace: str, service_account: str, *, seconds: int = 3600) -> str:
        """A bound token for a ServiceAccount (created if missing), via the TokenRequest API."""
        self.ensure_namespace(namespace)
        self.create(
            f"/api/v1/namespaces/{namespace}/serviceaccounts",
            {"metadata": {"name": service_account}},
        )
        review = self.request(
            "POST",
            f"/api/v1/namespaces/{namespace}/serviceaccounts/{service_account}/token",
            {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {"expirationSeconds": seconds},
            },
        )
        token: str = review["status"]["token"]
        return token

    def ensure_namespace(self, name: str, labels: Mapping[str, str] | None = None) -> None:
        self.create(
            "/api/v1/namespaces", {"metadata": {"name": name, "labels": dict(labels or {})}}
        )

    def add_node(
        self,
        name: str,
        labels: Mapping[str, str] | None = None,
        *,
        cpu: str = "16",
        memory: str = "64Gi",
        pods: str = "110",
        taints: Sequence[Mapping[str, str]] = (),
    ) -> None:
        """Register a Node the scheduler will use: Ready, with capacity, with ``taints`` and
        without the not-ready taint that TaintNodesByCondition puts on every new node."""
        capacity = {"cpu": cpu, "memory": memory, "pods": pods}
        self.request(
            "POST",
            "/api/v1/nodes",
            {
                "metadata": {
                    "name": name,
                    "labels": {
                        "kubernetes.io/hostname": name,
                        "kubernetes.io/os": "linux",
                        **(labels or {}),
                    },
                },
            },
        )
        now = format_time(utcnow().replace(microsecond=0))  # metav1.Time: whole seconds
        self.request(
            "PATCH",
            f"/api/v1/nodes/{name}/status",
            {
                "status": {
                    "capacity": capacity,
                    "allocatable": capacity,
                    "conditions": [
                        {
                            "type": "Ready",
                            "status": "True",
                            "reason": "KubeletReady",
                            "message": "simulated node (trustgate lab)",
                            "lastHeartbeatTime": now,
                            "lastTransitionTime": now,
                        }
                    ],
                    "nodeInfo": {
                        "kubeletVersion": K8S_VERSION,
                        "architecture": "amd64",
                        "operatingSystem": "linux",
                    },
                }
            },
            content_type="application/strategic-merge-patch+json",
        )
        node = self.request("GET", f"/api/v1/nodes/{name}")
        taints = [
            t
            for t in node["spec"].get("taints") or []
            if t["key"] != "node.kubernetes.io/not-ready"
        ] + [dict(t) for t in taints]
        self.request(
            "PATCH",
            f"/api/v1/nodes/{name}",
            {"spec": {"taints": taints or None}},
            content_type="application/merge-patch+json",
        )


def _http_get(url: str, ctx: ssl.SSLContext | None = None) -> bytes:
    with urllib.request.urlopen(url, context=ctx, timeout=2) as resp:  # noqa: S310
        body: bytes = resp.read()
        return body


def _client_cert_user(cert: CertFiles) -> dict[str, str]:
    return {"client-certificate": str(cert.cert), "client-key": str(cert.key)}

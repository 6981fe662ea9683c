"""The webhook run from inside the trustgate image against the test control plane, as its
Deployment runs it: the manifest's own arguments, the in-cluster ServiceAccount (token, CA and
namespace mounted where the kubelet puts them), uid 65532. The API server then calls it for an
NF pod, and the pod comes back labelled and gated.

``buildah run --isolation chroot`` shares the host's network, so the API server on 127.0.0.1
reaches the webhook on 127.0.0.1 and the webhook the API server (what a pod's Service and
``KUBERNETES_SERVICE_HOST`` give it in a cluster).
"""

from __future__ import annotations

import shutil
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from attestation.adapters.httpclient import unverified_tls  # only asking: is it up
from attestation.core.names import NF_LABEL, SCHEDULING_GATE
from attestation.core.signing import generate_private_key, public_key_to_pem
from attestation.lab.cluster import NAMESPACE, manifests_dir, register_webhooks, unregister_webhooks
from attestation.lab.poll import wait_for
from attestation.lab.process import ManagedProcess, free_port
from tests.image import buildah as img
from tests.image.buildah import BUILD_TIMEOUT
from tests.support.controlplane import ClusterHandle

#: The first test's set-up builds the images: minutes cold on a busy machine (see conftest).
pytestmark = [pytest.mark.image, pytest.mark.timeout(BUILD_TIMEOUT)]

SA, TLS_SECRET = "trustgate-webhook", "trustgate-webhook-tls"
#: Where the kubelet mounts it (/var/run/secrets/...; /var/run is /run, which `buildah run`
#: covers with a tmpfs: a mount below /var/run would land under it, unseen).
SERVICE_ACCOUNT_DIR = "/run/secrets/kubernetes.io/serviceaccount"
UID = 65532


@dataclass
class Running:
    cluster: ClusterHandle
    process: ManagedProcess
    namespace: str
    port: int


def manifest_args(port: int) -> list[str]:
    """The webhook container's arguments in manifests/webhook.yaml, on ``port`` and with the
    address the API server calls here (127.0.0.1: no Service in the test control plane)."""
    docs = yaml.safe_load_all((manifests_dir() / "webhook.yaml").read_text())
    deployment = next(d for d in docs if d and d["kind"] == "Deployment")
    args = list(deployment["spec"]["template"]["spec"]["containers"][0]["args"])
    args = [f"--port={port}" if a.startswith("--port=") else a for a in args]
    return [*args, "--host=127.0.0.1", "--tls-ip-san=127.0.0.1"]


def _mounts(work: Path, cluster: ClusterHandle) -> dict[Path, str]:
    """Host directories to mount, as the kubelet would: the ServiceAccount's files and the
    verifier's public key (ConfigMap), owned by the pod's user (fsGroup does that in a pod)."""
    account, key = work / "serviceaccount", work / "verifier-key"
    account.mkdir()
    key.mkdir()
    (account / "token").write_text(cluster.token_for(NAMESPACE, SA))
    shutil.copy(cluster.plane.ca_file, account / "ca.crt")
    (account / "namespace").write_text(NAMESPACE)
    (key / "key.pub").write_bytes(public_key_to_pem(generate_private_key().public_key()))
    for directory in (account, key):
        for path in (directory, *directory.iterdir()):
            shutil.chown(path, UID, UID)
    return {account: SERVICE_ACCOUNT_DIR, key: "/etc/trustgate/verifier-key"}


@pytest.fixture(scope="module")
def webhook_in_image(
    opened: dict[str, img.Opened],
    trustgate_installed: ClusterHandle,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Running]:
    cluster = trustgate_installed
    work = tmp_path_factory.mktemp("image-webhook")
    namespace = cluster.unique("image-core")
    cluster.ensure_namespace(namespace, {"trustgate.io/protected": "true"})
    cluster.delete(f"/api/v1/namespaces/{NAMESPACE}/secrets/{TLS_SECRET}")
    port = free_port()
    register_webhooks(cluster.plane, port)  # as the manifests ship: the webhook adds caBundle
    volumes = [f"--volume={host}:{inside}:ro" for host, inside in _mounts(work, cluster).items()]
    env = {
        "KUBERNETES_SERVICE_HOST": "127.0.0.1",
        "KUBERNETES_SERVICE_PORT": str(cluster.plane.api_port),
        "POD_NAME": "trustgate-webhook-image",
        "POD_NAMESPACE": NAMESPACE,
    }
    container = opened["controller"].container
    argv = [
        "bash", str(img.SCRIPTS / "buildah.sh"), "run", "--isolation", "chroot",
        "--network", "host", *volumes, *(f"--env={k}={v}" for k, v in env.items()),
        container, "--", "trustgate", *manifest_args(port),
    ]  # fmt: skip
    process = ManagedProcess("webhook-in-image", argv, work / "webhook.log")
    try:
        process.start()
        process.wait_until(lambda: _ready(port), 120, "webhook in the image ready")
        yield Running(cluster, process, namespace, port)
    finally:
        unregister_webhooks(cluster.plane)  # failurePolicy Fail would refuse later NF pods
        process.stop()
        cluster.delete(f"/api/v1/namespaces/{NAMESPACE}/secrets/{TLS_SECRET}")
        cluster.delete(f"/api/v1/namespaces/{namespace}")


def test_webhook_from_the_image_is_called_by_the_api_server(webhook_in_image: Running) -> None:
    running = webhook_in_image
    pod = wait_for("the API server to call the webhook in the image", lambda: _create(running))
    assert pod["metadata"]["labels"][NF_LABEL] == "upf"
    assert pod["spec"]["schedulingGates"] == [{"name": SCHEDULING_GATE}]


def test_webhook_in_the_image_runs_as_uid_65532_from_the_image_s_python(
    webhook_in_image: Running,
) -> None:
    pid = _serving_pid(webhook_in_image.process)
    status = Path(f"/proc/{pid}/status").read_text()
    uids = next(line.split()[1:] for line in status.splitlines() if line.startswith("Uid:"))
    assert uids == [str(UID)] * 4
    # the interpreter is the image's (its root is a directory of the image store), not the venv's
    exe = Path(f"/proc/{pid}/exe").resolve()
    assert str(exe).startswith(str(img.STORE)), exe


def _serving_pid(process: ManagedProcess) -> int:
    """The process under ``buildah run`` (its descendants) whose command is `trustgate webhook`."""
    assert process.pid is not None
    children: dict[int, list[int]] = {}
    commands: dict[int, list[bytes]] = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
                commands[int(proc.name)] = (proc / "cmdline").read_bytes().split(b"\0")
            except (OSError, IndexError, ValueError):
                continue  # gone meanwhile
            children.setdefault(ppid, []).append(int(proc.name))
    todo = list(children.get(process.pid, []))
    while todo:
        pid = todo.pop()
        command = commands.get(pid, [])
        if b"webhook" in command and not any(b"buildah" in part for part in command):
            return pid
        todo.extend(children.get(pid, []))
    raise AssertionError(f"no `trustgate webhook` process under {process.pid}")


def _create(running: Running) -> dict[str, Any] | None:
    try:
        pod: dict[str, Any] = running.cluster.request(
            "POST", f"/api/v1/namespaces/{running.namespace}/pods",
            {"metadata": {"name": "upf-image", "labels": {"app": "free5gc-upf"}},
             "spec": {"containers": [{"name": "upf", "image": "free5gc/upf"}]}},
        )  # fmt: skip
    except urllib.error.HTTPError:
        return None
    return pod


def _ready(port: int) -> bool:
    try:
        url = f"https://127.0.0.1:{port}/readyz"
        with urllib.request.urlopen(url, context=unverified_tls(), timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False

"""Record the AdmissionReviews a real kube-apiserver sends, as unit-test vectors.

Run once (needs the lab's Kubernetes binaries, see scripts/setup.sh):
    .venv/bin/python -m tests.unit.vectors.admission.record

It starts the lab control plane, serves a recording webhook over TLS on 127.0.0.1 that allows
everything, registers it for pods (all operations) and pods/binding in a protected namespace, and
drives the cases the webhook must handle: named and generateName NF pods, a non-NF pod, a preset
nodeName, dryRun, label and scheduling-gate updates, an ephemeral container (``kubectl debug``),
DELETE, and the scheduler's bindings.
"""

from __future__ import annotations

import base64
import contextlib
import json
import tempfile
import threading
import time
import urllib.error
from pathlib import Path
from typing import Any

import uvicorn

from attestation.lab.controlplane import ControlPlane
from attestation.lab.pki import CertificateAuthority
from attestation.lab.process import free_port

HERE = Path(__file__).parent
NAMESPACE = "5gc"
NODE = "worker-1"
Scope = dict[str, Any]


class Recorder:
    """An ASGI app that keeps every review body and allows it."""

    def __init__(self) -> None:
        self.reviews: list[tuple[str, dict[str, Any]]] = []

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        review = json.loads(body)
        self.reviews.append((scope["path"].strip("/"), review))
        answer = {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "response": {"uid": review["request"]["uid"], "allowed": True},
        }
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": json.dumps(answer).encode()})


def _webhook(kind: str, url: str, ca: bytes) -> dict[str, Any]:
    ops = ["CREATE", "UPDATE", "DELETE"]
    hook: dict[str, Any] = {
        "name": f"{kind}.record.trustgate.io",
        "admissionReviewVersions": ["v1"],
        "sideEffects": "NoneOnDryRun",
        "timeoutSeconds": 5,
        "failurePolicy": "Fail",
        "clientConfig": {"url": url, "caBundle": base64.b64encode(ca).decode()},
        "rules": [
            {
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "operations": ops,
                "resources": ["pods", "pods/binding", "pods/ephemeralcontainers"],
                "scope": "Namespaced",
            }
        ],
        "namespaceSelector": {"matchLabels": {"trustgate.io/protected": "true"}},
    }
    kind_name = "Mutating" if kind == "mutate" else "Validating"
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": f"{kind_name}WebhookConfiguration",
        "metadata": {"name": f"record-{kind}"},
        "webhooks": [hook],
    }


def _pod(name: str, labels: dict[str, str], **spec: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"labels": labels}
    meta["generateName" if name.endswith("-") else "name"] = name
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {"containers": [{"name": "main", "image": "registry.k8s.io/pause:3.10"}], **spec},
    }


def _wait_bound(plane: ControlPlane, name: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        pod = plane.request("GET", f"/api/v1/namespaces/{NAMESPACE}/pods/{name}")
        if pod["spec"].get("nodeName"):
            return
        time.sleep(0.1)
    raise TimeoutError(f"pod {name} was not bound")


def drive(plane: ControlPlane) -> None:
    pods = f"/api/v1/namespaces/{NAMESPACE}/pods"
    plane.request("POST", pods, _pod("upf-0", {"app": "free5gc-upf"}))
    _wait_bound(plane, "upf-0")
    created = plane.request("POST", pods, _pod("amf-", {"app.kubernetes.io/name": "open5gs-amfd"}))
    _wait_bound(plane, created["metadata"]["name"])
    plane.request("POST", pods, _pod("nginx", {"app": "nginx"}))
    _wait_bound(plane, "nginx")
    plane.request("POST", pods, _pod("smf-pinned", {"nf": "smf"}, nodeName=NODE))
    plane.request("POST", pods + "?dryRun=All", _pod("upf-dry", {"app": "upf"}))
    plane.request(
        "POST",
        pods,
        _pod("upf-gated", {"app": "upf1"}, schedulingGates=[{"name": "trustgate.io/attestation"}]),
    )
    plane.request(
        "PATCH",
        f"{pods}/upf-gated",
        {"spec": {"schedulingGates": None}},
        content_type="application/merge-patch+json",
    )
    debug = {"name": "debugger", "image": "busybox", "targetContainerName": "main"}
    plane.request(
        "PATCH",
        f"{pods}/upf-0/ephemeralcontainers",
        {"spec": {"ephemeralContainers": [debug]}},
        content_type="application/strategic-merge-patch+json",
    )
    plane.request(
        "PATCH",
        f"{pods}/upf-0",
        {"metadata": {"labels": {"app": None, "team": "core"}}},
        content_type="application/merge-patch+json",
    )
    plane.request("DELETE", f"{pods}/nginx")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        ca = CertificateAuthority.create(work / "webhook-pki", "record-ca")
        serving = ca.issue(
            work / "webhook-pki", "serving", "127.0.0.1", ip_addresses=("127.0.0.1",), server=True
        )
        recorder = Recorder()
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(
                recorder,
                host="127.0.0.1",
                port=port,
                ssl_certfile=str(serving.cert),
                ssl_keyfile=str(serving.key),
                log_level="warning",
                lifespan="off",
            )
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        with ControlPlane(work / "cp") as plane:
            plane.ensure_namespace(NAMESPACE, {"trustgate.io/protected": "true"})
            plane.add_node(NODE)
            ca_pem = ca.files.cert.read_bytes()
            for kind in ("mutate", "validate"):
                cfg = _webhook(kind, f"https://127.0.0.1:{port}/{kind}", ca_pem)
                plane.request(
                    "POST",
                    f"/apis/admissionregistration.k8s.io/v1/{cfg['kind'].lower()}s",
                    cfg,
                )
            deadline = time.monotonic() + 20
            while not recorder.reviews and time.monotonic() < deadline:
                with contextlib.suppress(urllib.error.HTTPError):
                    plane.request(
                        "POST",
                        f"/api/v1/namespaces/{NAMESPACE}/pods?dryRun=All",
                        _pod("probe", {"app": "probe"}),
                    )
                time.sleep(0.2)
            recorder.reviews.clear()
            drive(plane)
        server.should_exit = True
        thread.join(timeout=5)
    for endpoint, review in recorder.reviews:
        req = review["request"]
        obj = req.get("object") or req.get("oldObject") or {}
        name = req.get("name") or obj.get("metadata", {}).get("generateName", "") + "generated"
        sub = "-" + req["subResource"] if req.get("subResource") else ""
        dry = "-dryrun" if req.get("dryRun") else ""
        stem = f"{endpoint}-pods{sub}-{req['operation'].lower()}-{name}{dry}"
        (HERE / f"{stem}.json").write_text(json.dumps(review, indent=2, sort_keys=True) + "\n")
        print("recorded", stem)


if __name__ == "__main__":
    main()

"""The agent farm of the verifier benches: many node identities served by one process, and the
lab they run in (control plane, swtpms, the farm).

The farm (this file run with ``--farm CONFIG``, or ``farm_main``) serves every node under
``/nodes/<name>/v1/...``; each node's agent URL given to the verifier is
``http://127.0.0.1:<port>/nodes/<name>``, so the real collector adds ``/v1/evidence`` etc. Every
node has its own AK (``Tpm.create_ak()``) on one of a few swtpms (many AKs per TPM, the real
``attestation.agent.tpm.Tpm`` per node): every quote is a real TPM2_Quote over the verifier's
fresh nonce, every enrollment a real ActivateCredential. Nodes on one swtpm share its PCRs and so
its IMA log (boot_aggregate + host files, written like the kernel's). Steady state: no new log
entries. The farm is a load generator only; it is not the agent under test (bench/agent_bench.py).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import ssl
import sys
import threading
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import http_ok, install_trustgate, write_policies

from attestation.agent.tpm import Tpm
from attestation.core.evidence import (
    Evidence,
    EvidenceFormatError,
    Identity,
    decode_activate_request,
    decode_evidence_request,
    encode_evidence,
    encode_identity,
)
from attestation.core.signing import generate_private_key, private_key_to_pem
from attestation.core.types import HashAlg
from attestation.lab.controlplane import ControlPlane
from attestation.lab.ima_writer import ImaWriter
from attestation.lab.process import ManagedProcess, free_port
from attestation.lab.swtpm import LocalCa, SwTpm
from tests.support.lab import FILES

__all__ = ["BUCKET_LABEL", "Farm", "FarmLab", "api_writes", "approve_shared_eks", "call",
           "farm_lab", "node_names", "register_nodes"]  # fmt: skip

BUCKET_LABEL = "trustgate.bench/scale-bucket"
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
#: The API server's request verbs that write.
_WRITE_VERBS = frozenset({"POST", "PUT", "PATCH", "DELETE", "APPLY"})


class Farm:
    """Many node identities, one ASGI app. Each swtpm gets one worker thread: swtpm serves one
    connection at a time, so its nodes' TPM calls queue there."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.tpms: list[dict[str, Any]] = config["tpms"]
        self.executors = [ThreadPoolExecutor(1) for _ in self.tpms]
        self.logs = [Path(t["log"]).read_bytes() for t in self.tpms]
        self.node_tpm: dict[str, tuple[int, Tpm]] = {}
        self.identities: dict[str, Identity] = {}
        self.last: dict[str, float] = {}
        self.gaps: list[float] = []
        self.served = 0
        self.errors = 0
        self.activations = 0
        self._lock = threading.Lock()

    def add_nodes(self, names: list[str]) -> None:
        """Create one AK per node, the swtpms' work spread over their threads."""
        new = [n for n in names if n not in self.node_tpm]
        ek = [
            self.executors[k].submit(self._ek, t["tcti"]).result() for k, t in enumerate(self.tpms)
        ]
        futures = []
        for i, name in enumerate(new):
            k = (len(self.node_tpm) + i) % len(self.tpms)
            tpm = Tpm(self.tpms[k]["tcti"], ek_alg="rsa")
            futures.append((name, k, tpm, self.executors[k].submit(tpm.create_ak)))
        for name, k, tpm, future in futures:
            ak = future.result()
            self.node_tpm[name] = (k, tpm)
            cert, public = ek[k]
            self.identities[name] = Identity(name, cert, public, ak.public, tpm.ak_name())

    @staticmethod
    def _ek(tcti: str) -> tuple[bytes, bytes]:
        tpm = Tpm(tcti, ek_alg="rsa")
        return tpm.ek_certificate(), tpm.ek_public()

    def stats(self, reset: bool) -> dict[str, Any]:
        with self._lock:
            out = {
                "served": self.served,
                "errors": self.errors,
                "activations": self.activations,
                "gaps": self.gaps,
                "nodes": len(self.node_tpm),
            }
            if reset:
                self.served, self.errors, self.gaps = 0, 0, []
        return out

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        try:
            status, answer = await self._route(scope["path"], body)
        except (EvidenceFormatError, ValueError, KeyError) as e:
            status, answer = 400, {"error": str(e)}
        except Exception as e:  # a TPM error: the verifier sees a 503, as from a real agent
            with self._lock:
                self.errors += 1
            status, answer = 503, {"error": repr(e)}
        raw = json.dumps(answer).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(raw))]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": raw})

    async def _route(self, path: str, body: bytes) -> tuple[int, Any]:
        loop = asyncio.get_running_loop()
        if path == "/stats":
            return 200, self.stats(reset=False)
        if path == "/stats/reset":
            return 200, self.stats(reset=True)
        if path == "/nodes":
            names = json.loads(body)
            await loop.run_in_executor(None, self.add_nodes, names)
            return 200, {"nodes": len(self.node_tpm)}
        _, nodes, name, version, endpoint = path.split("/", 4)
        if nodes != "nodes" or version != "v1" or name not in self.node_tpm:
            return 404, {"error": f"no route {path}"}
        k, tpm = self.node_tpm[name]
        if endpoint == "identity":
            return 200, encode_identity(self.identities[name])
        if endpoint == "activate":
            blob, secret = decode_activate_request(json.loads(body))
            recovered = await loop.run_in_executor(
                self.executors[k], tpm.activate_credential, blob, secret
            )
            with self._lock:
                self.activations += 1
            return 200, {"secret": base64.b64encode(recovered).decode()}
        if endpoint == "evidence":
            query = decode_evidence_request(json.loads(body))
            quote = await loop.run_in_executor(
                self.executors[k], tpm.quote, query.nonce, query.pcrs, query.banks
            )
            now = time.monotonic()
            with self._lock:
                self.served += 1
                last = self.last.get(name)
                if last is not None:
                    self.gaps.append(now - last)
                self.last[name] = now
            evidence = Evidence(
                quote.attest, quote.signature, quote.pcr_values, query.ima_offset,
                self.logs[k][query.ima_offset :],
            )  # fmt: skip
            return 200, encode_evidence(evidence)
        return 404, {"error": f"no route {path}"}


def farm_main(config_path: Path) -> None:
    import uvicorn

    config = json.loads(config_path.read_text())
    uvicorn.run(
        Farm(config), host="127.0.0.1", port=config["port"], log_level="warning",
        lifespan="off", backlog=4096,
    )  # fmt: skip


# --- the driver ---------------------------------------------------------------------------------


def call(url: str, body: Any = None, timeout: float = 600) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="POST" if data else "GET")  # noqa: S310
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - loopback
        return json.loads(resp.read())


def node_names(n: int) -> list[str]:
    return [f"s{i:04d}" for i in range(n)]


def register_nodes(plane: ControlPlane, names: list[str], bucket: int) -> None:
    """Node objects in one kubectl call (no status: the verifier only lists them)."""
    items = [
        {"apiVersion": "v1", "kind": "Node",
         "metadata": {"name": n, "labels": {BUCKET_LABEL: str(bucket)}}}
        for n in names
    ]  # fmt: skip
    plane.kubectl("create", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                          "items": items}))  # fmt: skip


@dataclass
class FarmLab:
    plane: ControlPlane
    ca: LocalCa
    workdir: Path
    farm_url: str


@contextlib.contextmanager
def farm_lab(workdir: Path, tpms: int) -> Iterator[FarmLab]:
    """The control plane with trustgate installed, ``tpms`` swtpms with their IMA logs, the
    farm serving their nodes, the policies and a signing key in ``workdir``."""
    plane = ControlPlane(workdir / "control-plane", log=lambda m: print(f"[control-plane] {m}"))
    swtpms: list[SwTpm] = []
    farm: ManagedProcess | None = None
    try:
        plane.start()
        install_trustgate(plane)
        write_policies(workdir / "policies")
        (workdir / "signing.pem").write_bytes(private_key_to_pem(generate_private_key()))
        ca = LocalCa.create(workdir / "tpm-ca")
        config: dict[str, Any] = {"port": free_port(), "tpms": []}
        for k in range(tpms):
            swtpm = SwTpm(ca, workdir / f"tpm-{k}")
            swtpm.start()
            swtpms.append(swtpm)
            writer = ImaWriter(workdir / f"ima-{k}.log", extend=swtpm.extend_pcr,
                               template="ima-cgpath")  # fmt: skip
            pcrs = swtpm.read_pcrs(list(range(8)), (HashAlg.SHA256,))[HashAlg.SHA256]
            writer.boot_aggregate(pcrs)
            for path, content in FILES["host"].items():
                writer.measure(path, content)
            config["tpms"].append({"tcti": swtpm.tcti, "log": str(writer.log_path)})
        (workdir / "farm.json").write_text(json.dumps(config))
        farm_url = f"http://127.0.0.1:{config['port']}"
        farm = ManagedProcess(
            "farm", [sys.executable, __file__, "--farm", str(workdir / "farm.json")],
            workdir / "farm.log",
        ).start()  # fmt: skip
        farm.wait_until(lambda: http_ok(f"{farm_url}/stats"), 60, "farm up")
        yield FarmLab(plane, ca, workdir, farm_url)
    finally:
        if farm is not None:
            farm.stop()
        for swtpm in swtpms:
            swtpm.stop(orderly=False)
        plane.stop()


def approve_shared_eks(lab: FarmLab, names: list[str]) -> None:
    """The farm's nodes share a few TPMs, so their EKs: a verifier refuses an EK another node is
    bound to (``enroll.ek_reused``) until an operator approves it for the node. Approve each
    node's EK as ``trustgate node approve`` would (its NodeAttestation's spec, as the admin)."""
    from attestation.core.enroll import ek_digest
    from attestation.core.names import APPROVED_EK_FIELD, NODEATTESTATION_API_VERSION

    items = []
    for name in names:
        identity = call(f"{lab.farm_url}/nodes/{name}/v1/identity")
        digest = ek_digest(base64.b64decode(identity["ekPublic"]))
        items.append({"apiVersion": NODEATTESTATION_API_VERSION, "kind": "NodeAttestation",
                      "metadata": {"name": name}, "spec": {APPROVED_EK_FIELD: digest}})  # fmt: skip
    listed = json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
    lab.plane.kubectl("apply", "--server-side", "-f", "-", input=listed)


def api_writes(plane: ControlPlane) -> dict[str, float]:
    """The API server's count of write requests so far, by resource (``nodeattestations/status``,
    ``leases``, ...): its own ``apiserver_request_total``, read as the admin."""
    from prometheus_client.parser import text_string_to_metric_families

    ctx: ssl.SSLContext = plane.ssl_context()
    with urllib.request.urlopen(f"{plane.server}/metrics", context=ctx, timeout=30) as r:  # noqa: S310 - our own API server
        text = r.read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name != "apiserver_request_total" or s.labels.get("verb") not in _WRITE_VERBS:
                continue
            resource = s.labels.get("resource", "")
            if s.labels.get("subresource"):
                resource += "/" + s.labels["subresource"]
            out[resource] = out.get(resource, 0.0) + s.value
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="the agent farm (started by the benches)")
    parser.add_argument("--farm", type=Path, required=True)
    farm_main(parser.parse_args().farm)

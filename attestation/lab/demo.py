"""`trustgate demo`: the whole story on one machine, narrated, with every step checked.

Nodes enroll and attest -> AMF/SMF/UPF schedule only onto attested nodes -> an unknown binary
runs inside the UPF pod -> detected -> that UPF pod evicted and replaced on a trusted node, SMF and
AMF untouched -> worker-3's agent stops -> worker-3 untrusted after max-age, new NF pods avoid it.
Everything is real (control plane, swtpm TPMs, agents, verifier, webhook, scheduler) but the
kernel's IMA: the lab writes the measurement list as the kernel does and extends PCR 10 of the
node's TPM with the same digests; ``--real-node`` adds a worker on a real kernel (``realdemo``).
"""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from attestation.adapters.filetree import from_tree
from attestation.core.clock import parse_time
from attestation.core.names import ATTESTED_LABEL, NF_LABEL, TRUST_STATE_ANNOTATION, UNTRUSTED_TAINT
from attestation.lab.cluster import LabCluster, manifests_dir
from attestation.lab.node import trustgate_exe
from attestation.lab.poll import wait_for
from attestation.lab.realdemo import real_node_step
from attestation.lab.timeline import Sample, Timeline
from attestation.verifier.settings import VerifierSettings

__all__ = ["ATTACK", "IMAGES", "NAMESPACE", "NODES", "Demo", "StepFailed", "run_demo"]

NAMESPACE = "5g-core"
NODES = ("worker-1", "worker-2", "worker-3")
#: What each image contains, and so what its containers execute (and IMA measures).
IMAGES: dict[str, dict[str, bytes]] = {
    "host": {
        "/usr/bin/containerd": b"containerd 2.0.4",
        "/usr/bin/containerd-shim-runc-v2": b"shim 2.0.4",
        "/usr/bin/kubelet": b"kubelet v1.34.4",
        "/usr/sbin/runc": b"runc 1.2.5",
    },
    # the samples' images: oai-amf, open5gs-smf, towards5gs free5gc-upf
    "amf": {"/openair-amf/bin/oai_amf": b"oai-amf v2.1.0", "/usr/lib/libsctp.so.1": b"sctp"},
    "smf": {"/usr/bin/open5gs-smfd": b"open5gs-smfd 2.7.2", "/usr/lib/libogscore.so": b"ogs"},
    "upf": {"/free5gc/upf": b"free5gc-upf v3.3.0", "/usr/lib/libgtp5g.so": b"gtp5g 0.8"},
}
ATTACK = ("/usr/bin/nc", b"a netcat the attacker dropped into the container")


class StepFailed(RuntimeError):
    """A step of the scenario did not hold; the demo exits non-zero."""


class Demo:
    def __init__(self, out: Path, *, interval: float, max_age: float, real: bool = False) -> None:
        self.out, self.real = out, real
        self.interval = interval
        self.max_age = max_age
        self.t0 = time.monotonic()
        self.lab = LabCluster(out / "lab", log=self.say)
        self.timeline = Timeline()
        self.checks: list[str] = []

    # -- narration -------------------------------------------------------------------------------

    def say(self, message: str) -> None:
        print(f"[{time.monotonic() - self.t0:6.1f}s] {message}", flush=True)

    def step(self, title: str) -> None:
        print(f"\n== {title}", flush=True)

    def check(self, ok: bool, what: str) -> None:
        if not ok:
            raise StepFailed(what)
        self.checks.append(what)
        self.say(f"  ok: {what}")

    def kubectl(self, *args: str) -> str:
        return self.lab.plane.kubectl(*args).stdout

    def show(self, *args: str) -> None:
        print("\n$ kubectl " + " ".join(args))
        print(self.kubectl(*args).rstrip())

    # -- the scenario ----------------------------------------------------------------------------

    def run(self) -> None:
        self._set_up()
        pods = self._attest_and_schedule()
        self._attack_the_upf(pods)
        self._stop_an_agent()
        self._audit_trail()
        if self.real:
            self.step("6: a worker on a real Linux kernel, our ima-cgpath patch (--real-node)")
            real_node_step(self.lab, self.out / "real", self.say, self.check)

    def _set_up(self) -> None:
        self.step("Setting up: control plane, TPMs, nodes, verifier, webhook")
        self.lab.start()
        self.lab.install()
        self.say("applied manifests/: namespace, NodeAttestation CRD, least-privilege RBAC")
        self._policies()
        for name in NODES:
            self.lab.add_node(name, IMAGES["host"])
            self.say(f"{name}: swtpm with an EK certificate, IMA log, `trustgate agent` on TLS")
        self.lab.start_webhook()
        self.say("webhook: running with the trustgate-webhook ServiceAccount, registered over TLS")
        self.lab.start_verifier(interval=self.interval, max_age=self.max_age)
        self.say(
            f"verifier: running with the trustgate-verifier ServiceAccount (interval "
            f"{self.interval:g}s, max-age {self.max_age:g}s, push on)"
        )
        self.timeline.record(self._sample)

    def _attest_and_schedule(self) -> dict[str, dict[str, Any]]:
        self.step("1: nodes enroll (EK chain + credential activation) and attest")
        for name in NODES:
            wait_for(f"{name} Trusted", functools.partial(self.lab.trusted, name), 60)
        self.timeline.mark("nodes attested")
        self.check(True, "all three nodes Trusted, signed by the verifier")
        self.show("get", "nodeattestations")
        self.show("get", "nodes", "-L", ATTESTED_LABEL)

        self.step("2: AMF, SMF and UPF are deployed: they schedule only onto attested nodes")
        self.kubectl("apply", "-k", str(manifests_dir() / "samples"))
        pods = self._wait_nf_pods_bound({"amf", "smf", "upf"})
        self.timeline.mark("NF pods bound")
        for pod in pods.values():
            meta = pod["metadata"]
            self.check(
                self.lab.trusted(pod["spec"]["nodeName"]),
                f"{meta['name']} ({meta['labels'][NF_LABEL]}) bound to attested node "
                f"{pod['spec']['nodeName']}",
            )
        self._start_containers(pods)
        self.show("get", "pods", "-n", NAMESPACE, "-o", "wide", "-L", NF_LABEL)
        return pods

    def _attack_the_upf(self, pods: dict[str, dict[str, Any]]) -> None:
        self.step("3: attack: an unknown binary runs inside the UPF pod")
        upf = pods["upf"]
        node = self.lab.nodes[upf["spec"]["nodeName"]]
        neighbours = {nf: p for nf, p in pods.items() if nf != "upf"}
        self.say(f"exec {ATTACK[0]} in {upf['metadata']['name']} on {node.name} (IMA measures "
                 "it into that container's cgroup)")  # fmt: skip
        attacked_at = datetime.now(UTC)
        node.run_in_pod(upf["metadata"]["uid"], *ATTACK)
        self.timeline.mark("nc runs in UPF")
        evicted = wait_for("the UPF pod evicted", lambda: self._deleting(upf), 15, every=0.02)
        latency = self._eviction_latency(upf["metadata"]["uid"], attacked_at)
        self.timeline.mark("UPF evicted")
        self.check(bool(evicted), f"{upf['metadata']['name']} evicted {latency * 1000:.0f} ms "
                   "after the binary ran")  # fmt: skip
        self.check(latency < 1.0, "detected and evicted within a second (push, not polling)")
        for nf, pod in neighbours.items():
            current = self._pod(pod)
            self.check(
                current is not None and not current["metadata"].get("deletionTimestamp")
                and _trust(current) == "trusted",
                f"{nf.upper()} {pod['metadata']['name']} untouched and still trusted",
            )  # fmt: skip
        alone = f"{node.name} itself stays Trusted: only the divergent pod is removed"
        self.check(self.lab.trusted(node.name), alone)
        self._describe_trust(upf)
        self._complete_termination(upf)
        replacement = self._wait_nf_pods_bound({"upf"}, exclude={upf["metadata"]["uid"]})["upf"]
        self._start_containers({"upf": replacement})
        self.check(True, f"replacement {replacement['metadata']['name']} scheduled onto attested "
                   f"node {replacement['spec']['nodeName']} and trusted")  # fmt: skip

    def _stop_an_agent(self) -> None:
        self.step("4: worker-3's agent stops: its evidence goes stale")
        self.lab.nodes["worker-3"].stop_agent()
        self.timeline.mark("worker-3 agent stops")
        stopped = time.monotonic()
        wait_for("worker-3 no longer trusted", lambda: self.lab.nodeattestation_state("worker-3")
                 not in (None, "Trusted"), self.max_age + 3 * self.interval + 10)  # fmt: skip
        waited = time.monotonic() - stopped
        self.timeline.mark("worker-3 untrusted")
        self.check(waited <= self.max_age + 2 * self.interval + 5,
                   f"worker-3 {self.lab.nodeattestation_state('worker-3')} after {waited:.1f}s "
                   f"(max-age {self.max_age:g}s)")  # fmt: skip
        node3 = self.lab.get("/api/v1/nodes/worker-3")
        self.check(
            node3["metadata"]["labels"].get(ATTESTED_LABEL) == "false"
            and any(t["key"] == UNTRUSTED_TAINT for t in node3["spec"].get("taints") or []),
            f"worker-3 labelled {ATTESTED_LABEL}=false and tainted {UNTRUSTED_TAINT}",
        )
        self.show("get", "nodeattestations")
        before = {p["metadata"]["uid"] for p in self.lab.pods(NAMESPACE)}
        amf = self._deployment_of("amf")
        self.kubectl("scale", "deployment", amf, "-n", NAMESPACE, "--replicas=4")
        self.timeline.mark("AMF scaled to 4")
        new = wait_for("3 new AMF pods bound", lambda: self._new_bound("amf", before, 3), 60)
        self._start_containers({f"amf-{k}": p for k, p in enumerate(new)})
        self.check(
            all(p["spec"]["nodeName"] != "worker-3" for p in new),
            "new AMF pods avoid worker-3: "
            + ", ".join(f"{p['metadata']['name']}->{p['spec']['nodeName']}" for p in new),
        )

    def _audit_trail(self) -> None:
        self.step("5: the audit trail")
        result = subprocess.run(
            [trustgate_exe(), "audit", "verify", str(self.lab.audit_log)],
            capture_output=True, text=True, check=False, timeout=60,
        )  # fmt: skip
        print(f"$ trustgate audit verify {self.lab.audit_log}\n{result.stdout.strip()}")
        self.check(result.returncode == 0, "audit chain verifies")
        time.sleep(1.0)  # let the timeline catch the last annotations
        self.timeline.stop()
        png = self.out / "timeline.png"
        self.timeline.draw(png, "trustgate demo: node and pod trust over time")
        self.say(f"timeline written to {png}")

    # -- pieces ----------------------------------------------------------------------------------

    def _policies(self) -> None:
        """Runtime policies generated from each network function's image, as an operator would
        (`trustgate policy generate`): every file the image holds, hashed."""
        images = self.out / "lab" / "images"
        docs = {}
        for nf, files in IMAGES.items():
            root = images / nf
            for path, content in files.items():
                target = root / path.lstrip("/")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(content)
            docs[nf] = from_tree(root, name=nf, network_function=nf)
        self.lab.write_policies(docs)
        self.say(f"runtime policies generated from images: {', '.join(sorted(docs))}")

    def _sample(self) -> Sample:
        sample: Sample = {}
        for name in NODES:
            sample[f"node {name}"] = self.lab.nodeattestation_state(name) or "none"
        for pod in self.lab.pods(NAMESPACE):
            meta = pod["metadata"]
            if NF_LABEL not in (meta.get("labels") or {}):
                continue
            state = "evicted" if meta.get("deletionTimestamp") else _trust(pod) or "pending"
            sample[f"pod {meta['name']}"] = state
        return sample

    def _nf_pods(self) -> list[dict[str, Any]]:
        return [p for p in self.lab.pods(NAMESPACE)
                if NF_LABEL in (p["metadata"].get("labels") or {})]  # fmt: skip

    def _wait_nf_pods_bound(
        self, kinds: set[str], exclude: set[str] | None = None
    ) -> dict[str, dict[str, Any]]:
        def bound() -> dict[str, dict[str, Any]] | None:
            found: dict[str, dict[str, Any]] = {}
            for pod in self._nf_pods():
                nf = pod["metadata"]["labels"][NF_LABEL]
                if pod["metadata"]["uid"] in (exclude or set()) or pod["metadata"].get(
                    "deletionTimestamp"
                ):
                    continue
                if nf in kinds and pod["spec"].get("nodeName"):
                    found.setdefault(nf, pod)
            return found if set(found) == kinds else None

        pods: dict[str, dict[str, Any]] = wait_for(
            f"{', '.join(sorted(kinds))} pods scheduled", bound, 90
        )
        for pod in pods.values():
            spec = pod["spec"]
            terms = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
                "requiredDuringSchedulingIgnoredDuringExecution"
            ) or {}
            self.check(
                ATTESTED_LABEL in json.dumps(terms),
                f"{pod['metadata']['name']}: webhook added the attested-node affinity, "
                "gated it until a node was trusted, and the verifier lifted the gate",
            )
        return pods

    def _start_containers(self, pods: dict[str, dict[str, Any]]) -> None:
        for nf, pod in pods.items():
            node = self.lab.nodes[pod["spec"]["nodeName"]]
            for path, content in IMAGES[nf.split("-")[0]].items():
                node.run_in_pod(pod["metadata"]["uid"], path, content)

        def all_trusted() -> bool:
            return all(_trust(self._pod(p) or {}) == "trusted" for p in pods.values())

        wait_for("pods annotated trusted", all_trusted, 30)
        self.check(
            True,
            "containers started; their measurements match their NF's policy: "
            + ", ".join(p["metadata"]["name"] for p in pods.values()),
        )

    def _pod(self, pod: dict[str, Any]) -> dict[str, Any] | None:
        meta = pod["metadata"]
        found: dict[str, Any] | None = self.lab.get(
            f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}"
        )
        if found is None or found["metadata"]["uid"] != meta["uid"]:
            return None
        return found

    def _deleting(self, pod: dict[str, Any]) -> bool:
        current = self._pod(pod)
        return current is None or bool(current["metadata"].get("deletionTimestamp"))

    def _eviction_latency(self, uid: str, since: datetime) -> float:
        """From the audit record of the eviction (stamped when the Eviction API returned). The
        record is appended right after: the pod may show its deletion a moment earlier."""

        def record_time() -> datetime | None:
            for line in self.lab.audit_log.read_text().splitlines():
                record = json.loads(line)
                if record.get("action") == "remediate" and record.get("uid") == uid:
                    return parse_time(record["time"], "time")
            return None

        try:
            at: datetime = wait_for("the UPF pod's remediation record", record_time, 5)
        except TimeoutError as e:
            raise StepFailed(f"no remediation record for the UPF pod in the audit log ({e})") from e
        return (at - since).total_seconds()

    def _describe_trust(self, pod: dict[str, Any]) -> None:
        name = pod["metadata"]["name"]
        text = self.kubectl("describe", "pod", name, "-n", NAMESPACE)
        keep, section = [], ""
        for line in text.splitlines():
            if line and not line.startswith(" "):
                section = line.split(":")[0]
            wanted = section == "Events" or "trustgate" in line
            if wanted or line.startswith(("Name:", "Annotations")):
                keep.append(line)
        print(f"\n$ kubectl describe pod {name} -n {NAMESPACE}   (trust part)")
        print("\n".join(keep))

    def _complete_termination(self, pod: dict[str, Any]) -> None:
        """There is no kubelet in this lab to stop the evicted pod's containers; finish its
        termination as the kubelet would, so the ReplicaSet's replacement is the only UPF."""
        self.kubectl("delete", "pod", pod["metadata"]["name"], "-n", NAMESPACE,
                     "--grace-period=0", "--force", "--wait=false")  # fmt: skip

    def _deployment_of(self, nf: str) -> str:
        deployments = self.lab.get(f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments")
        for d in deployments.get("items") or []:
            if nf in d["metadata"]["name"]:
                return str(d["metadata"]["name"])
        raise StepFailed(f"no {nf} Deployment in {NAMESPACE}")

    def _new_bound(self, nf: str, before: set[str], count: int) -> list[dict[str, Any]] | None:
        new = [
            p
            for p in self._nf_pods()
            if p["metadata"]["uid"] not in before
            and p["metadata"]["labels"][NF_LABEL] == nf
            and p["spec"].get("nodeName")
        ]
        return new if len(new) >= count else None


def _trust(pod: dict[str, Any]) -> str:
    return str((pod.get("metadata", {}).get("annotations") or {}).get(TRUST_STATE_ANNOTATION, ""))


_DEFAULTS = VerifierSettings()  # the production interval and max-age, unless told otherwise


def run_demo(
    out: Path,
    *,
    interval: float = _DEFAULTS.interval,
    max_age: float = _DEFAULTS.max_age,
    keep: Callable[[], bool] = lambda: False,
    real_node: bool = False,
) -> int:
    out = out.resolve()  # every path the lab writes into kubeconfigs must be absolute
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    demo = Demo(out, interval=interval, max_age=max_age, real=real_node)
    started = time.monotonic()
    try:
        demo.run()
    except (StepFailed, TimeoutError) as e:
        print(f"\nDEMO FAILED: {e}\nlogs: {out / 'lab'}", flush=True)
        demo.timeline.stop()
        return 1
    finally:
        if not keep():
            demo.lab.stop()
    print(
        f"\nDEMO PASSED: {len(demo.checks)} checks held in {time.monotonic() - started:.0f}s. "
        f"Logs and the timeline are in {out}/",
        flush=True,
    )
    return 0

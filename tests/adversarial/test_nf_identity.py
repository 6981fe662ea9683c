"""A pod's network-function identity after admission, attacked by a tenant who holds every pod
right in the protected namespace (the ServiceAccount of test_admission_attacks, plus the
``pods/ephemeralcontainers`` right that ``kubectl debug`` needs, as the built-in edit role has).

Admission gates an NF pod when it is created. Three ways around that, each refused:

- becoming an NF later: relabel a plain pod (``app: web`` -> ``app: upf``) that was admitted
  ungated onto an unattested node, or change an NF pod's kind (``upf`` -> ``smf``) — it would run
  unattested and be picked by that NF's Service;
- creating a pod that already carries the verifier's marks (``trust-state: trusted``,
  ``last-verified``): they are stripped at CREATE, so ``kubectl apply`` of a copied manifest still
  works and the pod starts pending and gated like any other;
- ``kubectl debug``: an ephemeral container runs any image inside a running UPF.

Pods that are not NFs, and stay so, are untouched: each test checks that too.

One lab for the module: ``nfid-good`` is a Trusted swtpm node; ``nfid-unattested`` is a Node
registered by hand, with no agent and no NodeAttestation.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from attestation.core.names import (
    LAST_VERIFIED_ANNOTATION,
    NF_LABEL,
    PREFIX,
    REASON_ANNOTATION,
    SCHEDULING_GATE,
    TRUST_STATE_ANNOTATION,
)
from attestation.lab.poll import wait_for
from tests.adversarial.test_admission_attacks import gated_on_dry_run, tenant_kubeconfig
from tests.support.controlplane import ClusterHandle
from tests.support.lab import Lab, lab_cluster
from tests.support.swtpm import LocalCa
from webhook.validate import IDENTITY_FIXED

NS = "nfid-5g"
GOOD, UNATTESTED = "nfid-good", "nfid-unattested"


@dataclass
class Env:
    lab: Lab
    tenant: Path

    def as_tenant(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return self.lab.cluster.kubectl(
            "-n", NS, *args, input=input, kubeconfig=self.tenant, check=False
        )  # fmt: skip

    def apply(self, name: str, labels: dict[str, str], **extra: Any) -> Any:
        """``kubectl apply`` of a pod manifest as the tenant."""
        annotations = extra.pop("annotations", {})
        manifest = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "labels": labels, "annotations": annotations},
            "spec": {"containers": [{"name": "c", "image": "open5gs/nf"}], **extra},
        }
        return self.as_tenant("apply", "-f", "-", input=json.dumps(manifest))

    def pod(self, name: str) -> dict[str, Any]:
        return self.lab.pod(NS, name) or {}


@pytest.fixture(scope="module")
def env(
    trustgate_installed: ClusterHandle, swtpm_ca: LocalCa, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Env]:
    cluster = trustgate_installed
    cluster.ensure_namespace(NS, {"trustgate.io/protected": "true"})
    workdir = tmp_path_factory.mktemp("adv-nf-identity")
    with lab_cluster(cluster, swtpm_ca, workdir, [GOOD], webhook=True, trusted=[GOOD]) as lab:
        cluster.add_node(UNATTESTED)
        env = Env(lab, tenant_kubeconfig(cluster, NS, workdir))
        wait_for("the webhooks to take effect", lambda: gated_on_dry_run(cluster, NS), timeout=30)
        yield env


def test_a_plain_pod_cannot_become_a_network_function(env: Env) -> None:
    # A plain pod, pinned to a node nobody attests and wearing the verifier's marks: not an NF,
    # so admitted as it is (non-NF pods are never changed or refused).
    marks = {TRUST_STATE_ANNOTATION: "trusted", LAST_VERIFIED_ANNOTATION: "2099-01-01T00:00:00Z"}
    created = env.apply("web-x", {"app": "web"}, annotations=marks, nodeName=UNATTESTED)
    assert created.returncode == 0, created.stderr
    for labels in (["app=upf"], ["nf=open5gs-upfd"], ["app.kubernetes.io/name=oai-amf"]):
        became = env.as_tenant("label", "pod", "web-x", "--overwrite", *labels)
        assert became.returncode != 0, f"{labels} let web-x become an NF: {became.stdout}"
        assert IDENTITY_FIXED in became.stderr, became.stderr
        assert f"pod {NS}/web-x" in became.stderr
    assert env.pod("web-x")["metadata"]["labels"] == {"app": "web"}
    # A plain pod staying plain is untouched by the webhook.
    relabel = env.as_tenant("label", "pod", "web-x", "--overwrite", "app=web2", "tier=front")
    assert relabel.returncode == 0, relabel.stderr


def test_an_nf_pod_cannot_change_or_shed_its_kind(env: Env) -> None:
    created = env.apply("upf-k", {"app": "free5gc-upf"})
    assert created.returncode == 0, created.stderr
    assert env.pod("upf-k")["metadata"]["labels"][NF_LABEL] == "upf"
    for labels in (["app=free5gc-smf"], ["nf=amf"], ["component=smf"]):
        changed = env.as_tenant("label", "pod", "upf-k", "--overwrite", *labels)
        assert changed.returncode != 0, f"{labels} changed the kind of upf-k: {changed.stdout}"
        assert IDENTITY_FIXED in changed.stderr, changed.stderr
    # The same kind under another chart's name, or a label that names no kind: allowed.
    same = env.as_tenant("label", "pod", "upf-k", "--overwrite", "app=open5gs-upfd", "tier=core")
    assert same.returncode == 0, same.stderr
    assert env.pod("upf-k")["metadata"]["labels"][NF_LABEL] == "upf"


def test_the_verifiers_marks_are_stripped_when_an_nf_pod_is_created(env: Env) -> None:
    """A manifest copied from a verified UPF (``kubectl get -o yaml``) still applies, and the pod
    starts like any other: pending, gated, with none of the verifier's marks."""
    copied = {
        TRUST_STATE_ANNOTATION: "trusted",
        LAST_VERIFIED_ANNOTATION: "2099-01-01T00:00:00Z",
        REASON_ANNOTATION: "all measurements match the upf policy",
        "team": "core",
    }
    labels = {"app": "free5gc-upf", NF_LABEL: "upf", f"{PREFIX}attested": "true"}
    created = env.apply("upf-copied", labels, annotations=copied)
    assert created.returncode == 0, created.stderr
    meta = env.pod("upf-copied")["metadata"]
    ours = {
        **{f"label {k}": v for k, v in meta["labels"].items() if k.startswith(PREFIX)},
        **{f"annotation {k}": v for k, v in meta["annotations"].items() if k.startswith(PREFIX)},
    }
    assert ours == {f"label {NF_LABEL}": "upf", f"annotation {TRUST_STATE_ANNOTATION}": "pending"}
    assert meta["annotations"]["team"] == "core"
    assert meta["labels"]["app"] == "free5gc-upf"
    gates = env.pod("upf-copied")["spec"].get("schedulingGates") or []
    nodes = env.pod("upf-copied")["spec"].get("nodeName")
    assert {"name": SCHEDULING_GATE} in gates or nodes == GOOD  # the verifier may have lifted it


def test_kubectl_debug_is_refused_in_nf_pods_only(env: Env) -> None:
    created = env.apply("upf-d", {"app": "open5gs-upfd"})
    assert created.returncode == 0, created.stderr
    wait_for("upf-d ungated and bound", lambda: env.pod("upf-d")["spec"].get("nodeName") == GOOD)
    debug = env.as_tenant("debug", "upf-d", "--image=busybox", "--container=dbg", "--", "sh")
    assert debug.returncode != 0, debug.stdout
    assert f"ephemeral container dbg in upf pod {NS}/upf-d" in debug.stderr, debug.stderr
    assert not env.pod("upf-d")["spec"].get("ephemeralContainers")
    # A plain pod is debugged as before.
    env.apply("web-d", {"app": "web"}, nodeName=GOOD)
    plain = env.as_tenant("debug", "web-d", "--image=busybox", "--container=dbg", "--", "sh")
    assert plain.returncode == 0, plain.stderr
    assert [c["name"] for c in env.pod("web-d")["spec"]["ephemeralContainers"]] == ["dbg"]

"""Attacks on the admission side: forged trust (hand-set node labels, NodeAttestations written by
other identities or with bad signatures, stale verdicts replayed), policy escapes by a tenant who
may create pods in the 5G namespace, and the verifier or the webhook going down. The real webhook
and verifier processes with the manifests' RBAC and webhook configurations, real swtpm nodes and
agents, the real kube-apiserver and kube-scheduler.

One lab for the module (~40 s): ``adm-good`` is Trusted; ``adm-bad`` ran an unknown host binary
and is Untrusted; ``adm-fake`` is a Node registered by hand with no agent. The tenant is a
ServiceAccount with every right on pods in the protected namespace (a RoleBinding there). The
last two tests stop the verifier (and restart it) and the webhook.
"""

from __future__ import annotations

import json
import time
import urllib.error
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from attestation.core.clock import format_time
from attestation.core.names import (
    ATTESTED_LABEL,
    LAST_VERIFIED_ANNOTATION,
    NF_LABEL,
    NODEATTESTATION_API_VERSION,
    NODEATTESTATION_KIND,
    SCHEDULING_GATE,
    TRUST_STATE_ANNOTATION,
)
from attestation.core.signing import sign_status
from attestation.lab.cluster import NODEATTESTATIONS
from attestation.lab.poll import wait_for
from tests.support.controlplane import ClusterHandle
from tests.support.lab import Lab, lab_cluster
from tests.support.swtpm import LocalCa
from tests.support.verdicts import assert_trusted_and_fresh, seen, wait_state
from webhook.mutate import pointer

NS, OPEN_NS = "adv-5g", "adv-open"
GOOD, BAD, FAKE = "adm-good", "adm-bad", "adm-fake"
TENANT = "tenant"
MAX_AGE = 3.0


@dataclass
class Env:
    lab: Lab
    tenant: Path  # kubeconfig of the tenant (namespace admin in NS)

    def as_tenant(self, *args: str) -> Any:
        return self.lab.cluster.kubectl(*args, kubeconfig=self.tenant, check=False)

    def create_pod(self, name: str, labels: dict[str, str], ns: str = NS, **spec: Any) -> Any:
        body = {
            "metadata": {"name": name, "labels": labels},
            "spec": {"containers": [{"name": "c", "image": "open5gs/nf"}], **spec},
        }
        return self.lab.cluster.request("POST", f"/api/v1/namespaces/{ns}/pods", body)

    def refusal(self, name: str, labels: dict[str, str], **spec: Any) -> tuple[int, str]:
        """Create a pod as the cluster admin; (HTTP status, message) of the refusal."""
        try:
            self.create_pod(name, labels, **spec)
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}").get("message", "")
        return 201, ""


UPF = {"app": "free5gc-upf"}


@pytest.fixture(scope="module")
def env(
    trustgate_installed: ClusterHandle,
    swtpm_ca: LocalCa,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Env]:
    cluster = trustgate_installed
    cluster.ensure_namespace(NS, {"trustgate.io/protected": "true"})
    cluster.ensure_namespace(OPEN_NS)
    workdir = tmp_path_factory.mktemp("adv-admission")
    with lab_cluster(cluster, swtpm_ca, workdir, [GOOD, BAD], webhook=True, max_age=MAX_AGE) as lab:
        cluster.add_node(FAKE, {ATTESTED_LABEL: "true"})  # hand-made and hand-labelled
        lab.nodes[BAD].writer.measure("/usr/bin/rootkit", b"evil")  # a host file no policy lists
        wait_state(lab, GOOD, "Trusted", timeout=60)
        wait_state(lab, BAD, "Untrusted", "ima.policy.unknown_file", timeout=60)
        env = Env(lab, tenant_kubeconfig(cluster, NS, workdir))
        wait_for("the webhooks to take effect", lambda: gated_on_dry_run(cluster, NS), timeout=30)
        yield env


def tenant_kubeconfig(cluster: ClusterHandle, ns: str, workdir: Path) -> Path:
    """A kubeconfig for the ServiceAccount ``tenant`` holding what a namespace admin may do to
    pods in ``ns`` (the built-in admin/edit roles are aggregated by a controller these labs do
    not run, so the same pod rights, ``kubectl debug``'s included, are granted explicitly)."""
    cluster.kubectl("-n", ns, "create", "serviceaccount", TENANT, check=False)
    cluster.kubectl(
        "-n", ns, "create", "role", "nf-operator",
        "--resource=pods,pods/exec,pods/log,pods/ephemeralcontainers",
        "--verb=get,list,watch,create,update,patch,delete,deletecollection", check=False,
    )  # fmt: skip
    cluster.kubectl(
        "-n", ns, "create", "rolebinding", "nf-operator", "--role=nf-operator",
        f"--serviceaccount={ns}:{TENANT}", check=False,
    )  # fmt: skip
    token = cluster.token_for(ns, TENANT)
    return cluster.plane.kubeconfig_for_token(token, workdir / "tenant.kubeconfig")


def gated_on_dry_run(cluster: ClusterHandle, ns: str) -> bool:
    """Whether the webhooks are in effect in ``ns``: a dry-run UPF pod comes back gated."""
    pod = cluster.request(
        "POST", f"/api/v1/namespaces/{ns}/pods?dryRun=All",
        {"metadata": {"name": "probe", "labels": UPF},
         "spec": {"containers": [{"name": "c", "image": "i"}]}},
    )  # fmt: skip
    return bool(pod["spec"].get("schedulingGates"))


def _failed_scheduling(env: Env, pod: str) -> str:
    return "\n".join(m for r, m in _pod_events(env, pod) if r == "FailedScheduling")


def _pod_events(env: Env, pod: str) -> list[tuple[str, str]]:
    return [(e["reason"], e.get("message", "")) for e in env.lab.events_for(NS, pod)]


# -- forged trust ------------------------------------------------------------------------------


def test_hand_set_attested_label_does_not_admit_nf_pods(env: Env) -> None:
    """The node label is a scheduling hint, not trust: the webhook checks the signed verdict."""
    cluster = env.lab.cluster
    # An admin makes the untrusted node look attested: label true, taint gone.
    cluster.request(
        "PATCH", f"/api/v1/nodes/{BAD}",
        {"metadata": {"labels": {ATTESTED_LABEL: "true"}}, "spec": {"taints": None}},
        content_type="application/merge-patch+json",
    )  # fmt: skip
    code, message = env.refusal("upf-on-bad", UPF, nodeName=BAD)
    assert code == 403
    assert f"node {BAD} is not attested (Untrusted): ima.policy.unknown_file" in message
    code, message = env.refusal("upf-on-fake", UPF, nodeName=FAKE)
    assert (code, f"node {FAKE} has no NodeAttestation" in message) == (403, True), message
    # Through the scheduler: the gate is lifted (a trusted node exists), the scheduler picks the
    # hand-labelled node (the only one the pod may use), the webhook refuses the binding.
    env.create_pod("upf-sched", UPF, nodeSelector={"kubernetes.io/hostname": FAKE})
    wait_for(
        "the binding to the hand-labelled node refused",
        lambda: f"node {FAKE} has no NodeAttestation" in _failed_scheduling(env, "upf-sched"),
        timeout=30,
    )
    pod = env.lab.pod(NS, "upf-sched") or {}
    assert not pod["spec"].get("nodeName")
    assert pod["metadata"]["annotations"][TRUST_STATE_ANNOTATION] == "pending"
    assert_trusted_and_fresh(env.lab, GOOD)


def test_nodeattestation_writes_by_others_are_refused_or_worthless(env: Env) -> None:
    # RBAC: nobody but the verifier writes NodeAttestations; a tenant cannot touch nodes either.
    for verb, resource in [
        ("create", "nodeattestations.trustgate.io"),
        ("patch", "nodeattestations.trustgate.io/status"),
        ("update", "nodeattestations.trustgate.io/status"),
        ("delete", "nodeattestations.trustgate.io"),
        ("patch", "nodes"),
    ]:
        answer = env.as_tenant("auth", "can-i", verb, resource).stdout.strip()
        assert answer == "no", (verb, resource, answer)
    refused = env.as_tenant(
        "patch", "nodeattestation", BAD, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": {"state": "Trusted"}}),
    )  # fmt: skip
    assert refused.returncode != 0
    assert "forbidden" in refused.stderr.lower()

    # A cluster admin can write anything; a status not signed by the verifier is worthless.
    cluster = env.lab.cluster
    na = {"apiVersion": NODEATTESTATION_API_VERSION, "kind": NODEATTESTATION_KIND}
    cluster.request("POST", NODEATTESTATIONS, {**na, "metadata": {"name": FAKE}})
    good_status = (env.lab.nodeattestation(GOOD) or {})["status"]
    attacker = Ed25519PrivateKey.generate()
    now = datetime.now(UTC)
    own_key = sign_status(
        FAKE,
        {**{k: v for k, v in good_status.items() if k != "signature"},
         "verifiedAt": format_time(now), "expiresAt": format_time(now + timedelta(hours=1))},
        attacker,
    )  # fmt: skip
    for forged, why in [
        (good_status, "signature.invalid"),  # adm-good's genuine verdict copied onto adm-fake
        (own_key, "signature.unknown_key"),  # a verdict signed with the attacker's own key
    ]:
        cluster.request(
            "PATCH", f"{NODEATTESTATIONS}/{FAKE}/status", {"status": forged},
            content_type="application/merge-patch+json",
        )  # fmt: skip
        seen: list[str] = []

        def refused_for_its_signature(why: str = why, seen: list[str] = seen) -> bool:
            code, message = env.refusal("upf-forged", UPF, nodeName=FAKE)
            assert code != 201, f"an NF pod was admitted onto {FAKE} with a forged verdict ({why})"
            seen.append(message)
            return "signature is not from the verifier" in message

        try:  # the webhook's watch delivers the new status within a second, on a quiet machine
            wait_for(f"the webhook to refuse adm-fake's forged verdict ({why})",
                     refused_for_its_signature, timeout=30)  # fmt: skip
        except TimeoutError as e:
            raise AssertionError(f"{e}; the last refusal said: {seen[-1:]}") from e
    assert (env.lab.pod(NS, "upf-forged")) is None
    assert_trusted_and_fresh(env.lab, GOOD)


# -- policy escapes by a tenant -------------------------------------------------------------------


def test_tenant_cannot_unprotect_an_nf_pod_or_its_namespace(env: Env) -> None:
    created = env.as_tenant(
        "-n", NS, "run", "upf-t", "--image=open5gs/upf", "--labels=app=open5gs-upfd",
        "--restart=Never",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    pod = env.lab.pod(NS, "upf-t") or {}
    assert pod["metadata"]["labels"][NF_LABEL] == "upf"
    # (Lifting the gate by hand: tests/cluster/test_webhook_cluster.py; here the verifier lifts
    # it at once, as a trusted node exists.)
    escapes = {
        "drop the NF label": [
            {"op": "remove", "path": pointer("metadata", "labels", NF_LABEL)},
            {"op": "replace", "path": "/metadata/labels/app", "value": "web"},
        ],
        "claim trust": [  # "add" replaces: the pod may already be annotated trusted
            {
                "op": "add",
                "path": pointer("metadata", "annotations", TRUST_STATE_ANNOTATION),
                "value": "trusted",
            },
            {
                "op": "add",
                "path": pointer("metadata", "annotations", LAST_VERIFIED_ANNOTATION),
                "value": "2099-01-01T00:00:00Z",
            },
        ],
    }
    for what, ops in escapes.items():
        result = env.as_tenant("-n", NS, "patch", "pod", "upf-t", "--type=json",
                               "-p", json.dumps(ops))  # fmt: skip
        assert result.returncode != 0, what
        assert "only the trustgate verifier may change" in result.stderr, (what, result.stderr)
    # nodeName preset: the scheduler (and the gate) bypassed -> the node is checked at create.
    pinned = env.as_tenant(
        "-n", NS, "run", "upf-pinned", "--image=open5gs/upf", "--labels=nf=upf",
        "--restart=Never", "--overrides", json.dumps({"spec": {"nodeName": BAD}}),
    )  # fmt: skip
    assert pinned.returncode != 0
    assert f"node {BAD} is not attested (Untrusted)" in pinned.stderr
    # The namespace label is the webhooks' scope: the namespace admin role cannot change it.
    for verb in ("patch", "update", "delete"):
        assert env.as_tenant("auth", "can-i", verb, f"namespace/{NS}").stdout.strip() == "no"
    relabel = env.as_tenant("label", "namespace", NS, "trustgate.io/protected-")
    assert relabel.returncode != 0
    assert "forbidden" in relabel.stderr.lower()
    # Residual risk, by design: a pod that does not say it is an NF is not protected.
    plain = env.as_tenant(
        "-n", NS, "run", "web-t", "--image=nginx", "--labels=app=web", "--restart=Never",
        "--overrides", json.dumps({"spec": {"nodeName": BAD}}),
    )  # fmt: skip
    assert plain.returncode == 0, plain.stderr


# -- components down ------------------------------------------------------------------------------


def test_verifier_down_keeps_pods_and_refuses_nf_pods_once_evidence_expires(env: Env) -> None:
    lab = env.lab
    env.create_pod("upf-running", UPF, nodeName=GOOD)
    before = (lab.nodeattestation(GOOD) or {})["status"]
    assert lab.verifier is not None
    lab.verifier.stop()
    stopped = time.monotonic()

    def refused() -> str:
        code, message = env.refusal("upf-late", UPF, nodeName=GOOD)
        return message if code == 403 else ""

    message = wait_for("NF pods refused on adm-good", refused, timeout=MAX_AGE + 10)
    waited = time.monotonic() - stopped
    # Through the scheduler: nobody lifts the gate of a new NF pod while the verifier is down.
    env.create_pod("upf-waiting", UPF, nodeSelector={"kubernetes.io/hostname": GOOD})
    print(f"\nverifier down: NF pods refused on {GOOD} {waited:.1f}s after the verifier stopped")
    assert f"node {GOOD} attestation expired at" in message
    assert waited <= MAX_AGE + 2
    running = lab.pod(NS, "upf-running") or {}
    assert running["spec"]["nodeName"] == GOOD
    assert not running["metadata"].get("deletionTimestamp")  # nothing evicts without a verifier
    # Replaying the last genuine verdict does not help: it carries its own expiresAt.
    lab.cluster.request(
        "PATCH", f"{NODEATTESTATIONS}/{GOOD}/status", {"status": before},
        content_type="application/merge-patch+json",
    )  # fmt: skip
    assert "attestation expired at" in env.refusal("upf-replayed", UPF, nodeName=GOOD)[1]
    # The verifier comes back: trust returns, NF pods are admitted again.
    waiting = lab.pod(NS, "upf-waiting") or {}
    assert waiting["spec"]["schedulingGates"] == [{"name": SCHEDULING_GATE}]
    assert not waiting["spec"].get("nodeName")
    lab.system.start_verifier(
        interval=0.5, max_age=MAX_AGE, extra_args=("--eviction-deadline", "5")
    )
    wait_state(lab, GOOD, "Trusted")
    wait_for(
        "the waiting pod ungated and bound to adm-good",
        lambda: (lab.pod(NS, "upf-waiting") or {}).get("spec", {}).get("nodeName") == GOOD,
    )
    wait_for(
        "NF pods admitted again", lambda: env.refusal("upf-back", UPF, nodeName=GOOD)[0] == 201
    )
    assert seen(lab, BAD).state == "Untrusted"


def test_webhook_down_refuses_nf_pods_and_nothing_else(env: Env) -> None:
    lab = env.lab
    assert lab.system.webhook is not None
    lab.system.webhook.stop()
    code, message = env.refusal("upf-nowebhook", UPF)
    assert code == 500
    assert "mutate.pods.trustgate.io" in message
    # Everything that is not an NF pod is unaffected; no cluster brick.
    env.create_pod("web-open", {"app": "web"}, ns=OPEN_NS)
    env.create_pod("web-protected", {"app": "web"})
    bound = wait_for(
        "the open namespace's pod to bind",
        lambda: (lab.pod(OPEN_NS, "web-open") or {}).get("spec", {}).get("nodeName"),
    )
    assert bound
    # The verifier does not need the webhook.
    wait_for("adm-good re-verified", lambda: seen(lab, GOOD).trusted)
    assert_trusted_and_fresh(lab, GOOD)

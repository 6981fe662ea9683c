"""A node's NodeAttestation status cannot be blown up, and a refused status write does not freeze
the node's label and taint. Real control plane, real verifier process, real swtpm node.

Anyone who may create pods in some namespace can bind them to any node (``spec.nodeName``) and
label them as network functions: outside the protected namespaces the webhook never sees them.
Listing every such pod in the node's status let 1,025 of them push the status past the CRD's
``maxItems`` (or, with long names, past etcd's request size), every write was refused, and the
node stopped refreshing: it expired and NF pods could no longer land on it. The status lists only
the NF pods of protected namespaces, and a list too long is summarised, never refused.

A status write that is refused anyway (an admission policy, a full etcd, a conflict) must not
keep the node's label and taint from following the verdict: a node that goes Unknown while its
status cannot be written is still tainted.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest

from attestation.core.names import NF_LABEL
from attestation.lab.poll import wait_for
from tests.support.controlplane import ClusterHandle
from tests.support.lab import Lab, lab_cluster
from tests.support.swtpm import LocalCa
from tests.support.verdicts import seen

NODE, FROZEN = "bounds-1", "bounds-2"
OPEN_NS = "bounds-open"
#: One more than the CRD's maxItems for status.pods.
FLOOD = 1025
MAX_AGE = 4.0
POLICY = "trustgate-test-refuse-status"


@pytest.fixture(scope="module")
def lab(
    trustgate_installed: ClusterHandle, swtpm_ca: LocalCa, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Lab]:
    trustgate_installed.ensure_namespace(OPEN_NS)  # not labelled trustgate.io/protected
    workdir = tmp_path_factory.mktemp("bounds")
    nodes = [NODE, FROZEN]
    with lab_cluster(trustgate_installed, swtpm_ca, workdir, nodes, trusted=nodes,
                     max_age=MAX_AGE) as lab:  # fmt: skip
        yield lab


def _flood(cluster: ClusterHandle, node: str, count: int) -> None:
    """``count`` NF-labelled pods bound to ``node`` in an unprotected namespace, 16 at a time."""

    def create(i: int) -> None:
        cluster.request("POST", f"/api/v1/namespaces/{OPEN_NS}/pods", {
            "metadata": {"name": f"flood-{i}", "labels": {NF_LABEL: "upf", "nf": "upf"}},
            "spec": {"nodeName": node, "containers": [{"name": "upf", "image": "open5gs/upf"}]},
        })  # fmt: skip

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(create, range(count)))


def _unflood(cluster: ClusterHandle, count: int) -> None:
    """Delete the pods at once (no kubelet would ever confirm a graceful deletion)."""

    def delete(i: int) -> None:
        cluster.delete(f"/api/v1/namespaces/{OPEN_NS}/pods/flood-{i}?gracePeriodSeconds=0")

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(delete, range(count)))


def _verified_after(lab: Lab, node: str, moment: datetime) -> bool:
    now = seen(lab, node)
    return now.verified_at is not None and now.verified_at > moment


def test_a_thousand_foreign_nf_pods_do_not_stop_the_node_refreshing(lab: Lab) -> None:
    started = time.monotonic()
    _flood(lab.cluster, NODE, FLOOD)
    print(f"\n{FLOOD} pods created in {time.monotonic() - started:.1f} s")
    try:
        for _ in range(3):  # verifiedAt keeps advancing, round after round
            moment = datetime.now(UTC)
            after = functools.partial(_verified_after, lab, NODE, moment)
            wait_for(f"{NODE} re-verified", after, 3 * MAX_AGE)
            now = seen(lab, NODE)
            assert now.state == "Trusted", now
            assert now.attested_label == "true", now
            assert not now.tainted, now
        assert _listed(lab) == 0  # not a protected namespace: its pods are not the node's story
    finally:
        _unflood(lab.cluster, FLOOD)  # every verifier on the shared control plane watches them


def _listed(lab: Lab) -> int:
    status = (lab.nodeattestation(NODE) or {}).get("status") or {}
    return sum(1 for p in status.get("pods") or [] if p.get("namespace") == OPEN_NS)


def _refuse_status_writes(cluster: ClusterHandle, node: str) -> None:
    """A ValidatingAdmissionPolicy that refuses every write of ``node``'s status (a stand-in for
    any refusal: an operator's policy, a quota, an etcd out of space)."""
    cluster.request("POST", "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies", {
        "metadata": {"name": POLICY},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{
                "apiGroups": ["trustgate.io"], "apiVersions": ["*"],
                "operations": ["UPDATE"], "resources": ["nodeattestations/status"],
            }]},
            "matchConditions": [{"name": "this-node",
                                 "expression": f"object.metadata.name == '{node}'"}],
            "validations": [{"expression": "false", "message": "status writes refused (test)"}],
        },
    })  # fmt: skip
    cluster.request(
        "POST", "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicybindings",
        {"metadata": {"name": POLICY},
         "spec": {"policyName": POLICY, "validationActions": ["Deny"]}},
    )  # fmt: skip


def test_a_refused_status_write_still_taints_the_node(lab: Lab) -> None:
    _refuse_status_writes(lab.cluster, FROZEN)
    try:
        # The policy takes effect within a second or so; the status stops moving then.
        time.sleep(2)
        lab.nodes[FROZEN].stop_agent()
        # The last verdict holds until it expires; then the node is Unknown, and although its
        # status cannot say so, its label and taint must.
        wait_for(
            f"{FROZEN}: label attested=false and the untrusted taint",
            lambda: (s := seen(lab, FROZEN)).attested_label == "false" and s.tainted,
            timeout=4 * MAX_AGE,
        )
        assert seen(lab, FROZEN).state == "Trusted"  # the status really was never rewritten
    finally:
        base = "/apis/admissionregistration.k8s.io/v1"
        lab.cluster.delete(f"{base}/validatingadmissionpolicybindings/{POLICY}")
        lab.cluster.delete(f"{base}/validatingadmissionpolicies/{POLICY}")

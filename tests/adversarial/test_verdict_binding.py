"""A signed verdict counts only for the cluster and the object it was signed for, and only for as
long as the webhook accepts. Real control plane, real verifier and webhook processes.

The signature used to bind a verdict to its node's name alone. So a genuine Trusted status stayed
genuine when copied onto a NodeAttestation deleted and created again (by whoever may delete and
create them: a restore, a careless admin, a GitOps tool replaying an old object), or from another
cluster whose verifier shares the key; and a verdict valid for a year was as good as one valid
for ten seconds. Each attack below is tried with the verifier stopped, so nothing rewrites the
status under it, and each refusal is named by its failure id in the webhook's denial.
"""

from __future__ import annotations

import json
import urllib.error
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from attestation.core.clock import format_time
from attestation.core.names import NODEATTESTATION_API_VERSION, NODEATTESTATION_KIND
from attestation.core.signing import load_private_key_pem, sign_status
from attestation.lab.poll import wait_for
from tests.support.controlplane import ClusterHandle
from tests.support.lab import Lab, lab_cluster
from tests.support.swtpm import LocalCa

NS = "bind-ns"
NODE = "bind-1"
MAX_AGE = 60.0  # a copied verdict stays fresh for the whole module
NODEATTESTATIONS = "/apis/trustgate.io/v1alpha1/nodeattestations"
UPF = {"app": "free5gc-upf"}


@pytest.fixture(scope="module")
def lab(
    trustgate_installed: ClusterHandle, swtpm_ca: LocalCa, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Lab]:
    trustgate_installed.ensure_namespace(NS, {"trustgate.io/protected": "true"})
    workdir = tmp_path_factory.mktemp("bind")
    with lab_cluster(trustgate_installed, swtpm_ca, workdir, [NODE], webhook=True,
                     max_age=MAX_AGE, trusted=[NODE]) as lab:  # fmt: skip
        wait_for("the webhook admits a UPF on the node", lambda: _refusal(lab) == "", 30)
        assert lab.verifier is not None
        lab.verifier.stop()  # nothing rewrites the status from here on
        yield lab


def _refusal(lab: Lab) -> str:
    """The webhook's answer to a UPF pod bound to the node (dry run): "" when admitted."""
    body = {
        "metadata": {"name": "upf-probe", "labels": UPF},
        "spec": {"nodeName": NODE, "containers": [{"name": "c", "image": "open5gs/upf"}]},
    }
    try:
        lab.cluster.request("POST", f"/api/v1/namespaces/{NS}/pods?dryRun=All", body)
    except urllib.error.HTTPError as e:
        return str(json.loads(e.read() or b"{}").get("message", "")) or f"HTTP {e.code}"
    return ""


def _refused_with(lab: Lab, failure_id: str) -> str:
    """Wait for the webhook's denial to name ``failure_id``; a timeout shows its last answer."""
    seen = [""]

    def check() -> str:
        seen[0] = _refusal(lab) or "admitted"
        return seen[0] if failure_id in seen[0] else ""

    try:
        msg: str = wait_for(f"the webhook to refuse {NODE} with {failure_id}", check, 15)
    except TimeoutError as e:
        raise AssertionError(f"{e}; the webhook's last answer: {seen[0]}") from e
    return msg


def _status(lab: Lab) -> dict[str, Any]:
    status: dict[str, Any] = (lab.nodeattestation(NODE) or {})["status"]
    return status


def _write_status(lab: Lab, status: dict[str, Any]) -> None:
    lab.cluster.request(
        "PATCH", f"{NODEATTESTATIONS}/{NODE}/status", {"status": status},
        content_type="application/merge-patch+json",
    )  # fmt: skip


def _resign(lab: Lab, **fields: Any) -> dict[str, Any]:
    """The node's status with ``fields`` changed, signed again with the verifier's own key (what
    another cluster's verifier sharing the key, or a stolen key, would produce)."""
    key = load_private_key_pem(lab.system.signing_key.read_bytes())
    body = {k: v for k, v in _status(lab).items() if k != "signature"}
    return sign_status(NODE, {**body, **fields}, key)


def test_a_status_copied_onto_a_recreated_nodeattestation_is_refused(lab: Lab) -> None:
    copied = _status(lab)
    old_uid = (lab.nodeattestation(NODE) or {})["metadata"]["uid"]
    lab.cluster.delete(f"{NODEATTESTATIONS}/{NODE}")
    wait_for("the NodeAttestation gone", lambda: lab.nodeattestation(NODE) is None, 10)
    na = {"apiVersion": NODEATTESTATION_API_VERSION, "kind": NODEATTESTATION_KIND}
    lab.cluster.request("POST", NODEATTESTATIONS, {**na, "metadata": {"name": NODE}})
    _write_status(lab, copied)
    assert (lab.nodeattestation(NODE) or {})["metadata"]["uid"] != old_uid
    assert _status(lab) == copied  # byte for byte the verifier's genuine verdict
    _refused_with(lab, "nodeattestation.other_object")


def test_a_status_signed_for_another_cluster_is_refused(lab: Lab) -> None:
    uid = (lab.nodeattestation(NODE) or {})["metadata"]["uid"]
    _write_status(lab, _resign(lab, payloadVersion=2, clusterId="another-cluster", objectUid=uid))
    _refused_with(lab, "nodeattestation.other_cluster")


def test_a_verdict_valid_for_too_long_is_refused(lab: Lab) -> None:
    uid = (lab.nodeattestation(NODE) or {})["metadata"]["uid"]
    kube_system = lab.cluster.get("/api/v1/namespaces/kube-system") or {}
    cluster_id = kube_system["metadata"]["uid"]
    now = datetime.now(UTC)
    _write_status(lab, _resign(
        lab, payloadVersion=2, clusterId=cluster_id, objectUid=uid,
        verifiedAt=format_time(now), expiresAt=format_time(now + timedelta(days=365)),
    ))  # fmt: skip
    _refused_with(lab, "nodeattestation.validity_too_long")
    # The same verdict, valid for no longer than the verifier's own max-age, is admitted: what
    # is refused above is the validity, not the re-signing.
    _write_status(lab, _resign(
        lab, payloadVersion=2, clusterId=cluster_id, objectUid=uid,
        verifiedAt=format_time(now), expiresAt=format_time(now + timedelta(seconds=MAX_AGE)),
    ))  # fmt: skip
    wait_for("the webhook to admit again", lambda: _refusal(lab) == "", 15)


def test_an_unbound_verdict_is_refused(lab: Lab) -> None:
    """A version 1 verdict (an older verifier's, no binding): the new webhook does not accept it
    forever — the verifier is upgraded first (docs/nodeattestation.md)."""
    body = {k: v for k, v in _status(lab).items()
            if k not in ("payloadVersion", "clusterId", "objectUid")}  # fmt: skip
    key = load_private_key_pem(lab.system.signing_key.read_bytes())
    unbound = sign_status(NODE, {k: v for k, v in body.items() if k != "signature"}, key)
    na = lab.nodeattestation(NODE) or {}
    lab.cluster.request(
        "PUT", f"{NODEATTESTATIONS}/{NODE}/status",
        {**{k: na[k] for k in ("apiVersion", "kind")}, "metadata": na["metadata"],
         "status": unbound},
    )  # fmt: skip
    _refused_with(lab, "nodeattestation.unbound")

"""RuntimePolicy as a live object, against the real control plane, swtpm nodes, agents and the
verifier process under its manifests' RBAC: an edit applies without a restart, an invalid
object says why and changes nothing, an NF with no policy keeps its pods gated and says so."""

from __future__ import annotations

import hashlib
import subprocess
import time
import urllib.error
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from attestation.core.names import (
    GATED_ANNOTATION,
    GROUP,
    NF_LABEL,
    NO_POLICY_EVENT_REASON,
    RUNTIME_POLICY_PLURAL,
    SCHEDULING_GATE,
    TRUST_STATE_ANNOTATION,
)
from attestation.lab.cluster import NAMESPACE, manifests_dir
from attestation.lab.node import trustgate_exe
from tests.support.controlplane import ClusterHandle
from tests.support.lab import FILES, Lab, lab_cluster, wait_for
from tests.support.swtpm import LocalCa
from tests.support.verdicts import audit_records

NS = "5g-core-live-policy"
BASE = f"/apis/{GROUP}/v1alpha1/namespaces/{NAMESPACE}/{RUNTIME_POLICY_PLURAL}"
MERGE = "application/merge-patch+json"


def _sha(content: bytes) -> str:
    return f"sha256:{hashlib.sha256(content).hexdigest()}"


def _policy(name: str, nf: str, digests: dict[str, list[str]]) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/v1alpha1",
        "kind": "RuntimePolicy",
        "metadata": {"name": name},
        "spec": {"networkFunction": nf, "digests": digests},
    }


@pytest.fixture(scope="module")
def lab(
    trustgate_installed: ClusterHandle, swtpm_ca: LocalCa, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Lab]:
    trustgate_installed.ensure_namespace(NS)
    workdir = tmp_path_factory.mktemp("live-policy-lab")
    nodes = ["lpworker-1"]
    with lab_cluster(trustgate_installed, swtpm_ca, workdir, nodes, trusted=nodes) as lab:
        try:
            yield lab
        finally:  # other labs share trustgate-system: leave no policy object behind
            for obj in lab.cluster.request("GET", BASE).get("items") or []:
                lab.cluster.request("DELETE", f"{BASE}/{obj['metadata']['name']}")


def _condition(lab: Lab, name: str, type_: str) -> dict[str, Any]:
    obj = lab.cluster.request("GET", f"{BASE}/{name}")
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c["type"] == type_ and c.get("observedGeneration") == obj["metadata"]["generation"]:
            return dict(c)
    return {}


def _loaded(lab: Lab, name: str) -> dict[str, Any]:
    found: dict[str, Any] = wait_for(
        f"{name} Loaded",
        lambda: (c := _condition(lab, name, "Loaded")) and c["status"] == "True" and c,
        20,
    )
    return found


def _state(lab: Lab, name: str) -> tuple[str, bool]:
    pod = lab.pod(NS, name)
    if pod is None:
        return "", True
    ann = pod["metadata"].get("annotations") or {}
    return ann.get(TRUST_STATE_ANNOTATION, ""), bool(pod["metadata"].get("deletionTimestamp"))


def _verified_after(lab: Lab, node: str) -> None:
    """Wait for a round that starts after now (the verdict's time moves), so what ran is
    judged."""
    start = ((lab.nodeattestation(node) or {}).get("status") or {}).get("verifiedAt", "")
    wait_for(
        f"{node} verified again",
        lambda: (
            ((lab.nodeattestation(node) or {}).get("status") or {}).get("verifiedAt", "") > start
        ),
        20,
    )


def test_a_policy_edit_changes_the_verdict_without_a_restart(lab: Lab) -> None:
    verifier = lab.verifier
    assert verifier is not None
    pid = verifier.pid
    node = lab.nodes["lpworker-1"]
    allowed = {p: [_sha(c)] for p, c in FILES["upf"].items()}
    lab.cluster.request("POST", BASE, _policy("live-upf", "upf", allowed))
    first = _loaded(lab, "live-upf")
    assert "network function upf" in first["message"]
    obj = lab.cluster.request("GET", f"{BASE}/live-upf")
    assert obj["status"]["entries"] == len(FILES["upf"])

    upf = lab.create_nf_pod(NS, "upf-live", "upf", "lpworker-1")
    for path, content in FILES["upf"].items():
        node.run_in_pod(upf, path, content)
    wait_for("upf-live trusted", lambda: _state(lab, "upf-live") == ("trusted", False), 20)

    # Add a tool to the live object: running it is now allowed.
    patch = {"spec": {"digests": {"/usr/bin/tool": [_sha(b"tool 1.0")]}}}
    started = time.monotonic()
    lab.cluster.request("PATCH", f"{BASE}/live-upf", patch, MERGE)
    _loaded(lab, "live-upf")
    applied = time.monotonic() - started
    print(f"edit applied and reported Loaded in {applied * 1000:.0f} ms")
    assert applied < 5
    node.run_in_pod(upf, "/usr/bin/tool", b"tool 1.0")
    _verified_after(lab, "lpworker-1")
    _verified_after(lab, "lpworker-1")
    assert _state(lab, "upf-live") == ("trusted", False)

    # A broken edit: the object is Invalid, and the last loaded policy (with the tool; the
    # seed's has none) keeps judging.
    bad = {"spec": {"digests": {"/usr/bin/other": ["sha256:abcd"]}}}
    lab.cluster.request("PATCH", f"{BASE}/live-upf", bad, MERGE)
    wait_for("live-upf Invalid", lambda: _condition(lab, "live-upf", "Invalid").get("status")
             == "True", 20)  # fmt: skip
    node.run_in_pod(upf, "/usr/bin/tool", b"tool 1.0")
    _verified_after(lab, "lpworker-1")
    _verified_after(lab, "lpworker-1")
    assert _state(lab, "upf-live") == ("trusted", False)

    # Fixed, and the tool removed: the same tool run again is now a finding, and the pod goes.
    fixed = {"spec": {"digests": {"/usr/bin/tool": None, "/usr/bin/other": None}}}
    lab.cluster.request("PATCH", f"{BASE}/live-upf", fixed, MERGE)
    _loaded(lab, "live-upf")
    node.run_in_pod(upf, "/usr/bin/tool", b"tool 1.0")
    wait_for("upf-live untrusted", lambda: _state(lab, "upf-live")[0] != "trusted"
             or _state(lab, "upf-live")[1], 20)  # fmt: skip
    assert verifier.pid == pid  # the same process: no restart
    # The audit trail says when each version started to judge, and which was refused: created
    # (1), the tool added (2), the broken edit (3), fixed (4).
    changes = [r for r in audit_records(lab) if r.get("action") == "runtime-policies"]
    loaded = {name for c in changes for name in c["loaded"].get("upf", [])}
    assert {"live-upf@1", "live-upf@2", "live-upf@4"} <= loaded
    assert "live-upf@3" not in loaded
    refused = [c["notLoaded"]["live-upf@3"] for c in changes if "live-upf@3" in c["notLoaded"]]
    assert refused[0].startswith("Invalid: ")


def test_an_invalid_object_says_why_and_the_verifier_keeps_serving(lab: Lab) -> None:
    # The API server's schema refuses what it can see is wrong ...
    bad_shape = _policy("bad-shape", "smf", {})
    bad_shape["spec"]["digests"] = {"/usr/bin/smfd": "sha256:00"}  # not a list
    with pytest.raises(urllib.error.HTTPError) as refused:
        lab.cluster.request("POST", BASE, bad_shape)
    assert refused.value.code == 422
    refused.value.close()
    # ... the verifier what it cannot: a SHA-256 digest of 2 bytes.
    lab.cluster.request("POST", BASE, _policy("bad-smf", "smf", {"/usr/bin/smfd": ["sha256:abcd"]}))
    invalid = wait_for(
        "bad-smf Invalid",
        lambda: (c := _condition(lab, "bad-smf", "Invalid")) and c["status"] == "True" and c,
        20,
    )
    assert invalid["reason"] == "Invalid"
    assert 'spec.digests["/usr/bin/smfd"][0]' in invalid["message"]
    assert "sha256 digests are not 2 bytes" in invalid["message"]
    loaded = _condition(lab, "bad-smf", "Loaded")
    assert loaded["status"] == "False"
    out = lab.cluster.kubectl("get", "runtimepolicies", "-n", NAMESPACE).stdout
    assert "bad-smf" in out
    assert "False" in out

    # The seed's SMF policy still judges: an SMF pod running smfd is trusted, the node too.
    smf = lab.create_nf_pod(NS, "smf-live", "smf", "lpworker-1")
    lab.nodes["lpworker-1"].run_in_pod(smf, "/usr/bin/smfd", FILES["smf"]["/usr/bin/smfd"])
    wait_for("smf-live trusted", lambda: _state(lab, "smf-live") == ("trusted", False), 20)
    assert lab.trusted("lpworker-1")
    lab.cluster.request("DELETE", f"{BASE}/bad-smf")


def test_an_nf_without_a_policy_stays_gated_and_says_so(lab: Lab) -> None:
    lab.cluster.request("POST", f"/api/v1/namespaces/{NS}/pods", {
        "metadata": {"name": "nrf-0", "labels": {NF_LABEL: "nrf"}},
        "spec": {
            "schedulingGates": [{"name": SCHEDULING_GATE}],
            "containers": [{"name": "nrf", "image": "open5gs/nrf"}],
        },
    })  # fmt: skip

    def annotated() -> str:
        ann = ((lab.pod(NS, "nrf-0") or {}).get("metadata") or {}).get("annotations") or {}
        return str(ann.get(GATED_ANNOTATION, ""))

    # A tenant's own RuntimePolicy (in its namespace) is never read: the pod stays gated.
    tenant = f"/apis/{GROUP}/v1alpha1/namespaces/{NS}/{RUNTIME_POLICY_PLURAL}"
    lab.cluster.request("POST", tenant, _policy("mine", "nrf", {"/usr/bin/nrfd": [_sha(b"x")]}))
    said = wait_for("nrf-0 annotated", annotated, 20)
    assert "no runtime policy is loaded for network function nrf" in said
    events = wait_for("the Event", lambda: [
        e for e in lab.events_for(NS, "nrf-0") if e["reason"] == NO_POLICY_EVENT_REASON
    ], 10)  # fmt: skip
    assert "nrf" in events[0]["message"]
    assert events[0]["type"] == "Warning"
    pod = lab.pod(NS, "nrf-0") or {}
    assert [g["name"] for g in pod["spec"].get("schedulingGates") or []] == [SCHEDULING_GATE]

    _verified_after(lab, "lpworker-1")  # a few more seconds of the gate loop
    pod = lab.pod(NS, "nrf-0") or {}
    assert [g["name"] for g in pod["spec"].get("schedulingGates") or []] == [SCHEDULING_GATE]
    assert lab.cluster.request("GET", tenant)["items"][0].get("status") is None  # never read

    # A policy for the NRF arrives: the gate is lifted (a node is trusted), the annotation goes.
    lab.cluster.request("POST", BASE, _policy("nrf", "nrf", {"/usr/bin/nrfd": [_sha(b"nrf")]}))
    _loaded(lab, "nrf")
    wait_for("nrf-0 ungated", lambda: not ((lab.pod(NS, "nrf-0") or {}).get("spec") or {})
             .get("schedulingGates"), 20)  # fmt: skip
    wait_for("annotation removed", lambda: annotated() == "", 10)


def test_the_shipped_policies_and_generated_parts_load_as_objects(lab: Lab, tmp_path: Path) -> None:
    """What an operator applies: the example policies (`kubectl apply -k manifests/policies/`)
    and a policy `trustgate policy generate` split into parts; the API server's schema takes
    them and the verifier loads them."""
    shipped = manifests_dir() / "policies"
    lab.cluster.kubectl("apply", "-k", str(shipped))
    for name in ("amf", "smf", "upf", "host"):
        assert "network function" in _loaded(lab, name)["message"]
    root = tmp_path / "root/usr/bin"
    root.mkdir(parents=True)
    for i in range(30):
        (root / f"ausf-{i:02d}").write_bytes(b"\x7fELF ausf %d" % i)
        (root / f"ausf-{i:02d}").chmod(0o755)
    generate = [trustgate_exe(), "policy", "generate", "--from-dir", str(tmp_path / "root"),
                "--nf", "ausf", "--max-object-bytes", "1500", "--namespace", NAMESPACE]  # fmt: skip
    out = subprocess.run(generate, capture_output=True, text=True, check=True, timeout=60).stdout
    names = [d["metadata"]["name"] for d in yaml.safe_load_all(out)]
    assert len(names) > 2
    lab.cluster.kubectl("apply", "-f", "-", input=out)
    for name in names:
        assert "30 paths from" in _loaded(lab, name)["message"]
    lab.cluster.kubectl("delete", "-k", str(shipped))

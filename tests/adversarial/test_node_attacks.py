"""Attacks by root on a worker node against its own evidence, and by code inside NF pods: doctored
IMA lists, reboots, a rolled-back TPM, power loss, modified binaries. Real verifier process, real
swtpm nodes and agents, real control plane.

One lab for the module (~40 s): ``tamper-1`` takes every node-level attack in turn, rebooting
between them (a doctored list is sticky until the node reboots, which is itself under test);
``pods-1`` runs the NF pods for the pod-level attacks and is every node-level attack's neighbour.
The tests run in file order and each leaves ``tamper-1`` Trusted again (except the last).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from attestation.lab.poll import hold_for, wait_for
from tests.support.controlplane import ClusterHandle
from tests.support.lab import FILES, Lab, lab_cluster
from tests.support.root_on_node import Doctoring, doctor_log, reboot, roll_back_tpm, snapshot_tpm
from tests.support.swtpm import LocalCa
from tests.support.verdicts import (
    assert_trusted_and_fresh,
    assert_user_sees,
    audit_records,
    pod_view,
    seen,
    wait_state,
)

NS = "adv-node"
TAMPER, PODS = "tamper-1", "pods-1"
_names = itertools.count(1)
#: The operator's own exclude in the UPF policy: per-site plugins in a read-only image path.
UPF_EXCLUDE = {"upf": ["^/usr/share/upf/plugins/"]}


@dataclass
class Env:
    lab: Lab
    workdir: Path
    upf_uid: str

    def scratch(self) -> Path:
        return self.workdir / f"scratch-{next(_names)}"


@pytest.fixture(scope="module")
def env(
    trustgate_installed: ClusterHandle, swtpm_ca: LocalCa, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Env]:
    # Protected: a node's status lists only the NF pods of protected namespaces.
    trustgate_installed.ensure_namespace(NS, {"trustgate.io/protected": "true"})
    workdir = tmp_path_factory.mktemp("adv-node")
    nodes = [TAMPER, PODS]
    with lab_cluster(
        trustgate_installed, swtpm_ca, workdir, nodes, trusted=nodes, excludes=UPF_EXCLUDE
    ) as lab:
        upf = lab.create_nf_pod(NS, "upf-ok", "upf", PODS)
        for path, content in FILES["upf"].items():
            lab.nodes[PODS].run_in_pod(upf, path, content)
        wait_for("upf-ok trusted", lambda: pod_view(lab, NS, "upf-ok")[0] == "trusted")
        yield Env(lab, workdir, upf)


def _neighbour_untouched(env: Env) -> None:
    assert_trusted_and_fresh(env.lab, PODS)
    assert pod_view(env.lab, NS, "upf-ok") == ("trusted", "", False)


def _stays(env: Env, node: str, state: str, seconds: float) -> None:
    """Observe ``node`` for ``seconds`` (several verifier rounds): it must keep ``state``."""

    def keeps_state() -> None:
        assert seen(env.lab, node).state == state

    hold_for(seconds, keeps_state)


def _evicted_with(env: Env, pod: str, why: str) -> None:
    def evicted() -> bool:
        state, reason, leaving = pod_view(env.lab, NS, pod)
        return leaving and state == "untrusted" and why in reason

    wait_for(f"{pod} evicted naming {why}", evicted, timeout=15)
    wait_for(
        f"audit: {pod} remediated",
        lambda: any(
            r.get("action") == "remediate" and r.get("pod") == pod and r.get("outcome") == "evicted"
            for r in audit_records(env.lab)
        ),
        timeout=10,
    )
    reasons = {e["reason"] for e in env.lab.events_for(NS, pod)}
    assert {"AttestationUntrusted", "TrustgateEvicted"} <= reasons, reasons


# -- the IMA list no longer matches PCR 10 ---------------------------------------------------------


@pytest.mark.parametrize("how", ["rewrite", "truncate", "reorder", "drop_middle"])
def test_doctored_log_is_caught_and_sticks_until_reboot(env: Env, how: Doctoring) -> None:
    node = env.lab.nodes[TAMPER]
    wait_state(env.lab, TAMPER, "Trusted")
    amf = f"amf-{how.replace('_', '-')}"
    env.lab.create_nf_pod(NS, amf, "amf", TAMPER)
    wait_for(f"{amf} trusted", lambda: pod_view(env.lab, NS, amf)[0] == "trusted")
    since = datetime.now(UTC)

    doctor_log(node, how, env.scratch())

    shown = assert_user_sees(env.lab, TAMPER, "Untrusted", "ima.pcr_mismatch", since=since)
    assert shown.reason.startswith("ima.pcr_mismatch: PCR 10 (sha256)")
    # The NF pods on the node go, with the node's reason; the neighbour's pods stay.
    _evicted_with(env, amf, "node: ima.pcr_mismatch")
    _neighbour_untouched(env)
    # A hash chain that diverged cannot be re-joined: honest entries after it change nothing.
    node.run_in_pod("00000000-0000-4000-8000-000000000000", "/usr/bin/amfd", b"x")
    _stays(env, TAMPER, "Untrusted", 1.5)
    # A reboot starts a new list: the verifier re-attests it from offset 0.
    reboot(node, FILES["host"])
    wait_state(env.lab, TAMPER, "Trusted")


# -- TPM resets, rollbacks and power loss ----------------------------------------------------------


def test_rolled_back_tpm_state_is_caught_by_its_clock(env: Env) -> None:
    """Root copies the software TPM's state, lets time pass, and puts the copy back: the TPM then
    reports a clock behind one it already reported, in the same boot cycle (reset and restart
    counts equal). A hardware TPM cannot be rolled back like this; a vTPM's state file can."""
    node = env.lab.nodes[TAMPER]
    snapshot = env.workdir / "tpm-snapshot"
    snapshot_tpm(node, snapshot, FILES["host"])  # a clean reboot with a copy taken
    wait_state(env.lab, TAMPER, "Trusted")
    first = seen(env.lab, TAMPER).verified_at
    assert first is not None
    wait_for(  # let the TPM clock run past the snapshot's, in verified quotes
        "2 s of verified quotes",
        lambda: (v := seen(env.lab, TAMPER).verified_at) and (v - first).total_seconds() > 2,
    )
    since = datetime.now(UTC)

    roll_back_tpm(node, snapshot, FILES["host"])

    shown = assert_user_sees(env.lab, TAMPER, "Untrusted", "quote.clock_rollback", since=since)
    assert "went back" in shown.reason
    _neighbour_untouched(env)
    # A genuine reboot (resetCount + 1) starts a new clock epoch: the node can be trusted again.
    reboot(node, FILES["host"])
    wait_state(env.lab, TAMPER, "Trusted")


def test_power_loss_leaves_the_tpm_clock_unsafe(env: Env) -> None:
    """Without TPM2_Shutdown before power-off the TPM cannot vouch that its clock never went back
    (``safe`` = NO) until it next saves its clock. The node stays Untrusted meanwhile: this is
    the last test of the node."""
    since = datetime.now(UTC)
    reboot(env.lab.nodes[TAMPER], FILES["host"], orderly=False)
    shown = assert_user_sees(env.lab, TAMPER, "Untrusted", "quote.clock_unsafe", since=since)
    assert shown.reason.startswith("quote.clock_unsafe")
    _neighbour_untouched(env)


# -- code inside NF pods ---------------------------------------------------------------------------


def test_modified_smf_binary_evicts_that_pod_and_excluded_paths_pass(env: Env) -> None:
    """An SMF binary with a backdoor (same path, other digest) runs in one pod, while a file under
    the operator's own exclude (``UPF_EXCLUDE``, a read-only image path, so ``policy lint`` is
    quiet about it) runs in the UPF pod beside it: only the SMF pod goes. An operator's exclude
    is honoured as written. The excluded file is logged first, so when the SMF finding shows, it
    was judged too."""
    node = env.lab.nodes[PODS]
    smf = env.lab.create_nf_pod(NS, "smf-mod", "smf", PODS)
    node.run_in_pod(smf, "/usr/bin/smfd", FILES["smf"]["/usr/bin/smfd"])
    wait_for("smf-mod trusted", lambda: pod_view(env.lab, NS, "smf-mod")[0] == "trusted")

    node.run_in_pod(env.upf_uid, "/usr/share/upf/plugins/probe.so", b"site-specific probe")
    node.run_in_pod(smf, "/usr/bin/smfd", b"open5gs-smfd 2.7 + backdoor")

    _evicted_with(env, "smf-mod", "ima.policy.digest_mismatch (/usr/bin/smfd in pod")
    status = (env.lab.nodeattestation(PODS) or {})["status"]
    pods = {p["name"]: p for p in status["pods"]}
    assert pods["smf-mod"]["state"] == "untrusted"
    assert pods["smf-mod"]["reason"].startswith("ima.policy.digest_mismatch")
    assert pods["upf-ok"]["state"] == "trusted"
    _neighbour_untouched(env)  # the node, and the UPF pod with the excluded file
    assert env.lab.events_for(NS, "upf-ok") == []

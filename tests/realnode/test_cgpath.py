"""Pod attribution measured by a real kernel: our ``ima-cgpath`` patch (kernel/patches), built by
scripts/build-kernel.sh and booted as a lab node. The test makes real cgroups (cgroup v2) in
kubelet's layouts, runs processes in them, and binds real Pod objects with those uids to the node:
what the verifier judges per pod is what the kernel logged.

No kubelet or container runtime runs in the guest (TCG is slow): the test does what they would
(``mkdir`` the pod's cgroup, move a process into it, exec). The tests run in file order on one
guest: the first judges pods on a Trusted node; the second reads the log itself, running
programs in a cgroup of the host and under a pod uid no pod has (host findings: the node goes
Untrusted, so it comes last).
"""

from __future__ import annotations

import functools
import hashlib
import os
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from attestation.core.attribution import attribute
from attestation.core.ima import parse_ascii, parse_binary
from attestation.core.ima.entry import read_field
from attestation.core.types import PodRef
from attestation.lab.ima_writer import cgroupfs_pod_cgroup, systemd_pod_cgroup
from attestation.lab.kernel import Kernel
from attestation.lab.kernelbuild import node_kernel
from attestation.lab.swtpm import LocalCa
from attestation.lab.vm import GUEST_ROOT
from tests.realnode.conftest import RealLab, boot_real_lab
from tests.support.controlplane import ClusterHandle
from tests.support.lab import Lab, wait_for
from tests.support.verdicts import pod_view, seen

#: a cold kernel build (~9 min on 2 idle cores, far more on busy ones) + a boot under TCG
pytestmark = pytest.mark.timeout(3600)

NS = "cgpath-5g"
NODE = "cg-1"
_TRUE = Path("/bin/true").read_bytes()


@pytest.fixture(scope="module")
def cgpath_kernel() -> Kernel:
    """The patched kernel, from the cache or built now (progress on the terminal with -s)."""
    return node_kernel(log=lambda line: print(f"[kernel] {line}", flush=True))


@pytest.fixture(scope="module")
def cg_lab(
    trustgate_installed: ClusterHandle,
    swtpm_ca: LocalCa,
    cgpath_kernel: Kernel,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RealLab]:
    with boot_real_lab(
        trustgate_installed, swtpm_ca, tmp_path_factory.mktemp("cgpath"), cgpath_kernel,
        name=NODE,
    ) as real:  # fmt: skip
        yield real


def _cid() -> str:
    return secrets.token_hex(32)


def _unknown(tag: str) -> bytes:
    return _TRUE + f"\0trustgate-cgpath {tag} ".encode() + secrets.token_bytes(8)


def _leaving(lab: Lab, name: str) -> bool:
    return pod_view(lab, NS, name)[2]


def _pods_state(lab: Lab, names: list[str]) -> dict[str, tuple[str, str, bool]]:
    return {n: pod_view(lab, NS, n) for n in names}


def test_unknown_binary_in_a_pod_evicts_only_that_pod(cg_lab: RealLab) -> None:
    """UPF (systemd driver, containerd), SMF (systemd, CRI-O) and AMF (cgroupfs driver) bound to
    the real node. An unknown binary run in one pod's cgroup makes that pod Untrusted and evicts
    it; its neighbours stay trusted and the node stays Trusted. Then the same in the SMF's CRI-O
    scope and in the AMF's cgroupfs one: each layout is attributed by what the kernel logged."""
    lab = cg_lab.lab
    lab.cluster.ensure_namespace(NS)
    uids = {nf: lab.create_nf_pod(NS, f"{nf}-0", nf, NODE) for nf in ("upf", "smf", "amf")}
    names = [f"{nf}-0" for nf in uids]
    layouts = {
        "upf": systemd_pod_cgroup(uids["upf"], _cid(), "burstable", "cri-containerd"),
        "smf": systemd_pod_cgroup(uids["smf"], _cid(), "besteffort", "crio"),
        "amf": cgroupfs_pod_cgroup(uids["amf"], _cid(), "burstable"),
    }
    wait_for(
        "NF pods trusted on the real node",
        lambda: all(s[0] == "trusted" for s in _pods_state(lab, names).values()),
        120,
        0.5,
    )
    evicted: list[str] = []
    for nf in ("upf", "smf", "amf"):
        exe = f"/tmp/{nf}-payload-{secrets.token_hex(3)}"
        cg_lab.node.run_in_cgroup(layouts[nf], exe, _unknown(nf))
        wait_for(f"{nf}-0 evicted", functools.partial(_leaving, lab, f"{nf}-0"), 120, 0.5)
        evicted.append(f"{nf}-0")
        state, reason, _ = pod_view(lab, NS, f"{nf}-0")
        if state:  # still there, terminating (no kubelet in the lab confirms the deletion)
            assert state == "untrusted", (nf, state, reason)
            assert "ima.policy.unknown_file" in reason, reason
            assert f"{GUEST_ROOT}{exe}" in reason, reason
        for other, (o_state, _, o_leaving) in _pods_state(lab, names).items():
            if other not in evicted:
                assert (o_state, o_leaving) == ("trusted", False), (nf, other, o_state)
        node = seen(lab, NODE)
        assert node.state == "Trusted", (nf, node)
        assert node.trusted, (nf, node)
        assert not node.tainted, (nf, node)
        print(f"\n[cgpath] {nf} ({layouts[nf]}): evicted; neighbours and node untouched")


def test_the_kernel_logs_each_process_with_its_cgroup(cg_lab: RealLab) -> None:
    """Processes in cgroups of kubelet's three layouts, and one of the host's: the kernel logs
    each exec with its cgroup and its ancestors' executables, both lists parse to the same
    entries, every template hash is SHA-1 of the data as we parse it, and attribution names
    each pod and container (the node was attested Trusted already: the log replays to PCR 10)."""
    vm = cg_lab.node.vm
    uid = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
    cids = [_cid() for _ in range(3)]
    cases = {
        systemd_pod_cgroup(uid, cids[0], "burstable", "cri-containerd"): PodRef(uid, cids[0]),
        systemd_pod_cgroup(uid, cids[1], "besteffort", "crio"): PodRef(uid, cids[1]),
        cgroupfs_pod_cgroup(uid, cids[2], "burstable"): PodRef(uid, cids[2]),
        "/system.slice/containerd.service": None,
    }
    exes = {}
    for i, cgroup in enumerate(cases):
        exe = f"/tmp/cg-{i}-{secrets.token_hex(3)}"
        content = _unknown(cgroup)
        cg_lab.node.run_in_cgroup(cgroup, exe, content)
        exes[f"{GUEST_ROOT}{exe}"] = (cgroup, hashlib.sha256(content).digest())

    raw = vm.get("/sys/kernel/security/ima/binary_runtime_measurements")
    log = parse_binary(raw)
    text = parse_ascii(vm.get("/sys/kernel/security/ima/ascii_runtime_measurements"))
    assert {e.template_name for e in log} == {"ima-cgpath"}
    common = min(len(log), len(text))  # the lists were read one after the other
    assert [e.template_data for e in text][:common] == [e.template_data for e in log][:common]
    for e in log:
        if any(e.template_hash):  # a violation's column is zero
            column = hashlib.sha1(e.template_data, usedforsecurity=False).digest()
            assert column == e.template_hash, e
    boot = log[0]
    assert (boot.path, boot.cgroup_path) == ("boot_aggregate", "/"), boot
    assert read_field(boot.template_data, 0, "dep")[0] == b"\0"  # pid 1 before init: no parent

    by_path = {e.path: e for e in log}
    python = f"{GUEST_ROOT}{os.path.realpath(sys.executable)}"
    for path, (cgroup, digest) in exes.items():
        entry = by_path[path]
        assert entry.cgroup_path == cgroup, entry
        assert entry.file_digest == digest
        assert attribute(cgroup) == cases[cgroup]
        dep = read_field(entry.template_data, 0, "dep")[0][:-1].decode()
        # oldest first: the initramfs' busybox (pid 1), ..., the guest shell's Python
        assert dep.startswith("/bin/busybox:"), dep
        assert dep.endswith(f":{python}"), dep
        print(f"\n[cgpath] {entry.index}: dep={dep} cg-path={cgroup} {path}")


#: sh -c NEST NEST <n> <exe>: n nested shells, the innermost execs exe ("; exit" keeps each shell
#: from replacing itself with the next: dash execs a -c script's last command without forking)
_NEST = 'if [ "$1" -gt 0 ]; then /bin/sh -c "$0" "$0" $(($1 - 1)) "$2"; else exec "$2"; fi; exit'


def test_dep_keeps_the_nearest_64_ancestors(cg_lab: RealLab) -> None:
    """The patch bounds dep: a process 70 shells deep is logged with its 64 nearest ancestors
    and a leading '...' saying that older ones were dropped."""
    vm = cg_lab.node.vm
    exe = f"/tmp/deep-{secrets.token_hex(3)}"
    vm.put(exe, _unknown("deep"), 0o755)
    vm.run(["/bin/sh", "-c", _NEST, _NEST, "70", exe])
    log = parse_binary(vm.get("/sys/kernel/security/ima/binary_runtime_measurements"))
    entry = next(e for e in log if e.path == f"{GUEST_ROOT}{exe}")
    dep = read_field(entry.template_data, 0, "dep")[0][:-1].split(b":")
    assert dep[0] == b"..."
    assert len(dep) == 1 + 64
    assert set(dep[1:]) == {f"{GUEST_ROOT}{os.path.realpath('/bin/sh')}".encode()}

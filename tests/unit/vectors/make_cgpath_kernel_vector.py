"""Capture ``ima_cgpath_kernel.{bin,ascii,json}``: the measurement lists a kernel built from
kernel/patches (``ima-cgpath``) wrote under QEMU, for tests/unit/test_ima_kernel_vector.py.

Boots the lab node kernel (attestation.lab.kernelbuild: built if missing, minutes) with the node
IMA policy, runs a copy of /bin/true in a cgroup of each of kubelet's layouts and of the host,
one from a name with a space and one from a name that is not UTF-8, and saves both lists as the
kernel wrote them plus what the test expects of them. Run from the repository root::

    .venv/bin/python -m tests.unit.vectors.make_cgpath_kernel_vector
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from attestation.lab.ima_writer import cgroupfs_pod_cgroup, systemd_pod_cgroup
from attestation.lab.kernelbuild import node_kernel
from attestation.lab.swtpm import LocalCa
from attestation.lab.vm import GUEST_ROOT, Vm

__all__ = ["UID", "main"]

HERE = Path(__file__).resolve().parent
UID = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
CIDS = ("a1" * 32, "b2" * 32, "c3" * 32)
CGROUPS = (
    systemd_pod_cgroup(UID, CIDS[0], "burstable", "cri-containerd"),
    systemd_pod_cgroup(UID, CIDS[1], "besteffort", "crio"),
    cgroupfs_pod_cgroup(UID, CIDS[2], "burstable"),
    "/system.slice/containerd.service",
)
_SCRIPT = 'echo $$ > "/sys/fs/cgroup$1/cgroup.procs" && exec "$2"'


def _capture(vm: Vm) -> dict[str, object]:
    true = Path("/bin/true").read_bytes()
    cases = []
    for i, cgroup in enumerate(CGROUPS):
        exe = f"/tmp/cg-{i}"
        vm.run(["/bin/mkdir", "-p", f"/sys/fs/cgroup{cgroup}"])
        vm.put(exe, true + bytes([i]) * 8, 0o755)
        vm.run(["/bin/sh", "-c", _SCRIPT, "sh", cgroup, exe])
        cases.append({"path": f"{GUEST_ROOT}{exe}", "cgroup": cgroup})
    vm.put("/tmp/with space", true + b"space", 0o755)
    vm.run(["/tmp/with space"])
    vm.put(b"/tmp/caf\xe9", true + b"latin-1", 0o755)
    vm.run([b"/tmp/caf\xe9"])
    release = vm.run(["/bin/uname", "-r"]).stdout.decode().strip()
    cmdline = vm.get("/proc/cmdline").decode().strip()
    return {"release": release, "cmdline": cmdline, "uid": UID, "cases": cases}


def main() -> None:
    kernel = node_kernel(log=print)
    with tempfile.TemporaryDirectory(prefix="cgpath-vector-") as scratch:
        work = Path(scratch)
        vm = Vm("cgpath-vector", work / "vm", kernel, LocalCa.create(work / "ca"), log=print)
        vm.start()
        try:
            meta = _capture(vm)
            binary = vm.get("/sys/kernel/security/ima/binary_runtime_measurements")
            ascii_ = vm.get("/sys/kernel/security/ima/ascii_runtime_measurements")
        finally:
            vm.stop()
    (HERE / "ima_cgpath_kernel.bin").write_bytes(binary)
    (HERE / "ima_cgpath_kernel.ascii").write_bytes(ascii_)
    (HERE / "ima_cgpath_kernel.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"{len(binary)} binary bytes, {len(ascii_.splitlines())} lines")


if __name__ == "__main__":
    main()

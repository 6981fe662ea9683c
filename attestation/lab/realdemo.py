"""`trustgate demo --real-node`: after the simulated scenario, one worker on a real Linux kernel.

The kernel is ours (Debian's 6.1 with the ``ima-cgpath`` patch, ``kernel/``), booted under QEMU
with swtpm as its TPM; ``trustgate agent`` runs inside the guest on ``/dev/tpmrm0`` and the
kernel's own securityfs list. A UPF and an SMF pod are bound to it, their "containers" are
processes the demo starts in real cgroups of kubelet's systemd layout (no container runtime runs
in the guest: TCG is slow). Then an unknown program runs in the UPF's cgroup: the kernel measures
it with the pod's cgroup path, and the verifier evicts exactly that pod.

This act has a verifier of its own (and its own signing key), scoped to the real node, so the
simulated scenario's verifier and webhook are stopped first; its pods live in a namespace the
webhook does not protect (they are judged and evicted all the same).
"""

from __future__ import annotations

import functools
import secrets
import time
from collections.abc import Callable
from pathlib import Path

from attestation.core.names import TRUST_STATE_ANNOTATION
from attestation.lab.cluster import (
    NODEATTESTATIONS,
    LabCluster,
    lab_node_label,
    unregister_webhooks,
)
from attestation.lab.ima_writer import systemd_pod_cgroup
from attestation.lab.kernelbuild import node_kernel
from attestation.lab.poll import wait_for
from attestation.lab.realnode import RealNode, host_policy
from attestation.lab.swtpm import LocalCa
from attestation.lab.vm import GUEST_ROOT

__all__ = ["REAL_NAMESPACE", "REAL_NODE", "real_node_act", "real_node_step"]

REAL_NODE = "real-1"
REAL_NAMESPACE = "5g-real"
#: Enrollment and a full replay under TCG, where one agent call takes seconds.
_FIRST_VERDICT_S = 600.0
_PAYLOAD = Path("/bin/true").read_bytes() + b"\0the attacker's payload "


def _nf_policy(nf: str) -> dict[str, object]:
    """The NF pods run nothing in this act but what the attack runs: an empty policy."""
    return {"apiVersion": "trustgate.io/v1alpha1", "kind": "RuntimePolicy",
            "metadata": {"name": nf}, "spec": {"networkFunction": nf, "digests": {}}}  # fmt: skip


def real_node_step(
    lab: LabCluster, out: Path, say: Callable[[str], None], check: Callable[[bool, str], None]
) -> float:
    """The act after the simulated scenario on ``lab``: its verifier and webhook stop (this act
    has its own), then :func:`real_node_act` on the same control plane."""
    unregister_webhooks(lab.plane)
    for process in [*lab.verifiers, *([lab.webhook] if lab.webhook else [])]:
        process.stop()
    say("the simulated scenario's verifier and webhook stopped: this act runs its own")
    assert lab.tpm_ca is not None
    real = LabCluster(out, lab.plane, node_label=lab_node_label("real"), tpm_ca=lab.tpm_ca,
                      log=say)  # fmt: skip
    try:
        return real_node_act(real, lab.tpm_ca, say, check)
    finally:
        real.stop()


def real_node_act(
    system: LabCluster,
    tpm_ca: LocalCa,
    say: Callable[[str], None],
    check: Callable[[bool, str], None],
) -> float:
    """Run the act on ``system`` (a lab on the demo's control plane, not started yet); returns
    the seconds from the program's start to the eviction request."""
    say("the node kernel (ima-cgpath patch): from ~/.cache/trustgate/kernel, or built now")
    kernel = node_kernel(log=lambda line: say(f"  [kernel] {line}"))
    system.start()
    assert system.tls_ca is not None
    node = RealNode.create(
        REAL_NODE, system.workdir / REAL_NODE, kernel, tpm_ca, system.tls_ca,
        verifier_port=system.verifier_port, log=say,
    )  # fmt: skip
    try:
        started = time.monotonic()
        say(f"{REAL_NODE}: booting {kernel.release} under QEMU (software emulation: minutes)")
        node.start()
        say(f"{REAL_NODE}: the agent serves in the guest after {time.monotonic() - started:.0f}s")
        system.write_policies({"upf": _nf_policy("upf"), "smf": _nf_policy("smf"),
                               "host": host_policy(node.ima_log())})  # fmt: skip
        say("host policy: what this known-good boot measured (the kernel's own log)")
        system.plane.add_node(REAL_NODE, {system.node_label[0]: system.node_label[1]})
        system.agent_urls[REAL_NODE] = node.agent_url
        system.start_verifier(interval=2.0, max_age=60.0, extra_args=("--agent-timeout", "30"))
        wait_for(f"{REAL_NODE} Trusted", functools.partial(system.trusted, REAL_NODE),
                 _FIRST_VERDICT_S, 1.0)  # fmt: skip
        check(True, f"{REAL_NODE} Trusted: its kernel's log replays to the swtpm's PCR 10")
        return _attack(system, node, say, check)
    finally:
        node.shutdown()
        system.plane.delete(f"/api/v1/nodes/{REAL_NODE}")
        system.plane.delete(f"{NODEATTESTATIONS}/{REAL_NODE}")


def _attack(
    system: LabCluster, node: RealNode, say: Callable[[str], None],
    check: Callable[[bool, str], None],
) -> float:  # fmt: skip
    plane = system.plane
    plane.ensure_namespace(REAL_NAMESPACE)
    uids = {}
    for nf in ("upf", "smf"):
        pod = plane.request("POST", f"/api/v1/namespaces/{REAL_NAMESPACE}/pods", {
            "metadata": {"name": f"{nf}-real", "labels": {"trustgate.io/network-function": nf}},
            "spec": {"nodeName": REAL_NODE, "containers": [{"name": nf, "image": nf}]},
        })  # fmt: skip
        uids[nf] = pod["metadata"]["uid"]
    wait_for("both pods trusted", lambda: all(_state(system, f"{nf}-real") == "trusted"
                                              for nf in uids), 180, 0.5)  # fmt: skip
    check(True, "upf-real and smf-real bound to the real node, trusted")
    cgroup = systemd_pod_cgroup(uids["upf"], secrets.token_hex(32), "burstable", "cri-containerd")
    exe = f"/tmp/payload-{secrets.token_hex(3)}"  # noqa: S108 - in the guest, as an attacker would
    say(f"running {exe} in the UPF pod's cgroup {cgroup}")
    ran = time.monotonic()
    node.run_in_cgroup(cgroup, exe, _PAYLOAD + secrets.token_bytes(8))
    wait_for("upf-real evicted", lambda: _leaving(system, "upf-real"), 180, 0.2)
    seconds = time.monotonic() - ran
    check(True, f"upf-real evicted {seconds:.2f}s after the program ran (the kernel measured "
                f"{GUEST_ROOT}{exe} with the pod's cgroup)")  # fmt: skip
    check(_state(system, "smf-real") == "trusted" and not _leaving(system, "smf-real"),
          "smf-real on the same node untouched")  # fmt: skip
    check(system.trusted(REAL_NODE), f"{REAL_NODE} itself still Trusted")
    return seconds


def _pod(system: LabCluster, name: str) -> dict[str, object]:
    obj = system.get(f"/api/v1/namespaces/{REAL_NAMESPACE}/pods/{name}")
    return obj if isinstance(obj, dict) else {}


def _state(system: LabCluster, name: str) -> str:
    meta = _pod(system, name).get("metadata") or {}
    annotations = meta.get("annotations") if isinstance(meta, dict) else None
    return str((annotations or {}).get(TRUST_STATE_ANNOTATION, ""))


def _leaving(system: LabCluster, name: str) -> bool:
    pod = _pod(system, name)
    meta = pod.get("metadata") or {}
    return not pod or bool(isinstance(meta, dict) and meta.get("deletionTimestamp"))

"""The realnode layer: a real Linux kernel (Debian 12's, under QEMU/TCG) writes the IMA log and
extends PCR 10 in swtpm; ``trustgate agent`` runs inside the guest with its production defaults;
the verifier on the host attests it through a forwarded port, on the session's control plane.

One guest per module (a boot costs ~30-60 s under TCG on 2 busy cores), always powered off or
killed at teardown. Tests in a module run in file order and build on each other's state (a
host finding stays until the node reboots), each saying so.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from attestation.lab.cluster import NODEATTESTATIONS, LabCluster, lab_node_label
from attestation.lab.kernel import Kernel, debian_kernel
from attestation.lab.realnode import RealNode, host_policy
from attestation.lab.swtpm import LocalCa
from tests.support.controlplane import ClusterHandle
from tests.support.lab import FILES, Lab, policy_document
from tests.support.verdicts import wait_state

__all__ = ["RealLab", "boot_real_lab", "start_verifier"]

#: A real node's first verdict: enrollment and a full replay of a few hundred entries (s).
FIRST_VERDICT_TIMEOUT = 600.0


@dataclass
class RealLab:
    lab: Lab
    node: RealNode
    #: seconds from QEMU's start until the agent served in the guest
    boot_seconds: float


@pytest.fixture(scope="session")
def stock_kernel() -> Kernel:
    """Debian 12's kernel, fetched once per version into ~/.cache/trustgate/kernel."""
    return debian_kernel(lambda m: print(f"\n[kernel] {m}"))


@contextlib.contextmanager
def boot_real_lab(
    cluster: ClusterHandle,
    ca: LocalCa,
    workdir: Path,
    kernel: Kernel,
    *,
    name: str = "real-1",
    push: bool = True,
    interval: float = 2.0,
    max_age: float = 60.0,
) -> Iterator[RealLab]:
    """Boot a real node, make its host policy from this known-good boot, start the verifier
    and wait for the first verdict (Trusted). Everything is stopped on the way out."""
    label = lab_node_label(workdir.name)
    system = LabCluster(workdir, cluster.plane, node_label=label, tpm_ca=ca, log=print)
    node: RealNode | None = None
    try:
        system.start()
        assert system.tls_ca is not None
        node = RealNode.create(
            name, workdir / name, kernel, ca, system.tls_ca,
            verifier_port=system.verifier_port if push else None, log=print,
        )  # fmt: skip
        started = time.monotonic()
        node.start()
        boot = time.monotonic() - started
        print(f"\n[realnode] {name}: kernel to agent serving in {boot:.1f}s")
        policies = {nf: policy_document(nf) for nf in FILES if nf != "host"}
        system.write_policies({**policies, "host": host_policy(node.ima_log())})
        system.plane.add_node(name, {label[0]: label[1]})
        system.agent_urls[name] = node.agent_url
        start_verifier(system, interval, max_age)
        lab = Lab(cluster, system)
        try:
            wait_state(lab, name, "Trusted", timeout=FIRST_VERDICT_TIMEOUT)
        except TimeoutError as e:
            raise AssertionError(
                f"{e}\n{_verifier_tail(system)}\n{node.vm.share_log('agent')}"
            ) from e
        yield RealLab(lab, node, boot)
    finally:
        if node is not None:
            node.shutdown()
        system.stop()
        system.plane.delete(f"/api/v1/nodes/{name}")
        system.plane.delete(f"{NODEATTESTATIONS}/{name}")


def start_verifier(system: LabCluster, interval: float = 2.0, max_age: float = 60.0) -> None:
    """Under TCG one agent call (TLS in the guest's Python, a TPM command through the guest
    kernel) takes seconds, not the milliseconds of a node: the verifier waits for it."""
    system.start_verifier(interval=interval, max_age=max_age, extra_args=("--agent-timeout", "30"))


def _verifier_tail(system: LabCluster) -> str:
    return "" if system.verifier is None else f"--- verifier ---\n{system.verifier.log_tail(40)}"


@pytest.fixture(scope="module")
def real_lab(
    trustgate_installed: ClusterHandle,
    swtpm_ca: LocalCa,
    stock_kernel: Kernel,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RealLab]:
    with boot_real_lab(
        trustgate_installed, swtpm_ca, tmp_path_factory.mktemp("realnode"), stock_kernel
    ) as real:
        yield real

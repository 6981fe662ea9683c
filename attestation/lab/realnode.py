"""A lab worker node on a real Linux kernel: a :class:`~attestation.lab.vm.Vm` whose boot starts
``trustgate agent`` with its production defaults (TCTI ``device:/dev/tpmrm0`` through the
kernel's resource manager, the kernel's own ``binary_runtime_measurements`` on securityfs), its
TLS port forwarded to host loopback so the verifier reaches it like any node, and its pushes
going to the host (``HOST_FROM_GUEST``).

The host policy of such a node comes from a known-good boot (:func:`host_policy`): what the
guest's log shows once its agent serves, plus every shared object the host's Python and the
project's environment could map later (an extension module imported on first use is measured
then, not at boot), hashed on the host under the guest's ``/host`` prefix.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from attestation.core import policy_gen
from attestation.core.ima import parse_binary
from attestation.lab.kernel import Kernel
from attestation.lab.node import trustgate_exe
from attestation.lab.pki import CertificateAuthority
from attestation.lab.poll import wait_for
from attestation.lab.process import free_port
from attestation.lab.swtpm import LocalCa
from attestation.lab.vm import GUEST_ROOT, HOST_FROM_GUEST, Vm

__all__ = ["AGENT_GUEST_PORT", "IMA_LIST", "RealNode", "host_policy", "shared_objects"]

AGENT_GUEST_PORT: Final = 9443
IMA_LIST: Final = "/sys/kernel/security/ima/binary_runtime_measurements"
_AGENT_TIMEOUT: Final = 900.0
_MKDIR: Final = "import os, sys; os.makedirs(sys.argv[1], exist_ok=True)"


@dataclass
class RealNode:
    name: str
    vm: Vm
    #: the agent's port on host loopback
    port: int

    @classmethod
    def create(
        cls,
        name: str,
        workdir: Path,
        kernel: Kernel,
        tpm_ca: LocalCa,
        tls_ca: CertificateAuthority,
        *,
        verifier_port: int | None,
        agent_args: Iterable[str] = (),
        log: Callable[[str], None] = lambda _m: None,
    ) -> RealNode:
        """``verifier_port``: the host port of the verifier's push endpoint (None: no push)."""
        workdir.mkdir(parents=True, exist_ok=True)
        port = free_port()
        share = workdir.resolve() / "vm" / "share"
        tls = tls_ca.issue(share / "tls", "agent", name, ip_addresses=("127.0.0.1",), server=True)
        argv = [
            trustgate_exe(), "agent", "--node", name, "--state-dir", str(share / "agent"),
            "--host", "0.0.0.0", "--port", str(AGENT_GUEST_PORT),  # noqa: S104 - QEMU's user net
            "--tls-cert", str(tls.cert), "--tls-key", str(tls.key), *agent_args,
        ]  # fmt: skip
        if verifier_port is not None:
            argv += ["--notify-url", f"http://{HOST_FROM_GUEST}:{verifier_port}/v1/notify"]
        vm = Vm(
            name, workdir / "vm", kernel, tpm_ca, services={"agent": " ".join(argv)},
            forwards={AGENT_GUEST_PORT: port}, log=log,
        )  # fmt: skip
        return cls(name, vm, port)

    @property
    def agent_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self, timeout: float = _AGENT_TIMEOUT) -> None:
        """Boot and wait until the agent in the guest serves (it enrolls its AK on start)."""
        self.vm.start(timeout)
        self.wait_agent(timeout)

    def wait_agent(self, timeout: float = _AGENT_TIMEOUT) -> None:
        def serving() -> bool:
            # QEMU accepts on the forwarded port whatever the guest does: ask the guest
            out = self.vm.get("/proc/net/tcp")
            return f":{AGENT_GUEST_PORT:04X} 00000000:0000 0A".encode() in out

        try:
            wait_for(f"{self.name}: agent listening in the guest", serving, timeout, 1.0)
        except TimeoutError as e:
            raise TimeoutError(f"{e}\n{self.vm.share_log('agent')}") from e

    def reboot(self, timeout: float = _AGENT_TIMEOUT) -> None:
        self.vm.reboot(timeout)
        self.wait_agent(timeout)

    def run_in_cgroup(self, cgroup: str, exe: str, content: bytes) -> None:
        """What a container runtime does for a container's process: make its cgroup (cgroup v2),
        move a shell into it and exec ``exe`` (written with ``content``). Only programs the
        guest ran before its host policy was made do the work (its Python, sh): any other would
        be measured in the host's cgroup, a host finding."""
        self.vm.run([sys.executable, "-c", _MKDIR, f"/sys/fs/cgroup{cgroup}"])
        self.vm.put(exe, content, 0o755)
        script = 'echo $$ > "/sys/fs/cgroup$1/cgroup.procs" && exec "$2"'
        self.vm.run(["/bin/sh", "-c", script, "sh", cgroup, exe])

    def ima_log(self) -> bytes:
        """The kernel's binary measurement list as it is now."""
        return self.vm.get(IMA_LIST, size=1 << 30)

    def shutdown(self) -> None:
        self.vm.stop()


def shared_objects(roots: Iterable[Path]) -> dict[str, str]:
    """``/host<path>`` -> ``sha256:<hex>`` of every shared object (``*.so*``) under ``roots``."""
    out: dict[str, str] = {}
    for root in roots:
        for path in sorted(root.rglob("*.so*")):
            if path.is_file() and not path.is_symlink():
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                out[f"{GUEST_ROOT}{path}"] = f"sha256:{digest}"
    return out


def host_policy(log: bytes, name: str = "host") -> dict[str, Any]:
    """The host runtime policy of a real node from its known-good ``log`` (binary, SHA-1 column)
    and the shared objects of this Python and this environment."""
    doc = policy_gen.from_log(
        parse_binary(log), name=name, network_function="host",
        owner=lambda pod: pod is None, excludes=(),
    )  # fmt: skip
    prefix = Path(sys.prefix).resolve()
    base = Path(sys.base_prefix).resolve()
    for path, digest in shared_objects({prefix, base / "lib"}).items():
        values = doc["spec"]["digests"].setdefault(path, [])
        if digest not in values:
            values.append(digest)
    return doc

"""A simulated worker node: a real software TPM, an IMA measurement list written the way the
kernel writes it (the one stand-in: this machine's kernel has no IMA), and a real
``trustgate agent`` process serving them over TLS."""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from attestation.core.types import HashAlg
from attestation.lab.ima_writer import ImaWriter, systemd_pod_cgroup
from attestation.lab.pki import CertFiles, CertificateAuthority
from attestation.lab.process import ManagedProcess, free_port, tcp_open
from attestation.lab.swtpm import LocalCa, SwTpm

__all__ = ["SimNode", "trustgate_exe"]


def trustgate_exe() -> str:
    """The console script of this environment (the lab starts real `trustgate` processes)."""
    exe = shutil.which("trustgate", path=str(Path(sys.executable).parent)) or shutil.which(
        "trustgate"
    )
    if exe is None:
        raise FileNotFoundError("the `trustgate` command is not installed (run `make setup`)")
    return exe


@dataclass
class SimNode:
    name: str
    workdir: Path
    tpm: SwTpm
    writer: ImaWriter
    cert: Path
    key: Path
    notify_url: str | None
    #: The CA whose client certificates the agent accepts (the verifier's), and the lab
    #: verifier's certificate from it: what a test needs to call this agent as the verifier.
    client_ca: Path | None = None
    verifier_client: CertFiles | None = None
    port: int = field(default_factory=free_port)
    agent: ManagedProcess | None = None

    @classmethod
    def create(
        cls,
        name: str,
        workdir: Path,
        tpm_ca: LocalCa,
        tls_ca: CertificateAuthority,
        notify_url: str | None,
        client_ca: CertificateAuthority | None = None,
        verifier_client: CertFiles | None = None,
    ) -> SimNode:
        workdir.mkdir(parents=True, exist_ok=True)
        tpm = SwTpm(tpm_ca, workdir / "tpm")
        tpm.start()
        writer = ImaWriter(
            workdir / "binary_runtime_measurements", extend=tpm.extend_pcr, template="ima-cgpath"
        )
        files = tls_ca.issue(
            workdir / "tls", "agent", name, ip_addresses=("127.0.0.1",), server=True
        )
        trusted = client_ca.files.cert if client_ca else None
        return cls(
            name, workdir, tpm, writer, files.cert, files.key, notify_url, trusted, verifier_client
        )

    @property
    def agent_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def boot(self, host_files: dict[str, bytes]) -> None:
        """What the kernel measures at boot: boot_aggregate, then the host's own binaries."""
        pcrs = self.tpm.read_pcrs(list(range(8)), (HashAlg.SHA256,))[HashAlg.SHA256]
        self.writer.boot_aggregate(pcrs)
        for path, content in host_files.items():
            self.writer.measure(path, content)

    def run_in_pod(self, pod_uid: str, path: str, content: bytes, container: str = "c0") -> None:
        """A process inside the pod's container executes ``path``: IMA measures it with the
        container's cgroup path (systemd driver, containerd)."""
        self.writer.measure(path, content, cgroup_path=systemd_pod_cgroup(pod_uid, container))

    def start_agent(self) -> None:
        argv = [
            trustgate_exe(), "agent", "--node", self.name, "--tcti", self.tpm.tcti,
            "--ima-log", str(self.writer.log_path), "--state-dir", str(self.workdir / "agent"),
            "--host", "127.0.0.1", "--port", str(self.port),
            "--tls-cert", str(self.cert), "--tls-key", str(self.key),
        ]  # fmt: skip
        if self.notify_url:
            argv += ["--notify-url", self.notify_url]
        if self.client_ca:
            argv += ["--client-ca", str(self.client_ca)]
        self.agent = ManagedProcess(f"agent-{self.name}", argv, self.workdir / "agent.log")
        self.agent.start()
        self.agent.wait_until(lambda: tcp_open("127.0.0.1", self.port), 30, "agent listening")

    def stop_agent(self) -> None:
        if self.agent is not None:
            self.agent.stop()
            self.agent = None

    def shutdown(self) -> None:
        self.stop_agent()
        self.tpm.stop(orderly=False)

"""Real software TPMs (swtpm) for the tests and the demo: a private local CA, provisioned TPMs with
EK certificates, PCR extension, reboots; a swtpm never outlives the process that started it.

Each TPM is provisioned with its own ``swtpm_setup`` run (~0.7 s once the CA exists): copying a
template state directory would be faster but would give every TPM the same EK seed, and the
enrollment tests need distinct EKs. The CA is made once per session (~1 s more).

swtpm has no resource manager and serves one TCP connection at a time: callers open a
connection per operation and flush every transient handle.
"""

from __future__ import annotations

import ctypes
import signal
import socket
import struct
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tpm2_pytss import ESAPI, TPML_DIGEST_VALUES, TPML_PCR_SELECTION, TPMT_HA
from tpm2_pytss.constants import ESYS_TR

from attestation.core.types import HashAlg
from attestation.lab.poll import wait_for
from attestation.lab.process import free_ports, tcp_open

__all__ = ["PCR_BANKS", "LocalCa", "SwTpm"]

_START_TIMEOUT = 10.0
_STOP_TIMEOUT = 5.0
_PR_SET_PDEATHSIG = 1

#: PCR banks the test TPMs activate: SHA-1 for the classic IMA template hash, SHA-256 for the rest.
PCR_BANKS = (HashAlg.SHA1, HashAlg.SHA256)


def _die_with_parent() -> None:
    """Runs in the child before exec: swtpm gets SIGKILL if the test process dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _run(argv: Sequence[str]) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({proc.returncode}): {proc.stderr or proc.stdout}")


@dataclass(frozen=True)
class LocalCa:
    """A private swtpm-localca: its own root and intermediate, never /var/lib/swtpm-localca."""

    dir: Path
    setup_conf: Path

    @property
    def root_cert(self) -> Path:
        return self.dir / "swtpm-localca-rootca-cert.pem"

    @property
    def issuer_cert(self) -> Path:
        return self.dir / "issuercert.pem"

    @property
    def ca_bundle(self) -> Path:
        """PEM of the root and the intermediate that signs EK certificates."""
        return self.dir / "ca-bundle.pem"

    @classmethod
    def create(cls, directory: Path) -> LocalCa:
        """Write the configs and let a first swtpm_setup create the CA keys and certificates."""
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "localca.conf").write_text(
            f"statedir = {directory}\n"
            f"signingkey = {directory}/signkey.pem\n"
            f"issuercert = {directory}/issuercert.pem\n"
            f"certserial = {directory}/certserial\n"
        )
        (directory / "localca.options").write_text(
            "--platform-manufacturer trustgate\n--platform-version 2.1\n--platform-model swtpm\n"
        )
        setup_conf = directory / "swtpm_setup.conf"
        setup_conf.write_text(
            "create_certs_tool = /usr/bin/swtpm_localca\n"
            f"create_certs_tool_config = {directory}/localca.conf\n"
            f"create_certs_tool_options = {directory}/localca.options\n"
            f"active_pcr_banks = {','.join(b.value for b in PCR_BANKS)}\n"
        )
        ca = cls(directory, setup_conf)
        with tempfile.TemporaryDirectory(prefix="swtpm-ca-") as scratch:
            ca.provision(Path(scratch))
        ca.ca_bundle.write_text(ca.root_cert.read_text() + ca.issuer_cert.read_text())
        return ca

    def provision(self, state_dir: Path) -> None:
        """Manufacture a TPM state: fresh seeds, RSA and ECC EKs with certificates from this CA."""
        state_dir.mkdir(parents=True, exist_ok=True)
        _run(
            [
                "swtpm_setup", "--tpm2", "--tpmstate", str(state_dir),
                "--create-ek-cert", "--create-platform-cert", "--lock-nvram",
                "--config", str(self.setup_conf), "--overwrite",
            ]
        )  # fmt: skip


class SwTpm:
    """One provisioned swtpm listening on loopback TCP."""

    def __init__(self, ca: LocalCa, workdir: Path) -> None:
        self.ca = ca
        self.state_dir = workdir / "state"
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = workdir / "swtpm.log"
        ca.provision(self.state_dir)

    @property
    def tcti(self) -> str:
        return f"swtpm:host=127.0.0.1,port={self.port}"

    @property
    def ca_bundle(self) -> Path:
        return self.ca.ca_bundle

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        if self.running:
            return
        # A restart keeps its port, as a rebooted machine keeps its TPM device: whatever holds
        # the TCTI string (an agent) reconnects to the same place.
        if not self.port:
            self.port = free_ports(2)  # server and control channel
        argv = [
            "swtpm", "socket", "--tpm2",
            "--server", f"type=tcp,port={self.port},bindaddr=127.0.0.1",
            "--ctrl", f"type=tcp,port={self.port + 1},bindaddr=127.0.0.1",
            "--tpmstate", f"dir={self.state_dir}",
            "--flags", "not-need-init,startup-clear",
            "--log", f"file={self._log}",
        ]  # fmt: skip
        self._proc = subprocess.Popen(argv, preexec_fn=_die_with_parent)
        try:
            wait_for(f"swtpm listening on {self.port}", self._listening, _START_TIMEOUT, 0.005)
        except TimeoutError:
            self.stop()
            raise

    def _listening(self) -> bool:
        assert self._proc is not None
        if self._proc.poll() is not None:
            raise RuntimeError(f"swtpm exited with {self._proc.returncode}: see {self._log}")
        # both channels: swtpm opens the control one first
        return tcp_open("127.0.0.1", self.port + 1) and tcp_open("127.0.0.1", self.port)

    def _raw(self, command: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.sendall(command)
            header = s.recv(10)
            _, size, _ = struct.unpack(">HII", header)
            body = b""
            while len(header) + len(body) < size:
                chunk = s.recv(size - len(header) - len(body))
                if not chunk:
                    break
                body += chunk
            return header + body

    def stop(self, *, orderly: bool = True) -> None:
        """Stop the process. ``orderly`` sends TPM2_Shutdown(CLEAR) first, as an OS does before
        power-off; without it the next start is a power loss and the TPM clock becomes unsafe."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        try:
            if orderly:
                self._raw(struct.pack(">HIIH", 0x8001, 12, 0x145, 0))  # TPM2_Shutdown(SU_CLEAR)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=_STOP_TIMEOUT)

    def restart(self, *, orderly: bool = True) -> None:
        """A reboot: the process restarts with startup-clear, so resetCount goes up and the PCRs
        reset. Open connections break; reconnect after."""
        self.stop(orderly=orderly)
        self.start()

    def esapi(self) -> ESAPI:
        return ESAPI(self.tcti)

    def extend_pcr(self, pcr: int, digests: Mapping[HashAlg, bytes]) -> None:
        """TPM2_PCR_Extend one PCR in each given bank."""
        has = []
        for alg, digest in digests.items():
            ha = TPMT_HA(hashAlg=alg.tpm_alg_id)
            setattr(ha.digest, alg.value, digest)
            has.append(ha)
        values = TPML_DIGEST_VALUES(has)
        with self.esapi() as esys:
            esys.pcr_extend(ESYS_TR.PCR0 + pcr, values)

    def read_pcrs(
        self, pcrs: Sequence[int], banks: Sequence[HashAlg] = PCR_BANKS
    ) -> dict[HashAlg, dict[int, bytes]]:
        out: dict[HashAlg, dict[int, bytes]] = {}
        with self.esapi() as esys:
            for bank in banks:
                values: dict[int, bytes] = {}
                for i in range(0, len(pcrs), 8):  # the TPM returns at most 8 digests per read
                    chunk = sorted(pcrs[i : i + 8])
                    sel = TPML_PCR_SELECTION.parse(f"{bank.value}:{','.join(map(str, chunk))}")
                    _, _, digests = esys.pcr_read(sel)
                    values.update(zip(chunk, (bytes(d) for d in digests), strict=True))
                out[bank] = values
        return out

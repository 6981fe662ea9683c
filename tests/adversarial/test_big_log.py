"""A big IMA log must not kill the agent or the verifier, and a verifier restart must not read it
again from zero (issue 14, item 9). Real swtpm node, real agent and verifier processes, real
control plane.

A tenant grows a node's log by executing many distinct small files; the lab writes ~60 MiB of
``ima-cgpath`` entries the way the kernel does (each one extended into PCR 10 of the node's swtpm,
the commands sent straight to swtpm's port, ~0.1 ms each: ESAPI's ~1 ms would take minutes).
The entries are host processes running the host's allowed ``containerd`` (each with its own
``dep`` field, so every entry differs), so the node stays Trusted throughout.
"""

from __future__ import annotations

import hashlib
import socket
import struct
import threading
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path

import pytest

from attestation.core.clock import parse_time
from attestation.core.types import IMA_PCR, HashAlg
from attestation.lab.ima_writer import encode_entry, encode_template_data
from attestation.lab.node import SimNode
from attestation.lab.poll import wait_for
from tests.support.controlplane import ClusterHandle
from tests.support.lab import FILES, Lab, lab_cluster
from tests.support.swtpm import LocalCa
from tests.support.verdicts import audit_records, seen, wait_state

NODE = "biglog-1"
LOG_MIB = 60
#: What the processes' peak RSS (VmHWM) must stay under while the whole log is read from zero
#: and after a restart: a page is 4 MiB, the agent's DaemonSet limit 256 Mi.
AGENT_PEAK_MIB = 160
VERIFIER_PEAK_MIB = 220
MAX_AGE = 5.0
VERIFIER_ARGS = ("--eviction-deadline", "5", "--agent-timeout", "20")
_CGROUP = "/system.slice/" + "tenant-churn-" * 20 + "runner.service"
_BANKS = ((HashAlg.SHA1, 0x0004), (HashAlg.SHA256, 0x000B))


def _extend_command(template_data: bytes) -> bytes:
    """TPM2_PCR_Extend(PCR 10, sha1 and sha256 of the template data), password session, wrapped
    in swtpm's TCP framing (TPM_SEND_COMMAND, locality 0)."""
    auth = struct.pack(">IHBH", 0x40000009, 0, 1, 0)  # TPM_RS_PW, no nonce, continue, no hmac
    body = struct.pack(">I", IMA_PCR) + struct.pack(">I", len(auth)) + auth
    body += struct.pack(">I", len(_BANKS))
    for alg, alg_id in _BANKS:
        body += struct.pack(">H", alg_id) + hashlib.new(alg.value, template_data).digest()
    command = struct.pack(">HII", 0x8002, 10 + len(body), 0x182) + body
    return struct.pack(">IBI", 8, 0, len(command)) + command


def _recv(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError("swtpm closed the connection")
        buf += chunk
    return buf


def _extend_batch(port: int, datas: list[bytes]) -> None:
    """One command at a time on one connection (swtpm reads one command per read: pipelined
    commands come back TPM_RC_COMMAND_SIZE)."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        for data in datas:
            sock.sendall(_extend_command(data))
            (size,) = struct.unpack(">I", _recv(sock, 4))
            rc = struct.unpack(">I", _recv(sock, size)[6:10])[0]
            _recv(sock, 4)  # swtpm's trailing status word
            assert rc == 0, f"TPM2_PCR_Extend failed: {rc:#x}"


def grow_log(node: SimNode, mib: int) -> int:
    """Append ``mib`` MiB of entries to ``node``'s log, extending its PCR 10 as the kernel does
    (the list first, then the PCR); return how many."""
    path, digest = "/usr/bin/containerd", hashlib.sha256(FILES["host"]["/usr/bin/containerd"])
    count, size, target = 0, 0, mib * 1024 * 1024
    with node.writer.log_path.open("ab") as log:
        while size < target:
            datas = [
                encode_template_data(
                    "ima-cgpath",
                    path,
                    "sha256",
                    digest.digest(),
                    cgroup_path=_CGROUP,
                    dep=f"tenant-job-{count + k:08d}",
                )
                for k in range(512)
            ]
            raw = b"".join(
                encode_entry(hashlib.sha1(d).digest(), "ima-cgpath", d)  # noqa: S324 - column
                for d in datas
            )
            log.write(raw)
            log.flush()
            _extend_batch(node.tpm.port, datas)
            count, size = count + len(datas), size + len(raw)
    return count


def peak_mib(pid: int) -> float:
    """VmHWM: the process's peak resident set, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmHWM for pid {pid}")


class StateWatch:
    """Samples the node's published state every 50 ms on a thread, until stopped."""

    def __init__(self, lab: Lab, node: str) -> None:
        self.states: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(lab, node), daemon=True)

    def _run(self, lab: Lab, node: str) -> None:
        while not self._stop.is_set():
            self.states.append((time.monotonic(), seen(lab, node).state))
            self._stop.wait(0.05)

    def __enter__(self) -> StateWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture(scope="module")
def big(
    trustgate_installed: ClusterHandle, swtpm_ca: LocalCa, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Lab, int, float]]:
    workdir = tmp_path_factory.mktemp("big-log")
    grown: list[tuple[int, float]] = []

    def grow_before_the_verifier(nodes: Mapping[str, SimNode]) -> Mapping[str, str]:
        started = time.monotonic()
        grown.append((grow_log(nodes[NODE], LOG_MIB), time.monotonic() - started))
        return {}

    with lab_cluster(
        trustgate_installed, swtpm_ca, workdir, [NODE], max_age=MAX_AGE,
        verifier_args=VERIFIER_ARGS, agent_urls=grow_before_the_verifier, trusted=[NODE],
    ) as lab:  # fmt: skip
        yield lab, *grown[0]


def _restart_verifier(lab: Lab) -> None:
    lab.system.verifiers.pop().stop()
    lab.system.start_verifier(interval=0.5, max_age=MAX_AGE, extra_args=VERIFIER_ARGS)


def test_a_60_mib_log_stays_trusted_across_a_verifier_restart_in_bounded_memory(
    big: tuple[Lab, int, float],
) -> None:
    lab, entries, write_seconds = big
    node = lab.nodes[NODE]
    size = node.writer.log_path.stat().st_size
    assert size >= LOG_MIB * 1024 * 1024
    assert node.agent is not None
    assert node.agent.pid is not None
    first = lab.verifier
    assert first is not None
    assert first.pid is not None
    agent_peak, first_peak = peak_mib(node.agent.pid), peak_mib(first.pid)
    restarted = datetime.now(UTC)
    with StateWatch(lab, NODE) as watch:
        _restart_verifier(lab)
        second = lab.verifier
        assert second is not None
        assert second.pid is not None
        wait_for(
            "a fresh verdict from the restarted verifier",
            lambda: (v := seen(lab, NODE).verified_at) is not None and v > restarted,
            timeout=30,
        )
        time.sleep(2 * 0.5)  # two more rounds
    states = {state for _, state in watch.states}
    resumed = [
        r for r in audit_records(lab)
        if r.get("kind") == "resumed" and r.get("node") == NODE
        and parse_time(r["time"], "time") >= restarted
    ]  # fmt: skip
    second_peak, agent_peak_after = peak_mib(second.pid), peak_mib(node.agent.pid)
    print(
        f"\nlog {size / 2**20:.1f} MiB, {entries} entries (written in {write_seconds:.1f} s); "
        f"peak RSS (VmHWM): agent {agent_peak:.1f} MiB after the from-zero read, "
        f"{agent_peak_after:.1f} MiB after the restart; verifier {first_peak:.1f} MiB (from zero), "
        f"restarted verifier {second_peak:.1f} MiB; states seen {sorted(states)}"
    )
    assert states == {"Trusted"}, watch.states
    assert resumed, "the restarted verifier read the log from zero instead of its checkpoint"
    assert resumed[0]["imaOffset"] >= LOG_MIB * 1024 * 1024, resumed[0]
    assert agent_peak_after < AGENT_PEAK_MIB, f"agent peak RSS {agent_peak_after:.1f} MiB"
    assert first_peak < VERIFIER_PEAK_MIB, f"verifier peak RSS {first_peak:.1f} MiB"
    assert second_peak < VERIFIER_PEAK_MIB, f"restarted verifier peak RSS {second_peak:.1f} MiB"


def test_a_log_doctored_before_the_checkpoint_while_the_verifier_was_down_is_untrusted(
    big: tuple[Lab, int, float],
) -> None:
    """Root drops an early entry (every later one moves up) while no verifier runs: the replay
    from the checkpoint's offset and running PCR 10 no longer reaches the quoted PCR 10."""
    lab, _, _ = big
    node = lab.nodes[NODE]
    wait_state(lab, NODE, "Trusted")
    lab.system.verifiers.pop().stop()
    raw = node.writer.log_path.read_bytes()
    second = 4 + 20 + 4 + len(b"ima-cgpath")  # the boot_aggregate entry's data length is here
    (data_len,) = struct.unpack_from("<I", raw, second)
    first_end = second + 4 + data_len
    (data_len2,) = struct.unpack_from("<I", raw, first_end + second)
    node.writer.log_path.write_bytes(raw[:first_end] + raw[first_end + second + 4 + data_len2 :])
    node.writer.measure("/usr/bin/kubelet", FILES["host"]["/usr/bin/kubelet"])
    lab.system.start_verifier(interval=0.5, max_age=MAX_AGE, extra_args=VERIFIER_ARGS)
    now = wait_state(lab, NODE, "Untrusted", timeout=60)
    assert any(f.startswith("ima.") for f in now.failure_ids), now

"""One attestation round, end to end through the pure core, on evidence from a real swtpm and a
log written like the kernel's: per-pod verdicts, log integrity, reboots, incremental rounds."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from attestation.agent.tpm import Tpm
from attestation.core.evidence import Evidence
from attestation.core.policy import RuntimePolicy, policy_from_document
from attestation.core.policy_gen import document
from attestation.core.types import HashAlg
from attestation.core.verdict import AttestationState, PodInfo, PolicySet, RoundResult, attest_round
from attestation.lab.ima_writer import ImaWriter, systemd_pod_cgroup
from tests.support.swtpm import SwTpm

UPF = PodInfo("1a2b3c4d-0000-4000-8000-00000000a001", "5g-core", "upf-0", "upf")
SMF = PodInfo("1a2b3c4d-0000-4000-8000-00000000a002", "5g-core", "smf-0", "smf")
PODS = {UPF.uid: UPF, SMF.uid: SMF}
FILES = {
    "upf": {"/usr/bin/upfd": b"upf 1.0", "/usr/lib/libgtp5g.so": b"gtp5g"},
    "smf": {"/usr/bin/smfd": b"smf 1.0"},
    "host": {"/usr/bin/containerd": b"containerd", "/usr/bin/kubelet": b"kubelet"},
}


def _policy(nf: str) -> RuntimePolicy:
    digests = {p: [f"sha256:{hashlib.sha256(c).hexdigest()}"] for p, c in FILES[nf].items()}
    return policy_from_document(document(nf, nf, digests, excludes=["^/tmp/"]), source=f"{nf}.yaml")


POLICIES = PolicySet({"upf": _policy("upf"), "smf": _policy("smf")}, _policy("host"))


@dataclass
class Node:
    swtpm: SwTpm
    tpm: Tpm
    writer: ImaWriter
    state: AttestationState
    results: list[RoundResult] = field(default_factory=list)

    def evidence(self, nonce: bytes) -> Evidence:
        quote = self.tpm.quote(nonce, [0, 1, 2, 3, 4, 5, 6, 7, 10])
        log = self.writer.log_path.read_bytes()[self.state.ima_offset :]
        return Evidence(quote.attest, quote.signature, quote.pcr_values, self.state.ima_offset, log)

    def attest(
        self, *, nonce: bytes | None = None, evidence: Evidence | None = None
    ) -> RoundResult:
        nonce = nonce or os.urandom(32)
        result = attest_round(
            "worker-1", self.state, evidence or self.evidence(nonce), nonce, POLICIES, PODS
        )
        self.state = result.state
        self.results.append(result)
        return result

    def run_pods(self) -> None:
        for path, content in FILES["upf"].items():
            self.writer.measure(path, content, cgroup_path=systemd_pod_cgroup(UPF.uid, "c0ffee"))
        for path, content in FILES["smf"].items():
            self.writer.measure(path, content, cgroup_path=systemd_pod_cgroup(SMF.uid, "beef"))


def _boot(swtpm: SwTpm, writer: ImaWriter) -> None:
    writer.boot_aggregate(swtpm.read_pcrs(list(range(8)), (HashAlg.SHA256,))[HashAlg.SHA256])
    for path, content in FILES["host"].items():
        writer.measure(path, content)


@pytest.fixture
def node(swtpm: SwTpm, tmp_path: Path) -> Node:
    tpm = Tpm(swtpm.tcti)
    ak = tpm.create_ak()
    writer = ImaWriter(tmp_path / "measurements", extend=swtpm.extend_pcr, template="ima-cgpath")
    _boot(swtpm, writer)
    return Node(swtpm, tpm, writer, AttestationState(ak_public=ak.public))


def _ids(failures: tuple[object, ...]) -> list[str]:
    return [f.id for f in failures]  # type: ignore[attr-defined]


def test_clean_node_and_pods_are_trusted(node: Node) -> None:
    node.run_pods()
    verdict = node.attest().verdict
    assert verdict.trusted, verdict.failures
    assert [p.trusted for p in verdict.pods] == [True, True]
    assert verdict.pod(UPF.uid).measurements == 2  # type: ignore[union-attr]


def test_unknown_binary_in_upf_pod_marks_only_that_pod(node: Node) -> None:
    node.run_pods()
    node.attest()
    node.writer.measure("/usr/bin/nc", b"netcat", cgroup_path=systemd_pod_cgroup(UPF.uid, "c0ffee"))
    verdict = node.attest().verdict
    assert verdict.trusted  # the node itself is fine
    upf, smf = verdict.pod(UPF.uid), verdict.pod(SMF.uid)
    assert upf is not None
    assert smf is not None
    assert not upf.trusted
    assert smf.trusted
    (failure,) = upf.failures
    assert failure.id == "ima.policy.unknown_file"
    assert failure.path == "/usr/bin/nc"
    assert UPF.uid in failure.message
    # sticky: a later clean round does not clear it
    assert not node.attest().verdict.pod(UPF.uid).trusted  # type: ignore[union-attr]


def test_modified_binary_in_smf_pod(node: Node) -> None:
    node.writer.measure(
        "/usr/bin/smfd", b"smf 1.0 + backdoor", cgroup_path=systemd_pod_cgroup(SMF.uid, "beef")
    )
    verdict = node.attest().verdict
    smf = verdict.pod(SMF.uid)
    assert smf is not None
    assert _ids(smf.failures) == ["ima.policy.digest_mismatch"]
    assert verdict.pod(UPF.uid).trusted  # type: ignore[union-attr]


def test_excluded_path_is_not_a_failure(node: Node) -> None:
    node.writer.measure("/tmp/scratch", b"x", cgroup_path=systemd_pod_cgroup(UPF.uid, "c0ffee"))
    assert node.attest().verdict.pod(UPF.uid).trusted  # type: ignore[union-attr]


def test_unknown_host_binary_makes_the_node_untrusted(node: Node) -> None:
    node.writer.measure("/usr/bin/rootkit", b"evil")
    verdict = node.attest().verdict
    assert not verdict.trusted
    assert _ids(verdict.failures) == ["ima.policy.unknown_file"]


def test_rounds_are_incremental(node: Node) -> None:
    node.attest()
    first = node.state.replay.next_index
    node.run_pods()
    result = node.attest()
    assert result.state.replay.next_index == first + 3
    assert result.state.ima_offset == node.writer.log_path.stat().st_size


def test_log_ahead_of_quote_is_normal(node: Node) -> None:
    nonce = os.urandom(32)
    evidence = node.evidence(nonce)
    # The kernel appends before it extends: the agent's log read caught two more entries than
    # the quote covers. Write them to the log only (no extend yet) and hand them over.
    writer_no_tpm = ImaWriter(node.writer.log_path.with_suffix(".extra"), template="ima-cgpath")
    writer_no_tpm.measure("/usr/bin/kubelet", b"kubelet")
    ahead = Evidence(
        evidence.quote,
        evidence.signature,
        evidence.pcr_values,
        evidence.ima_offset,
        evidence.ima_log + writer_no_tpm.log_path.read_bytes(),
    )
    result = node.attest(nonce=nonce, evidence=ahead)
    assert result.verdict.trusted, result.verdict.failures
    assert result.state.replay.next_index == 3  # boot_aggregate + 2 host files, not the extra


@pytest.mark.parametrize("tamper", ["truncate", "reorder", "rewrite", "drop_middle"])
def test_tampered_log_no_longer_reaches_the_quoted_pcr(node: Node, tamper: str) -> None:
    node.run_pods()
    nonce = os.urandom(32)
    evidence = node.evidence(nonce)
    entries = _split(evidence.ima_log)
    if tamper == "truncate":
        entries = entries[:-1]
    elif tamper == "reorder":
        entries[1], entries[2] = entries[2], entries[1]
    elif tamper == "rewrite":
        entries[3] = entries[3].replace(b"/usr/bin/upfd", b"/usr/bin/upfX")
    else:
        del entries[2]
    forged = Evidence(evidence.quote, evidence.signature, evidence.pcr_values, 0, b"".join(entries))
    verdict = node.attest(nonce=nonce, evidence=forged).verdict
    assert not verdict.trusted
    assert _ids(verdict.failures) == ["ima.pcr_mismatch"]
    # and it stays broken: the chain cannot be re-joined without a reboot
    assert not node.attest().verdict.trusted


def test_wrong_nonce_fails_the_round_only(node: Node) -> None:
    evidence = node.evidence(os.urandom(32))
    verdict = node.attest(nonce=os.urandom(32), evidence=evidence).verdict
    assert _ids(verdict.failures) == ["quote.nonce_mismatch"]
    assert node.attest().verdict.trusted


def test_reboot_restarts_the_log_from_offset_zero(node: Node) -> None:
    node.run_pods()
    node.attest()
    assert node.state.ima_offset > 0
    node.swtpm.restart()
    node.writer.log_path.write_bytes(b"")  # a new boot, a new log
    node.writer = ImaWriter(
        node.writer.log_path, extend=node.swtpm.extend_pcr, template="ima-cgpath"
    )
    _boot(node.swtpm, node.writer)
    result = node.attest()
    assert result.rebooted
    assert result.state.ima_offset == 0
    again = node.attest()
    assert again.verdict.trusted, again.verdict.failures
    assert again.state.replay.next_index == 3


def _split(log: bytes) -> list[bytes]:
    """Cut a binary ima-cgpath/ima-ng log (SHA-1 column) into its entries."""
    out, pos = [], 0
    while pos < len(log):
        start = pos
        pos += 4 + 20
        name_len = int.from_bytes(log[pos : pos + 4], "little")
        pos += 4 + name_len
        data_len = int.from_bytes(log[pos : pos + 4], "little")
        pos += 4 + data_len
        out.append(log[start:pos])
    return out

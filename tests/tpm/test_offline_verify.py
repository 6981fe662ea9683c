"""`trustgate verify ima|evidence` on a log and a bundle captured from a real swtpm: the JSON
verdict per node and per pod, and the exit codes 0 (trusted), 1 (not), 2 (unusable input)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization

from attestation.agent.tpm import Tpm
from attestation.cli.main import main
from attestation.core.evidence import Evidence, encode_evidence
from attestation.core.tpm_types import parse_public
from attestation.core.types import HashAlg
from attestation.lab.ima_writer import ImaWriter, systemd_pod_cgroup
from tests.support.swtpm import SwTpm

UPF = "5a3f0c2e-0000-4000-8000-0000000000a1"
SMF = "5a3f0c2e-0000-4000-8000-0000000000a2"
FILES = {
    "host": {"/usr/bin/kubelet": b"kubelet"},
    "upf": {"/usr/bin/upfd": b"upf"},
    "smf": {"/usr/bin/smfd": b"smf"},
}


@dataclass
class Capture:
    dir: Path
    writer: ImaWriter
    tpm: Tpm
    ak_public: bytes

    def bundle(self) -> Path:
        nonce = os.urandom(32)
        q = self.tpm.quote(nonce, [0, 1, 2, 3, 4, 5, 6, 7, 10])
        log = self.writer.log_path.read_bytes()
        evidence = encode_evidence(Evidence(q.attest, q.signature, q.pcr_values, 0, log))
        path = self.dir / "bundle.json"
        path.write_text(json.dumps({
            "apiVersion": "trustgate.io/v1alpha1", "kind": "EvidenceBundle", "node": "worker-1",
            "nonce": nonce.hex(), "akPublic": base64.b64encode(self.ak_public).decode(),
            "evidence": evidence,
        }))  # fmt: skip
        return path

    def pinned(self) -> list[str]:
        """A fresh bundle and ``--ak`` pinning the AK this node enrolled with."""
        pem = self.dir / "ak.pem"
        pem.write_bytes(parse_public(self.ak_public).public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ))  # fmt: skip
        return ["--bundle", str(self.bundle()), "--ak", str(pem)]

    def policy_args(self) -> list[str]:
        args = []
        for nf, files in FILES.items():
            doc = {
                "apiVersion": "trustgate.io/v1alpha1",
                "kind": "RuntimePolicy",
                "metadata": {"name": nf},
                "spec": {
                    "networkFunction": nf,
                    "digests": {
                        p: [f"sha256:{hashlib.sha256(c).hexdigest()}"] for p, c in files.items()
                    },
                },
            }
            path = self.dir / f"{nf}.yaml"
            path.write_text(yaml.safe_dump(doc))
            args += ["--policy", str(path)]
        return [*args, "--pod", f"{UPF}=upf", "--pod", f"{SMF}=smf"]


@pytest.fixture
def capture(swtpm: SwTpm, tmp_path: Path) -> Capture:
    tpm = Tpm(swtpm.tcti)
    ak = tpm.create_ak()
    writer = ImaWriter(tmp_path / "log", extend=swtpm.extend_pcr, template="ima-cgpath")
    writer.boot_aggregate(swtpm.read_pcrs(list(range(8)), (HashAlg.SHA256,))[HashAlg.SHA256])
    writer.measure("/usr/bin/kubelet", b"kubelet")
    writer.measure("/usr/bin/upfd", b"upf", cgroup_path=systemd_pod_cgroup(UPF, "u1"))
    writer.measure("/usr/bin/smfd", b"smf", cgroup_path=systemd_pod_cgroup(SMF, "s1"))
    return Capture(tmp_path, writer, tpm, ak.public)


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, Any]:
    code = main(argv)
    out = capsys.readouterr().out
    return code, json.loads(out) if out.strip() else None


def test_clean_bundle_is_trusted(capture: Capture, capsys: pytest.CaptureFixture[str]) -> None:
    code, result = _run(["verify", "evidence", *capture.pinned(), *capture.policy_args()],
                        capsys)  # fmt: skip
    assert code == 0, result
    assert result["trusted"] is True
    assert set(result["pods"]) == {UPF, SMF}


def test_unknown_file_in_smf_marks_only_that_pod(
    capture: Capture, capsys: pytest.CaptureFixture[str]
) -> None:
    capture.writer.measure("/usr/bin/nc", b"nc", cgroup_path=systemd_pod_cgroup(SMF, "s1"))
    code, result = _run(["verify", "evidence", *capture.pinned(), *capture.policy_args()],
                        capsys)  # fmt: skip
    assert code == 1
    assert result["failures"] == []
    assert result["pods"][UPF]["trusted"] is True
    (failure,) = result["pods"][SMF]["failures"]
    assert failure["id"] == "ima.policy.unknown_file"
    assert failure["path"] == "/usr/bin/nc"


def test_a_bundle_without_a_pinned_ak_is_not_trusted(
    capture: Capture, capsys: pytest.CaptureFixture[str]
) -> None:
    """Anyone can start a TPM (swtpm is one command), quote a clean log with it and put that AK
    in a bundle: the bundle's own AK proves the quote is consistent, not which node made it."""
    code, result = _run(["verify", "evidence", "--bundle", str(capture.bundle()),
                         *capture.policy_args()], capsys)  # fmt: skip
    assert code == 1, result
    assert result["trusted"] is False
    assert [f["id"] for f in result["failures"]] == ["quote.ak_not_pinned"]
    assert "--ak" in result["failures"][0]["message"]


def test_pinned_ak_must_match(capture: Capture, swtpm: SwTpm, capsys: pytest.CaptureFixture[str],
                              tmp_path: Path) -> None:  # fmt: skip
    other = parse_public(Tpm(swtpm.tcti).create_ak().public).public_key()
    pem = tmp_path / "other-ak.pem"
    pem.write_bytes(
        other.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    code, result = _run(["verify", "evidence", "--bundle", str(capture.bundle()), "--ak",
                         str(pem), *capture.policy_args()], capsys)  # fmt: skip
    assert code == 1
    assert [f["id"] for f in result["failures"]] == ["quote.ak_mismatch"]


@pytest.mark.parametrize("fmt", ["binary", "ascii"])
def test_log_against_pcr10(capture: Capture, fmt: str, capsys: pytest.CaptureFixture[str]) -> None:
    log = capture.dir / f"log.{fmt}"
    log.write_bytes(capture.writer.binary() if fmt == "binary" else capture.writer.ascii())
    pcr10 = capture.writer.pcr10[HashAlg.SHA256].hex()
    base = ["verify", "ima", "--log", str(log), "--format", fmt, *capture.policy_args()]
    code, result = _run([*base, "--pcr10", pcr10], capsys)
    assert code == 0, result
    code, result = _run([*base, "--pcr10", "11" * 32], capsys)
    assert code == 1
    assert [f["id"] for f in result["failures"]] == ["ima.pcr_mismatch"]
    # PCR 10 at reset (all zeros) is reached before the first entry: nothing is covered
    code, result = _run([*base, "--pcr10", "00" * 32], capsys)
    assert code == 1
    assert [f["id"] for f in result["failures"]] == ["ima.not_covered"]
    assert (result["covered"], result["uncovered"]) == (0, 4)


@pytest.mark.parametrize("fmt", ["binary", "ascii"])
def test_a_log_ahead_of_pcr10_is_trusted_with_its_tail_uncovered(
    capture: Capture, fmt: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The kernel appends before it extends: PCR 10 read a moment before the log lags it. The
    tail is proven by nothing yet, so it is reported, not judged (its nc is not a failure)."""
    pcr10 = capture.writer.pcr10[HashAlg.SHA256].hex()
    capture.writer.measure("/usr/bin/nc", b"nc", cgroup_path=systemd_pod_cgroup(SMF, "s1"))
    capture.writer.measure("/usr/bin/kubelet", b"kubelet")
    log = capture.dir / f"log.{fmt}"
    log.write_bytes(capture.writer.binary() if fmt == "binary" else capture.writer.ascii())
    code, result = _run(["verify", "ima", "--log", str(log), "--format", fmt, "--pcr10", pcr10,
                         *capture.policy_args()], capsys)  # fmt: skip
    assert code == 0, result
    assert result["trusted"] is True
    assert (result["covered"], result["uncovered"]) == (4, 2)
    assert result["failures"] == []
    assert result["pods"][SMF] == {"trusted": True, "failures": []}


def test_a_bundle_whose_log_ran_ahead_of_the_quote_is_trusted(
    capture: Capture, capsys: pytest.CaptureFixture[str]
) -> None:
    capture.writer.extend = None  # the kernel has logged it, not yet extended PCR 10
    capture.writer.measure("/usr/bin/kubelet", b"kubelet")
    code, result = _run(["verify", "evidence", *capture.pinned(), *capture.policy_args()],
                        capsys)  # fmt: skip
    assert code == 0, result
    assert (result["covered"], result["uncovered"]) == (4, 1)
    assert result["failures"] == []


@pytest.mark.parametrize("fmt", ["binary", "ascii", "bundle"])
def test_a_template_hash_that_is_not_the_data_hash_fails(
    capture: Capture, fmt: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Root rewrote the list: the entry's data is what PCR 10 was extended with, but its
    template-hash column names other data. The verifier fails it the same way."""
    lie = hashlib.sha1(b"some other template data").digest()  # noqa: S324 - the list's column
    capture.writer.measure("/usr/bin/kubelet", b"kubelet", forged_column=lie)
    if fmt == "bundle":
        argv = ["verify", "evidence", *capture.pinned()]
    else:
        log = capture.dir / f"log.{fmt}"
        log.write_bytes(capture.writer.binary() if fmt == "binary" else capture.writer.ascii())
        pcr10 = capture.writer.pcr10[HashAlg.SHA256].hex()
        argv = ["verify", "ima", "--log", str(log), "--format", fmt, "--pcr10", pcr10]
    code, result = _run([*argv, *capture.policy_args()], capsys)
    assert code == 1
    assert [f["id"] for f in result["failures"]] == ["ima.template_hash_mismatch"]
    assert "entry 4 (/usr/bin/kubelet)" in result["failures"][0]["message"]


def test_a_non_utf8_name_is_judged_and_shown_escaped(
    capture: Capture, capsys: pytest.CaptureFixture[str]
) -> None:
    capture.writer.measure(b"/tmp/\xff", b"true", cgroup_path=systemd_pod_cgroup(SMF, "s1"))
    code, result = _run(["verify", "evidence", *capture.pinned(), *capture.policy_args()],
                        capsys)  # fmt: skip
    assert code == 1
    assert result["failures"] == []
    assert result["pods"][UPF]["trusted"] is True
    (failure,) = result["pods"][SMF]["failures"]
    assert (failure["id"], failure["path"]) == ("ima.policy.unknown_file", "/tmp/\\xff")


@pytest.mark.parametrize(
    ("content", "needle"),
    [(b"not json", "Expecting value"), (b"{}", "missing field 'nonce'"),
     (b'{"nonce": "zz", "akPublic": "", "evidence": {}}', "non-hexadecimal")],
)  # fmt: skip
def test_unusable_bundle_is_exit_2_with_one_line(
    capture: Capture, content: bytes, needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = capture.dir / "bad.json"
    bad.write_bytes(content)
    assert main(["verify", "evidence", "--bundle", str(bad), *capture.policy_args()]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert needle in err[0]

"""The operator's offline tools through the real `trustgate` entry point: policy generation,
key generation, audit verification — including what they say about bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from attestation.cli.main import main
from attestation.core.policy import load_policy
from attestation.core.signing import load_private_key_pem, load_public_key_pem
from attestation.lab.ima_writer import ImaWriter, systemd_pod_cgroup
from attestation.verifier.auditlog import AuditLog

UID = "0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0"


def test_policy_from_an_image_tree(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "root/usr/bin").mkdir(parents=True)
    (tmp_path / "root/usr/bin/upfd").write_bytes(b"upf")
    out = tmp_path / "upf.yaml"
    assert main(["policy", "generate", "--from-dir", str(tmp_path / "root"), "--nf", "upf",
                 "-o", str(out)]) == 0  # fmt: skip
    policy = load_policy(out.read_bytes(), source="upf.yaml")
    assert policy.network_function == "upf"
    assert set(policy.digests) == {"/usr/bin/upfd"}
    assert "hashed 1 files" in capsys.readouterr().err


def test_policy_from_a_known_good_log_splits_pods_and_host(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "binary_runtime_measurements"
    writer = ImaWriter(log, template="ima-cgpath")
    writer.measure("/usr/bin/kubelet", b"kubelet")
    writer.measure("/usr/bin/upfd", b"upf", cgroup_path=systemd_pod_cgroup(UID, "c1"))
    assert main(["policy", "generate", "--from-log", str(log), "--nf", "upf", "--pod", UID]) == 0
    pod_doc = yaml.safe_load(capsys.readouterr().out)
    assert list(pod_doc["spec"]["digests"]) == ["/usr/bin/upfd"]
    assert main(["policy", "generate", "--from-log", str(log), "--nf", "host"]) == 0
    host_doc = yaml.safe_load(capsys.readouterr().out)
    assert list(host_doc["spec"]["digests"]) == ["/usr/bin/kubelet"]


def test_policy_from_a_garbage_log_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "log"
    bad.write_bytes(b"\x0a\x00\x00\x00" + b"\xff" * 40)
    assert main(["policy", "generate", "--from-log", str(bad), "--nf", "upf"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "IMA log entry 0" in err[0]


def test_policy_generate_takes_excludes_and_warns_about_writable_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "root/usr/bin").mkdir(parents=True)
    (tmp_path / "root/usr/bin/upfd").write_bytes(b"upf")
    args = ["policy", "generate", "--from-dir", str(tmp_path / "root"), "--nf", "upf"]
    assert main([*args, "--exclude", "^/usr/share/doc/", "--exclude", "^/tmp/"]) == 0
    out = capsys.readouterr()
    assert yaml.safe_load(out.out)["spec"]["excludes"] == ["^/usr/share/doc/", "^/tmp/"]
    (warning,) = [line for line in out.err.splitlines() if "warning" in line]
    assert "exclude '^/tmp/' covers /tmp" in warning


def _policy_file(tmp_path: Path, name: str, excludes: list[str]) -> Path:
    doc = {
        "apiVersion": "trustgate.io/v1alpha1", "kind": "RuntimePolicy", "metadata": {"name": name},
        "spec": {"networkFunction": name, "digests": {"/usr/bin/x": ["sha256:" + "ab" * 32]},
                 "excludes": excludes},
    }  # fmt: skip
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_policy_lint_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """0: every file loads without a warning; 1: a warning; 2: a file does not load."""
    clean = _policy_file(tmp_path, "amf", ["^/usr/share/doc/"])
    writable = _policy_file(tmp_path, "upf", ["^/usr/share/doc/", "^/dev/shm/"])
    broken = tmp_path / "smf.yaml"
    broken.write_text("spec: [")
    assert main(["policy", "lint", str(clean)]) == 0
    assert capsys.readouterr().out == f"{clean}: ok (amf, 1 files)\n"
    assert main(["policy", "lint", str(clean), str(writable)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith(f"{writable}: warning: policy.exclude_writable: policy upf: ")
    assert "'^/dev/shm/' covers /dev/shm" in lines[1]
    assert main(["policy", "lint", str(writable), str(broken), str(tmp_path / "none")]) == 2
    out = capsys.readouterr().out
    assert f"{broken}: error: policy {broken}: not YAML or JSON" in out
    assert f"{tmp_path / 'none'}: error: " in out
    shipped = sorted(Path(__file__).parents[2].glob("manifests/policies/*.yaml"))
    assert main(["policy", "lint", *map(str, shipped)]) == 0


def test_keygen_makes_a_usable_pair_and_refuses_to_overwrite(tmp_path: Path) -> None:
    key, pub = tmp_path / "key.pem", tmp_path / "pub.pem"
    assert main(["keygen", "--key", str(key), "--public", str(pub)]) == 0
    assert key.stat().st_mode & 0o777 == 0o600
    private = load_private_key_pem(key.read_bytes())
    assert load_public_key_pem(pub.read_bytes()) == private.public_key()
    assert main(["keygen", "--key", str(key), "--public", str(pub)]) == 2


def test_audit_verify_reports_the_first_broken_record(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    for n in range(3):
        log.append({"kind": "verdict", "node": f"n{n}"})
    log.close()
    assert main(["audit", "verify", str(path)]) == 0
    assert json.loads(capsys.readouterr().out)["records"] == 4  # audit.opened and 3
    lines = path.read_bytes().splitlines()
    path.write_bytes(b"\n".join([lines[0], lines[2]]) + b"\n")
    assert main(["audit", "verify", str(path)]) == 1
    assert json.loads(capsys.readouterr().out)["brokenAt"] == 2
    assert main(["audit", "verify", str(tmp_path / "missing")]) == 2


def test_agent_without_the_tpm_stack_says_what_to_install(tmp_path: Path) -> None:
    """The controller image (and ``pip install trustgate`` without ``[agent]``) has no
    tpm2-pytss: ``trustgate agent`` says so in one line, exit 2, instead of a traceback."""
    code = (
        "import sys; sys.modules['tpm2_pytss'] = None\n"
        "from attestation.cli.main import main\n"
        "sys.exit(main(['agent', '--node', 'n1']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, check=False
    )
    assert done.returncode == 2, done.stderr
    assert "install trustgate[agent]" in done.stderr
    assert "Traceback" not in done.stderr

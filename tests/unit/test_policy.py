"""Runtime policies: loading both formats, schema errors that name the field, judging entries
(including evmctl-signed files), and lint (excludes covering writable places); the shipped
runtime policies and node IMA policy."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from attestation.core.ima import parse_binary
from attestation.core.policy import (
    PolicyError,
    RuntimePolicy,
    evaluate,
    evaluate_log,
    lint_policy,
    load_policy,
    policy_from_document,
)
from attestation.core.policy.lint import WRITABLE_PLACES, exclude_covers
from attestation.core.types import ImaEntry, PodRef
from attestation.lab.ima_writer import Digest, ImaWriter, systemd_pod_cgroup
from attestation.verifier.metrics import VerifierMetrics
from attestation.verifier.policies import load_policy_dir, publish_policy_warnings

VECTORS = Path(__file__).parent / "vectors"
ROOT = Path(__file__).parents[2]
UPF = hashlib.sha256(b"upf v1").hexdigest()
UID = "4f2d1c3b-5a6e-47f8-9b0c-1d2e3f405162"
POD_CG = systemd_pod_cgroup(UID, "cd" * 32)


def _doc(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "apiVersion": "trustgate.io/v1alpha1",
        "kind": "RuntimePolicy",
        "metadata": {"name": "upf"},
        "spec": {
            "networkFunction": "upf",
            "digests": {"/usr/bin/upf": [f"sha256:{UPF}"], "/usr/lib/libc.so.6": [f"sha256:{UPF}"]},
            "excludes": ["^/var/log/", "^/tmp/.*"],
        },
    }
    base["spec"].update(spec)
    return base


def _entries(
    tmp_path: Path, *items: tuple[str, bytes | Digest, str], signature: bytes = b""
) -> list[ImaEntry]:
    w = ImaWriter(tmp_path / "p.bin", template="ima-cgpath")
    for path, content, cg in items:
        w.measure(path, content, cgroup_path=cg)
    return list(parse_binary(w.binary()))


def test_our_format_loads_from_yaml_and_json() -> None:
    doc = _doc()
    a = load_policy(yaml.safe_dump(doc), source="upf.yaml")
    b = load_policy(json.dumps(doc).encode(), source="upf.json")
    assert a == b
    assert a.name == "upf"
    assert a.network_function == "upf"
    assert a.digests["/usr/bin/upf"] == frozenset({bytes.fromhex(UPF)})
    assert a.by_raw_path[b"/usr/bin/upf"] == frozenset({bytes.fromhex(UPF)})
    with pytest.raises(TypeError):
        a.digests["/x"] = frozenset()  # type: ignore[index]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(apiVersion="v1"), "apiVersion: must be 'trustgate.io/v1alpha1'"),
        (lambda d: d.update(kind="Pod"), "kind: must be 'RuntimePolicy'"),
        (lambda d: d["metadata"].pop("name"), "metadata.name: must be a non-empty string"),
        (lambda d: d["spec"].pop("networkFunction"), "spec.networkFunction: must be"),
        (lambda d: d["spec"].update(exclude=[]), "spec: unknown fields ['exclude']"),
        (lambda d: d["spec"]["digests"].update({"/usr/bin/upf": ["xyz"]}),
         'spec.digests["/usr/bin/upf"][0]: "xyz" is not "algorithm:hex"'),
        (lambda d: d["spec"]["digests"].update({"/usr/bin/upf": ["sha256:xyz"]}),
         'spec.digests["/usr/bin/upf"][0]: "sha256:xyz" is not a hex digest'),
        (lambda d: d["spec"]["digests"].update({"/usr/bin/upf": ["sha256:abcd"]}),
         "sha256 digests are not 2 bytes"),
        (lambda d: d["spec"]["digests"].update({"/usr/bin/upf": []}), "at least one digest"),
        (lambda d: d["spec"]["digests"].update({"/usr/bin/upf": UPF}), "must be a list"),
        (lambda d: d["spec"].update(excludes=["("]), "spec.excludes[0]: '(' is not a regular"),
        (lambda d: d["spec"].update(keyrings={"vendor": ["not a key"]}),
         'spec.keyrings["vendor"][0]: not a PEM'),
        (lambda d: d["spec"].update(bootAggregate=["md5:00"]), "spec.bootAggregate[0]"),
    ],
)  # fmt: skip
def test_schema_errors_name_the_field(mutate: Any, message: str) -> None:
    doc = copy.deepcopy(_doc())
    mutate(doc)
    with pytest.raises(PolicyError, match=r"^policy upf\.yaml: ") as err:
        policy_from_document(doc, source="upf.yaml")
    assert message in str(err.value)


@pytest.mark.parametrize("text", ["{", "[]", "just text", '{"meta": {}}'])
def test_not_a_policy(text: str) -> None:
    with pytest.raises(PolicyError, match="policy p: "):
        load_policy(text, source="p")


def test_keylime_policy_made_by_keylime_policy_tool_loads() -> None:
    """keylime_runtime_policy.json: `keylime-policy create runtime -m ima_evm.ascii
    --add-ima-signature-verification-key ima_rsa.crt (and ima_ec.crt) -e excludes`."""
    policy = load_policy((VECTORS / "keylime_runtime_policy.json").read_text(), source="kl.json")
    assert policy.network_function == "keylime"
    assert "/usr/bin/upf" in policy.digests
    assert "boot_aggregate" not in policy.digests
    assert len(policy.boot_aggregates) == 1
    assert policy.excludes == ("^/tmp/.*", "^/var/log/.*")
    assert {f"{k:08x}" for k in policy.keys} == {"2c6fd5b1", "d3f5e952"}


@pytest.mark.parametrize(
    ("value", "why"),
    [("sha256:" + UPF, "is not a hex digest"), ("abcd", "is not a 20, 32, 48 or 64-byte")],
)
def test_keylime_policy_errors_name_the_field(value: str, why: str) -> None:
    doc = json.loads((VECTORS / "keylime_runtime_policy.json").read_text())
    doc["digests"]["/usr/bin/upf"] = [value]
    with pytest.raises(PolicyError, match=r'kl\.json: digests\["/usr/bin/upf"\]\[0\]: ') as err:
        policy_from_document(doc, source="kl.json")
    assert why in str(err.value)


@pytest.mark.parametrize(
    ("path", "content", "cg", "failure", "pod"),
    [
        ("/usr/bin/upf", b"upf v1", POD_CG, None, UID),
        ("/usr/bin/upf", b"upf v2", POD_CG, "ima.policy.digest_mismatch", UID),
        ("/usr/bin/evil", b"x", POD_CG, "ima.policy.unknown_file", UID),
        ("/usr/bin/evil", b"x", "/system.slice/a.service", "ima.policy.unknown_file", None),
        ("/var/log/upf.log", b"anything", POD_CG, None, UID),
        ("/tmp/scratch", b"anything", POD_CG, None, UID),
        ("/usr/lib/libc.so.6", b"upf v1", "/", None, None),
    ],
)
def test_evaluate(
    tmp_path: Path, path: str, content: bytes, cg: str, failure: str | None, pod: str | None
) -> None:
    policy = policy_from_document(_doc(), source="upf.yaml")
    before = dict(policy.digests)
    (entry,) = _entries(tmp_path, (path, content, cg))
    owner = PodRef(pod, "cd" * 32) if pod else None
    result = evaluate(entry, policy, owner)
    assert (result.id if result else None) == failure
    if result is not None:
        assert path in result.message
        assert result.pod_uid == pod
        assert (pod or "host") in result.message
        assert result.digest == f"sha256:{hashlib.sha256(content).hexdigest()}"
    assert policy.digests == before


def _signed_entries(tmp_path: Path) -> list[ImaEntry]:
    w = ImaWriter(tmp_path / "s.bin", template="ima-sig")
    upf_sig = (VECTORS / "ima_upf.sig").read_bytes()
    amf_sig = (VECTORS / "ima_amf.sig").read_bytes()
    w.measure("/usr/bin/upf", b"upf binary v1\n", signature=upf_sig)  # evmctl RSA signature
    w.measure("/usr/bin/amf", b"amf binary v1\n", signature=amf_sig)  # evmctl ECDSA signature
    w.measure("/usr/bin/upf", b"tampered\n", signature=upf_sig)
    w.measure("/usr/bin/upf", b"upf binary v1\n", signature=upf_sig[:-1] + b"\x00")
    w.measure("/usr/bin/other", b"other", signature=b"\x03\x02\x04\x00\x00\x00\x01\x00\x00")
    return list(parse_binary(w.binary()))


def test_ima_signatures_by_policy_keys(tmp_path: Path) -> None:
    keys = [(VECTORS / f"ima_{k}.crt").read_text() for k in ("rsa", "ec")]
    policy = policy_from_document(_doc(digests={}, keyrings={"vendor": keys}), source="upf.yaml")
    upf, amf, tampered, bad_sig, unknown_key = _signed_entries(tmp_path)
    assert evaluate(upf, policy) is None
    assert evaluate(amf, policy) is None
    for entry, why in ((tampered, "does not verify"), (bad_sig, "does not verify"),
                       (unknown_key, "no policy key has id 00000001")):  # fmt: skip
        failure = evaluate(entry, policy)
        assert failure is not None
        assert failure.id == "ima.policy.signature_invalid"
        assert why in failure.message


def test_keylime_verification_keys_verify_evmctl_signatures(tmp_path: Path) -> None:
    policy = load_policy((VECTORS / "keylime_runtime_policy.json").read_text(), source="kl")
    upf, amf, tampered, *_ = _signed_entries(tmp_path)
    assert evaluate(upf, policy) is None
    assert evaluate(amf, policy) is None
    failure = evaluate(tampered, policy)
    assert failure is not None
    assert failure.id == "ima.policy.signature_invalid"


def test_without_keys_a_signature_does_not_help(tmp_path: Path) -> None:
    policy = policy_from_document(_doc(digests={}), source="upf.yaml")
    failure = evaluate(_signed_entries(tmp_path)[0], policy)
    assert failure is not None
    assert failure.id == "ima.policy.unknown_file"


def _policy_for(upf: RuntimePolicy, host: RuntimePolicy) -> Any:
    def policy_for(pod: PodRef | None) -> RuntimePolicy | None:
        if pod is None:
            return host
        return upf if pod.uid == UID else None  # other pods: not network functions

    return policy_for


def test_evaluate_log_attributes_and_judges(tmp_path: Path) -> None:
    upf = policy_from_document(_doc(), source="upf.yaml")
    host = policy_from_document(
        _doc(networkFunction="host", digests={"/usr/sbin/sshd": ["sha256:" + "11" * 32]}),
        source="host.yaml",
    )
    other_cg = systemd_pod_cgroup("11111111-2222-3333-4444-555555555555", "ef" * 32)
    w = ImaWriter(tmp_path / "l.bin", template="ima-cgpath")
    w.boot_aggregate({i: bytes(32) for i in range(8)})
    w.measure("/usr/bin/upf", b"upf v1", cgroup_path=POD_CG)
    w.measure("/usr/bin/upf", b"upf v2", cgroup_path=POD_CG)
    w.measure("/usr/sbin/sshd", Digest(b"\x11" * 32), cgroup_path="/system.slice/ssh.service")
    w.measure("/usr/bin/miner", b"x", cgroup_path="/system.slice/ssh.service")
    w.measure("/usr/bin/anything", b"x", cgroup_path=other_cg)
    w.violation("/usr/bin/upf", cgroup_path=POD_CG)
    log = parse_binary(w.binary())
    judged = evaluate_log(log, _policy_for(upf, host))
    assert [(f.id, f.pod_uid, f.path) for f in judged.failures] == [
        ("ima.policy.digest_mismatch", UID, "/usr/bin/upf"),
        ("ima.policy.unknown_file", None, "/usr/bin/miner"),
        ("ima.violation", UID, "/usr/bin/upf"),
    ]
    assert judged.failures[2].severity == "warning"
    assert dict(judged.measurements) == {
        None: 3,
        UID: 3,
        "11111111-2222-3333-4444-555555555555": 1,
    }
    partial = evaluate_log(log, _policy_for(upf, host), count=2)
    assert partial.failures == ()


# -- lint: an exclude that covers a place a pod or root can write ---------------------------------


@pytest.mark.parametrize(
    ("exclude", "covers"),
    [
        ("^/tmp/", ["/tmp"]),
        ("^/tmp/.*", ["/tmp"]),
        ("^/dev/shm/", ["/dev/shm"]),
        ("^/dev/", ["/dev/shm", "/dev/mqueue", "/dev"]),
        ("^/run/", ["/run", "/run/lock", "/run/user/1000"]),
        ("^/var/", ["/var/tmp", "/var/run", "/var/lock", "/var/lib/kubelet/pods"]),
        ("^/(tmp|var/tmp)/", ["/tmp", "/var/tmp"]),
        ("/home/", ["/home/user"]),
        (r".*\.sh$", "all"),
        (".*", "all"),
        ("^/memfd:", ["/memfd:x (deleted)"]),
        # read-only image paths and pseudo file systems nobody can put a file in
        ("^/usr/share/doc/", []),
        ("^/proc/", []),
        ("^/sys/", []),
        ("^/etc/upf/plugins/", []),
    ],
)  # fmt: skip
def test_lint_names_excludes_that_cover_writable_places(
    exclude: str, covers: list[str] | str
) -> None:
    assert list(exclude_covers(exclude)) == (list(WRITABLE_PLACES) if covers == "all" else covers)
    policy = policy_from_document(_doc(excludes=[exclude]), source="upf.yaml")
    warnings = lint_policy(policy)
    assert [(w.id, w.severity, w.path) for w in warnings] == (
        [("policy.exclude_writable", "warning", exclude)] if covers else []
    )
    if covers:
        assert warnings[0].message.startswith(f"policy upf: exclude {exclude!r} covers /")
        assert "Honoured as written" in warnings[0].message


def test_an_operators_exclude_is_honoured_as_written_even_when_lint_warns(tmp_path: Path) -> None:
    policy = policy_from_document(_doc(excludes=["^/tmp/"]), source="upf.yaml")
    assert lint_policy(policy)
    (entry,) = _entries(tmp_path, ("/tmp/x", b"anything", POD_CG))
    assert evaluate(entry, policy, PodRef(UID, "cd" * 32)) is None


def test_keylime_excludes_are_linted_too() -> None:
    doc = {"meta": {"version": 1}, "digests": {"/usr/bin/upf": [UPF]}, "excludes": ["/tmp/.*"]}
    policy = policy_from_document(doc, source="keylime.json")
    assert [w.id for w in lint_policy(policy)] == ["policy.exclude_writable"]


def test_shipped_policies_exclude_nothing_writable() -> None:
    shipped = sorted((ROOT / "manifests/policies").glob("*.yaml"))
    assert shipped
    for path in shipped:
        policy = load_policy(path.read_bytes(), source=str(path))
        assert lint_policy(policy) == (), path
        assert policy.excludes == (), path


# -- the node IMA policy shipped in manifests/node ----------------------------------------------

TMPFS, OVERLAYFS = 0x01021994, 0x794C7630


def _ima_rules() -> list[dict[str, str]]:
    rules = []
    for line in (ROOT / "manifests/node/ima-policy").read_text().splitlines():
        words = line.split("#", 1)[0].split()
        if words:
            rules.append({"action": words[0]} | dict(w.split("=", 1) for w in words[1:]))
    return rules


def test_node_ima_policy_measures_every_exec_and_executable_mmap_with_the_pod_template() -> None:
    rules = _ima_rules()
    measured = {(r.get("func"), r.get("mask")) for r in rules if r["action"] == "measure"}
    assert {("BPRM_CHECK", "MAY_EXEC"), ("MMAP_CHECK", "MAY_EXEC")} <= measured
    # every measure rule logs the cgroup path: attribution needs it
    assert all(r.get("template") == "ima-cgpath" for r in rules if r["action"] == "measure")
    # tmpfs (/tmp, /dev/shm, /run, memfd) and overlayfs (every container's root) are measured
    skipped = {int(r["fsmagic"], 16) for r in rules if r["action"] == "dont_measure"}
    assert not skipped & {TMPFS, OVERLAYFS}
    # a measure rule narrowed by file system or owner would leave the rest unmeasured
    assert not any(
        k in r for r in rules if r["action"] == "measure" for k in ("fsmagic", "fsuuid", "uid")
    )
    # what differs per pod is not measured: no file reads (root-read config files)
    assert not any(r.get("func") == "FILE_CHECK" for r in rules if r["action"] == "measure")
    assert {r["action"] for r in rules} <= {"measure", "dont_measure"}


def test_the_verifier_logs_and_publishes_lint_warnings_at_load(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "upf.yaml").write_text(yaml.safe_dump(_doc(excludes=["^/dev/shm/"])))
    host = _doc(networkFunction="host", excludes=[])
    host["metadata"]["name"] = "host"
    (tmp_path / "host.yaml").write_text(yaml.safe_dump(host))
    metrics = VerifierMetrics()
    policies = load_policy_dir(tmp_path)
    assert policies.by_network_function["upf"].excludes == ("^/dev/shm/",)  # honoured
    with caplog.at_level("WARNING", logger="trustgate.verifier.policies"):
        assert publish_policy_warnings(policies, metrics.policy_warnings) == 1
    assert (
        "policy.exclude_writable: policy upf: exclude '^/dev/shm/' covers /dev/shm" in caplog.text
    )
    sample = metrics.registry.get_sample_value
    assert sample("trustgate_policy_warnings", {"policy": "upf"}) == 1
    assert sample("trustgate_policy_warnings", {"policy": "host"}) == 0

"""Generated policies load through the same checks and allow exactly what they were made from."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from attestation.adapters.filetree import from_tree
from attestation.core.ima import parse_binary
from attestation.core.policy import evaluate, load_policy, policy_from_document
from attestation.core.policy_gen import DEFAULT_EXCLUDES, dump, from_log
from attestation.core.types import PodRef
from attestation.lab.ima_writer import ImaWriter, systemd_pod_cgroup

UID = "4f2d1c3b-5a6e-47f8-9b0c-1d2e3f405162"


def test_from_tree_hashes_regular_files_rooted_at_slash(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    (root / "usr/bin").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "usr/bin/upf").write_bytes(b"upf v1")
    (root / "etc/upf.yaml").write_bytes(b"cfg")
    os.symlink("/usr/bin/upf", root / "usr/bin/upf-link")
    seen: list[tuple[int, str]] = []
    doc = from_tree(
        root, name="upf", network_function="upf", progress=lambda n, p: seen.append((n, p))
    )
    assert doc["spec"]["digests"] == {
        "/etc/upf.yaml": ["sha256:" + hashlib.sha256(b"cfg").hexdigest()],
        "/usr/bin/upf": ["sha256:" + hashlib.sha256(b"upf v1").hexdigest()],
    }
    assert seen[-1][0] == 2
    policy = load_policy(dump(doc), source="generated.yaml")
    assert policy.network_function == "upf"


def test_from_log_splits_by_owner(tmp_path: Path) -> None:
    pod_cg = systemd_pod_cgroup(UID, "ab" * 32)
    w = ImaWriter(tmp_path / "log.bin", template="ima-cgpath")
    w.boot_aggregate({i: bytes(32) for i in range(8)})
    w.measure("/usr/bin/upf", b"upf v1", cgroup_path=pod_cg)
    w.measure("/usr/bin/upf", b"upf v1.1", cgroup_path=pod_cg)
    w.measure("/usr/sbin/sshd", b"sshd", cgroup_path="/system.slice/ssh.service")
    w.violation("/var/log/x", cgroup_path=pod_cg)
    entries = list(parse_binary(w.binary()))
    upf = from_log(entries, name="upf", network_function="upf", owner=lambda p: p is not None)
    host = from_log(entries, name="host", network_function="host", owner=lambda p: p is None)
    assert set(upf["spec"]["digests"]) == {"/usr/bin/upf"}
    assert len(upf["spec"]["digests"]["/usr/bin/upf"]) == 2
    assert set(host["spec"]["digests"]) == {"/usr/sbin/sshd"}
    policy = policy_from_document(upf, source="upf")
    pod = PodRef(UID, "ab" * 32)
    assert [evaluate(e, policy, pod) for e in entries[1:3]] == [None, None]


def test_generated_policies_exclude_nothing_unless_asked(tmp_path: Path) -> None:
    """/tmp, /run, /dev/shm are where an attacker puts what it runs: nothing is excluded by
    default; an operator's exclude goes in as written."""
    assert DEFAULT_EXCLUDES == ()
    root = tmp_path / "rootfs"
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/upf").write_bytes(b"upf v1")
    assert from_tree(root, name="upf", network_function="upf")["spec"]["excludes"] == []
    w = ImaWriter(tmp_path / "log.bin", template="ima-cgpath")
    w.measure("/tmp/x", b"x", cgroup_path=systemd_pod_cgroup(UID, "ab" * 32))
    entries = list(parse_binary(w.binary()))
    doc = from_log(entries, name="upf", network_function="upf", owner=lambda p: p is not None)
    assert doc["spec"]["excludes"] == []
    assert list(doc["spec"]["digests"]) == ["/tmp/x"]  # what ran, wherever it was
    asked = from_tree(root, name="upf", network_function="upf", excludes=["^/opt/cache/"])
    assert asked["spec"]["excludes"] == ["^/opt/cache/"]

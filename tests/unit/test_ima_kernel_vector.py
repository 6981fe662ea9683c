"""The measurement lists a kernel built from our ``ima-cgpath`` patch wrote (QEMU guest, node IMA
policy; captured by tests/unit/vectors/make_cgpath_kernel_vector.py): the bytes our parsers and
attribution must read exactly as the kernel means them."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from attestation.core.attribution import attribute
from attestation.core.ima import ImaLog, parse_ascii, parse_binary, render_ascii_line
from attestation.core.ima.entry import read_entry, read_field
from attestation.core.ima.names import name_bytes
from attestation.core.policy import load_policy
from attestation.core.replay import replay
from attestation.core.types import HashAlg

VECTORS = Path(__file__).parent / "vectors"
BINARY = (VECTORS / "ima_cgpath_kernel.bin").read_bytes()
ASCII = (VECTORS / "ima_cgpath_kernel.ascii").read_bytes()
META: dict[str, Any] = json.loads((VECTORS / "ima_cgpath_kernel.json").read_text())


@pytest.fixture(scope="module")
def log() -> ImaLog:
    return parse_binary(BINARY)


def _dep(data: bytes) -> bytes:
    return read_field(data, 0, "dep")[0]


def test_every_byte_is_read_and_both_lists_agree(log: ImaLog) -> None:
    assert log.next_offset == len(BINARY)
    assert {e.template_name for e in log} == {"ima-cgpath"}
    text = parse_ascii(ASCII)
    assert len(text) == len(log)
    assert [e.template_data for e in text] == [e.template_data for e in log]
    assert [e.template_hash for e in text] == [e.template_hash for e in log]
    assert [render_ascii_line(e) for e in log] == ASCII.splitlines()


def test_the_fast_path_reads_what_the_general_parser_reads(log: ImaLog) -> None:
    pos, rows = 0, []
    while pos < len(BINARY):
        row = read_entry(BINARY, pos, 20)
        assert row is not None
        rows.append(row)
        pos = row[-1]
    assert rows == [log.row(k) for k in range(len(log))]


def test_the_template_hash_covers_the_data_as_parsed(log: ImaLog) -> None:
    """The kernel hashes each field as u32 length + bytes (the NUL included), exactly the data
    the parser keeps: SHA-1 of it is the list's column for every entry that is no violation."""
    for e in log:
        if any(e.template_hash):
            assert hashlib.sha1(e.template_data, usedforsecurity=False).digest() == e.template_hash
    assert replay(HashAlg.SHA1, bytes(20), [e.template_data for e in log])


def test_boot_aggregate_has_no_ancestors_and_the_root_cgroup(log: ImaLog) -> None:
    boot = log[0]
    assert boot.path == "boot_aggregate"
    assert boot.cgroup_path == "/"
    assert _dep(boot.template_data) == b"\0"  # an empty string field: length 1, the NUL


def test_pods_are_attributed_from_the_kernel_cgroup_paths(log: ImaLog) -> None:
    by_path = {e.path: e for e in log}
    uid = META["uid"]
    for case in META["cases"]:
        entry = by_path[case["path"]]
        assert entry.cgroup_path == case["cgroup"]
        pod = attribute(case["cgroup"])
        if case["cgroup"].startswith("/kubepods"):
            assert pod is not None
            assert pod.uid == uid
            assert case["cgroup"].endswith((pod.container_id, f"{pod.container_id}.scope"))
        else:
            assert pod is None
        dep = _dep(entry.template_data)[:-1].split(b":")
        assert dep[0] == b"/bin/busybox"  # pid 1 of the guest's initramfs, oldest first
        assert all(p.startswith(b"/") for p in dep)


def test_names_are_bytes_and_spaces_are_underscores(log: ImaLog) -> None:
    """The kernel replaces spaces in every string field with '_' (so that the ASCII list stays
    space-separated) and logs other bytes as they are: no path in a real log holds a space."""
    paths = [name_bytes(e.path) for e in log]
    assert b"/host/tmp/with_space" in paths
    assert b"/host/tmp/with space" not in paths
    assert b"/host/tmp/caf\xe9" in paths
    names = [
        (name_bytes(e.path), name_bytes(e.cgroup_path or ""), _dep(e.template_data)) for e in log
    ]
    assert not any(b" " in part for name in names for part in name)


def test_a_policy_naming_a_file_with_a_space_matches_what_the_kernel_logged(log: ImaLog) -> None:
    """The policy says what the file is called; the kernel logs it with '_'. Looked up as logged,
    the entry is known (before: ima.policy.unknown_file for /host/tmp/with_space)."""
    (entry,) = [e for e in log if name_bytes(e.path) == b"/host/tmp/with_space"]
    digest = f"{entry.file_digest_alg}:{entry.file_digest.hex()}"
    policy = load_policy(json.dumps({
        "apiVersion": "trustgate.io/v1alpha1", "kind": "RuntimePolicy",
        "metadata": {"name": "host"},
        "spec": {"networkFunction": "host", "digests": {"/host/tmp/with space": [digest]}},
    }).encode(), source="test")  # fmt: skip
    assert entry.file_digest in policy.by_raw_path[b"/host/tmp/with_space"]

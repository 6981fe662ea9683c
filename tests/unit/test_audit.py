"""The audit chain: appends verify, edits/deletions/reorders are named, a torn tail recovers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from attestation.core.audit import verify_chain
from attestation.verifier.auditlog import AuditChainBroken, AuditLog


def _write(path: Path, n: int) -> None:
    log = AuditLog(path)
    for i in range(n):
        log.append({"kind": "verdict", "node": f"worker-{i}", "state": "Trusted"})
    log.close()


def test_appended_records_verify(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _write(path, 5)
    _write(path, 3)  # reopening continues the chain
    report = verify_chain(path.read_bytes())
    assert report.ok
    assert report.records == 8


@pytest.mark.parametrize(
    ("tamper", "broken_at"),
    [
        (lambda lines: lines[:2] + lines[3:], 3),  # a record deleted
        (lambda lines: [lines[0], lines[2], lines[1], *lines[3:]], 2),  # reordered
        (lambda lines: [*lines[:3], lines[3].replace(b"Trusted", b"Untrusted"), *lines[4:]], 5),
        (lambda lines: [b"{}", *lines[1:]], 1),
    ],
)
def test_tampering_names_the_first_broken_record(tmp_path: Path, tamper, broken_at) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "audit.jsonl"
    _write(path, 6)
    lines = path.read_bytes().split(b"\n")[:-1]
    path.write_bytes(b"\n".join(tamper(lines)) + b"\n")
    report = verify_chain(path.read_bytes())
    assert report.broken_at == broken_at
    with pytest.raises(AuditChainBroken, match=f"record {broken_at} breaks the chain"):
        AuditLog(path)


def test_torn_tail_is_kept_and_chain_continues(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _write(path, 3)
    with path.open("ab") as f:
        f.write(b'{"seq":3,"prev":"ab')  # the crash
    assert verify_chain(path.read_bytes()).torn_tail == 19
    log = AuditLog(path)
    assert log.recovered_torn_tail == 19
    log.append({"kind": "verdict", "node": "worker-9"})
    log.close()
    report = verify_chain(path.read_bytes())
    assert report.ok
    assert report.torn_tail == 0
    kinds = [json.loads(line)["kind"] for line in path.read_bytes().splitlines()]
    assert kinds == ["verdict"] * 3 + ["audit.torn_tail", "verdict"]

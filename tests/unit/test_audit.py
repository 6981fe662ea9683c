"""The audit file writer: appends verify, edits near the end refuse to open, a torn tail recovers,
start-up reads only the tail, files rotate chained, records are capped, one writer per file,
the published head is compared on open."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from attestation.core.audit import MAX_RECORD_BYTES, line_hash, record_prefix, verify_chain
from attestation.core.audittrail import verify_trail
from attestation.core.signing import generate_private_key, public_keys_by_id
from attestation.verifier.auditlog import AuditChainBroken, AuditLog, AuditLogBusy, AuditOptions
from attestation.verifier.audittail import TAIL_WINDOW, rotated_files

KEY = generate_private_key()
KEYS = public_keys_by_id([KEY.public_key()])
SIGNED = AuditOptions("verifier-0", KEY)


def _write(path: Path, n: int, options: AuditOptions = SIGNED, **kw: Any) -> AuditLog:
    log = AuditLog(path, options=options, **kw)
    for i in range(n):
        log.append({"kind": "verdict", "node": f"worker-{i}", "state": "Trusted"})
    log.close()
    return log


def _kinds(path: Path) -> list[str]:
    return [json.loads(line)["kind"] for line in path.read_bytes().splitlines()]


def _trail(path: Path) -> list[tuple[str, bytes]]:
    return [(str(p), p.read_bytes()) for p in [*rotated_files(path), path]]


def test_appended_records_verify_and_reopening_continues_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _write(path, 5)
    _write(path, 3)
    report = verify_chain(path.read_bytes())
    assert report.ok
    # opened, 5 verdicts, checkpoint; 3 verdicts, checkpoint
    assert _kinds(path) == ["audit.opened", *["verdict"] * 5, "audit.checkpoint"] + [
        "verdict"
    ] * 3 + ["audit.checkpoint"]
    trail = verify_trail(_trail(path), KEYS)
    assert trail.ok, trail.findings
    assert (trail.checkpoints, trail.uncovered) == (2, 0)


@pytest.mark.parametrize(
    ("tamper", "broken_at"),
    [
        (lambda lines: lines[:2] + lines[3:], 3),  # a record deleted
        (lambda lines: [lines[0], lines[2], lines[1], *lines[3:]], 2),  # reordered
        (lambda lines: [*lines[:3], lines[3].replace(b"Trusted", b"Untrusted"), *lines[4:]], 5),
    ],
)
def test_tampering_near_the_end_refuses_to_open(tmp_path: Path, tamper, broken_at) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "audit.jsonl"
    _write(path, 6)
    lines = path.read_bytes().split(b"\n")[:-1]
    path.write_bytes(b"\n".join(tamper(lines)) + b"\n")
    assert verify_chain(path.read_bytes()).broken_at == broken_at
    with pytest.raises(AuditChainBroken, match=f"record {broken_at - 1} breaks the chain"):
        AuditLog(path, options=SIGNED)


def test_torn_tail_is_kept_and_chain_continues(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _write(path, 3, AuditOptions())  # opened + 3 verdicts, no key: no checkpoint
    last = path.read_bytes().splitlines()[-1]
    assert json.loads(last)["seq"] == 3
    with path.open("ab") as f:
        f.write(record_prefix(4, line_hash(last)) + b',"time":"2026-')  # the crash
    assert verify_chain(path.read_bytes()).torn_tail == 96
    log = AuditLog(path)
    assert log.recovered_torn_tail == 96
    log.append({"kind": "verdict", "node": "worker-9"})
    log.close()
    assert verify_chain(path.read_bytes()).ok
    assert _kinds(path) == ["audit.opened", *["verdict"] * 3, "audit.torn_tail", "verdict"]
    assert verify_trail(_trail(path)).ok


def test_junk_kept_as_a_torn_tail_is_still_reported(tmp_path: Path) -> None:
    """Start-up keeps whatever followed the last newline; `audit verify` judges it."""
    path = tmp_path / "audit.jsonl"
    _write(path, 2)
    with path.open("ab") as f:
        f.write(b'{"seq":4,"prev":"' + b"f" * 64 + b'","kind":"verdict","state":"Unt')
    _write(path, 1)
    report = verify_trail(_trail(path), KEYS)
    assert [f.id for f in report.findings] == ["audit.torn_invalid"]


def test_start_up_reads_only_the_tail(tmp_path: Path) -> None:
    """A break far from the end is not start-up's business (``audit verify`` finds it); the
    writer still continues the chain correctly from the last record."""
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, options=SIGNED)
    for i in range(300):
        log.append({"kind": "verdict", "node": f"worker-{i}", "reason": "x" * 1000})
    log.close()
    data = path.read_bytes()
    assert len(data) > 4 * TAIL_WINDOW
    path.write_bytes(data.replace(b"worker-5,", b"worker-6,", 1).replace(b'"worker-5"', b'"w-5"'))
    _write(path, 1)  # opens: the edit is 300 KB before the end
    report = verify_trail(_trail(path), KEYS)
    assert [f.id for f in report.findings] == ["audit.chain_broken"]
    assert report.broken_at is not None
    assert report.broken_at < 10


def test_files_rotate_chained_each_ending_signed(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    options = AuditOptions("verifier-0", KEY, max_bytes=4096)
    _write(path, 60, options)
    rotated = rotated_files(path)
    assert len(rotated) >= 2
    assert all(p.stat().st_size <= 4096 for p in rotated)
    report = verify_trail(_trail(path), KEYS)
    assert report.ok, report.findings
    assert report.records == sum(len(p.read_bytes().splitlines()) for p in [*rotated, path])
    first = json.loads(path.read_bytes().splitlines()[0])
    assert first["kind"] == "audit.rotated"
    assert first["previousFile"] == rotated[-1].name
    # a rotated file gone from the middle breaks the chain
    rotated[1].unlink()
    assert [f.id for f in verify_trail(_trail(path), KEYS).findings] == ["audit.chain_broken"]


def test_a_crash_between_rename_and_the_new_file_continues_from_the_rotated_one(
    tmp_path: Path,
) -> None:
    path = tmp_path / "audit.jsonl"
    _write(path, 5)
    path.rename(path.with_name(path.name + ".000000000000"))
    _write(path, 2)
    assert _kinds(path)[0] == "audit.rotated"
    assert verify_trail(_trail(path), KEYS).ok


def test_records_are_capped(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, options=SIGNED)
    log.append(
        {"kind": "verdict", "reason": "r" * 100_000, "pods": {str(i): "x" for i in range(500)}}
    )
    log.append({"kind": "verdict", "failures": [{"path": "p" * 1000} for _ in range(60)]})
    log.close()
    lines = path.read_bytes().splitlines()
    assert all(len(line) < MAX_RECORD_BYTES for line in lines)
    first = json.loads(lines[1])
    assert first["reason"].endswith("…[98976 more characters]")
    assert first["pods"]["…"] == "[436 more entries]"
    second = json.loads(lines[2])
    assert second["kind"] == "verdict"
    assert second["truncated"]["bytes"] > MAX_RECORD_BYTES
    assert verify_trail(_trail(path), KEYS).ok


def test_one_writer_per_file(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    first = AuditLog(path, options=SIGNED)
    with pytest.raises(AuditLogBusy, match="in use by another process"):
        AuditLog(path, options=SIGNED)
    first.append({"kind": "verdict"})
    first.close()
    _write(path, 1)  # released on close
    assert verify_trail(_trail(path), KEYS).ok


def test_a_file_behind_its_published_head_says_so(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = _write(path, 5)
    head = log.last_checkpoint
    assert head is not None
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-3]))  # the tail dropped while the verifier was down
    _write(path, 1, published=head)
    kinds = _kinds(path)
    assert "audit.head_mismatch" in kinds
    report = verify_trail(_trail(path), KEYS)
    assert [f.id for f in report.findings] == ["audit.head_mismatch"]
    assert "records 4..6 are missing" in report.findings[0].message


def test_the_published_head_of_the_same_file_is_no_finding(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = _write(path, 5)
    _write(path, 1, published=log.last_checkpoint)
    assert "audit.head_mismatch" not in _kinds(path)


def test_a_new_trail_notes_the_head_it_replaces(tmp_path: Path) -> None:
    old = _write(tmp_path / "old.jsonl", 2)
    path = tmp_path / "audit.jsonl"
    _write(path, 1, published=old.last_checkpoint)
    report = verify_trail(_trail(path), KEYS)
    assert report.ok
    assert "abandoned or its file lost" in report.notes[0]


def test_cli_verify_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """0 verified, 1 tampered (each finding on stderr), 2 unusable input."""
    from attestation.cli.main import main
    from attestation.core.signing import public_key_to_pem

    path, pub, head_file = tmp_path / "audit.jsonl", tmp_path / "pub.pem", tmp_path / "head.json"
    pub.write_bytes(public_key_to_pem(KEY.public_key()))
    head = _write(path, 4).last_checkpoint
    head_file.write_text(json.dumps(head))
    key = ["--key", str(pub)]
    assert main(["audit", "verify", str(path), *key, "--head", f"@{head_file}"]) == 0
    assert json.loads(capsys.readouterr().out)["publishedHead"]["seq"] == 5
    path.write_bytes(b"".join(path.read_bytes().splitlines(keepends=True)[:-2]))
    assert main(["audit", "verify", str(path), *key, "--head", f"@{head_file}"]) == 1
    err = capsys.readouterr().err
    assert "audit.head_dropped: the published head is record 5" in err
    assert main(["audit", "verify", str(path), "--key", str(path)]) == 2
    assert "--key: not a PEM public key" in capsys.readouterr().err
    assert main(["audit", "verify", str(path), "--head", "{"]) == 2
    assert "--head: published head is not JSON" in capsys.readouterr().err
    bad = tmp_path / "kubeconfig"
    bad.write_text("not: a kubeconfig")
    assert main(["audit", "verify", str(path), "--head", "cluster", "--kubeconfig", str(bad)]) == 2

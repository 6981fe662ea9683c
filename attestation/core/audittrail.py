"""Verify a whole audit trail: every file in order, the hash chain, the checkpoints' signatures,
torn lines, and the head the verifier published (``core.audit``, ``core.auditcheck``).

Findings, by stable id (exit 1 of ``trustgate audit verify``):

- ``audit.chain_broken`` — a line is not the record its predecessor's hash and the next seq
  call for (an edit, a deletion, a reorder, a rotated file missing between two others);
- ``audit.start_missing`` — the oldest file does not start at record 0;
- ``audit.checkpoint_invalid`` — a checkpoint's signature does not verify with the keys given
  (a re-chained edit: the hashes were recomputed, the signatures could not be);
- ``audit.file_end_unsigned`` — a rotated file does not end with a valid checkpoint;
- ``audit.torn_invalid`` — a last line (or one the verifier kept after a crash) that is not
  what a crash leaves (not a strict prefix of the record due there, or whole JSON);
- ``audit.torn_covered`` — a torn last line at a record the published head already covered:
  that record was whole once, so it was cut on purpose;
- ``audit.head_dropped`` — the trail ends before the published head;
- ``audit.head_rewritten`` — the record at the published head's place is not that checkpoint;
- ``audit.head_other_trail`` / ``audit.head_invalid`` — the published head belongs to another
  trail, or its signature does not verify;
- ``audit.head_mismatch`` — the verifier itself found, on start, its file behind or off the head
  it had published (the records are gone, but the trail says so).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from attestation.core.audit import (
    CHECKPOINT,
    GENESIS,
    HEAD_MISMATCH,
    OPENED,
    TORN_TAIL,
    check_link,
    is_torn_record,
    line_hash,
)
from attestation.core.auditcheck import Finding, check_checkpoint

__all__ = ["TrailReport", "verify_trail"]


@dataclass(frozen=True, slots=True)
class TrailReport:
    """What a walk of the trail found. ``uncovered``: records after the newest valid
    checkpoint (nothing signed covers them yet)."""

    records: int
    first_seq: int
    next_seq: int
    last_hash: str
    checkpoints: int
    last_checkpoint: int | None
    torn_tail: int
    trail: str
    identity: str
    signatures_checked: bool
    findings: tuple[Finding, ...]
    notes: tuple[str, ...]
    #: The line (1-based, in its file) where the chain broke, if it did.
    broken_at: int | None = None

    @property
    def ok(self) -> bool:
        return not self.findings

    @property
    def uncovered(self) -> int:
        last = -1 if self.last_checkpoint is None else self.last_checkpoint
        return max(0, self.next_seq - 1 - last)


@dataclass
class _Walk:
    keys: Mapping[str, Ed25519PublicKey] | None
    published: Mapping[str, Any] | None
    seq: int = 0
    prev: str = GENESIS
    records: int = 0
    first_seq: int | None = None
    checkpoints: int = 0
    last_checkpoint: int | None = None
    last_valid_checkpoint: int | None = None
    trail: str = ""
    identity: str = ""
    broken_at: int | None = None
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def find(self, fid: str, message: str) -> None:
        self.findings.append(Finding(fid, message))

    def start(self, line: bytes) -> None:
        """The oldest file's first record fixes where the chain starts."""
        try:
            first = json.loads(line)
        except (UnicodeDecodeError, json.JSONDecodeError):
            first = {}
        seq = first.get("seq") if isinstance(first, dict) else None
        if isinstance(seq, int) and seq > 0 and isinstance(first.get("prev"), str):
            self.seq, self.prev = seq, str(first["prev"])
            self.find("audit.start_missing", f"the trail starts at record {seq}: older files gone")
        self.first_seq = self.seq

    def line(self, name: str, number: int, line: bytes) -> bool:
        """Check one whole line; False once the chain is broken (nothing after it can be)."""
        if self.first_seq is None:
            self.start(line)
        problem = check_link(line, self.prev, self.seq)
        if problem:
            self.find("audit.chain_broken", f"{name} line {number} (record {self.seq}): {problem}")
            self.broken_at = number
            return False
        self.record(json.loads(line))
        self.prev = line_hash(line)
        self.seq += 1
        self.records += 1
        return True

    def record(self, record: Mapping[str, Any]) -> None:
        kind, seq = record.get("kind"), self.seq
        if isinstance(record.get("trail"), str) and not self.trail:
            self.trail = str(record["trail"])
        if kind == CHECKPOINT:
            self.checkpoint(record)
        elif kind == TORN_TAIL:
            self.kept_torn(record)
        elif kind == HEAD_MISMATCH:
            self.find("audit.head_mismatch", f"record {seq}: {record.get('message', '')}")
        elif kind == OPENED and isinstance(record.get("replaces"), Mapping):
            old = record["replaces"]
            self.notes.append(
                f"record {seq}: this trail was started while another trail's head was "
                f"published for {record.get('identity')} (trail {old.get('trail')}, record "
                f"{old.get('seq')}): that trail was abandoned or its file lost"
            )
        head = self.published
        if head is not None and head.get("seq") == seq and head.get("trail") in ("", self.trail):
            self.compare_head(record)

    def checkpoint(self, record: Mapping[str, Any]) -> None:
        self.checkpoints += 1
        self.last_checkpoint = self.seq
        self.identity = str(record.get("identity") or self.identity)
        if self.keys is None:
            return
        problem = check_checkpoint(record, self.keys)
        if problem:
            self.find("audit.checkpoint_invalid", f"checkpoint at record {self.seq} {problem}")
        else:
            self.last_valid_checkpoint = self.seq

    def kept_torn(self, record: Mapping[str, Any]) -> None:
        """The verifier cut a torn line on start and kept its bytes here: were they a crash's?"""
        try:
            torn = base64.b64decode(str(record.get("torn", "")), validate=True)
        except binascii.Error:
            torn = b""
        if not is_torn_record(torn, self.seq, self.prev):
            self.find(
                "audit.torn_invalid",
                f"record {self.seq}: the torn line the verifier kept is not what a crash leaves "
                f"of record {self.seq} (a strict prefix of it that is not whole JSON)",
            )

    def compare_head(self, record: Mapping[str, Any]) -> None:
        head = self.published or {}
        same = record.get("kind") == CHECKPOINT and all(
            record.get(k) == head.get(k) for k in ("prev", "trail", "signature")
        )
        if not same:
            self.find(
                "audit.head_rewritten",
                f"record {self.seq} is not the checkpoint published as the head (published "
                f"{head.get('time')}): the trail was rewritten from there",
            )


def verify_trail(
    files: Sequence[tuple[str, bytes]],
    keys: Mapping[str, Ed25519PublicKey] | None = None,
    published: Mapping[str, Any] | None = None,
) -> TrailReport:
    """Walk ``files`` (name, bytes), oldest first, as one chain. ``keys``: the verifier's public
    keys by key id (None: signatures unchecked); ``published``: the head the verifier published
    (``auditcheck.parse_head``)."""
    walk = _Walk(keys, published)
    torn = b""
    for index, (name, data) in enumerate(files):
        lines = data.split(b"\n")
        tail = lines.pop()
        if not all(walk.line(name, n, line) for n, line in enumerate(lines, 1)):
            return _report(walk, 0)
        if index < len(files) - 1:
            _check_rotated_end(walk, name, tail)
        else:
            torn = tail
    if torn:
        _check_torn_tail(walk, torn)
    if published is not None:
        _check_head(walk, published, torn)
    if keys is not None and walk.records and walk.last_valid_checkpoint is None:
        walk.notes.append("no valid checkpoint: nothing in this trail is covered by a signature")
    return _report(walk, len(torn))


def _check_rotated_end(walk: _Walk, name: str, tail: bytes) -> None:
    if tail:
        walk.find("audit.chain_broken", f"{name}: a rotated file ends in an unfinished line")
    elif walk.keys is not None and walk.last_valid_checkpoint != walk.seq - 1:
        walk.find(
            "audit.file_end_unsigned",
            f"{name}: a rotated file must end with a valid checkpoint (record {walk.seq - 1})",
        )


def _check_torn_tail(walk: _Walk, torn: bytes) -> None:
    if not is_torn_record(torn, walk.seq, walk.prev):
        walk.find(
            "audit.torn_invalid",
            f"the last line ({len(torn)} bytes, no newline) is not what a crash leaves of "
            f"record {walk.seq}: it must be a strict prefix of a record starting "
            f'{{"seq":{walk.seq},"prev":"{walk.prev[:12]}…" and not whole JSON',
        )
    head = walk.published
    if head is not None and isinstance(head.get("seq"), int) and head["seq"] >= walk.seq:
        walk.find(
            "audit.torn_covered",
            f"the torn last line is record {walk.seq}, which the published head (record "
            f"{head['seq']}) covered: it was whole once, so it was cut, not torn by a crash",
        )


def _check_head(walk: _Walk, head: Mapping[str, Any], torn: bytes) -> None:
    if walk.keys is not None:
        problem = check_checkpoint(head, walk.keys)
        if problem:
            walk.find("audit.head_invalid", f"the published head {problem}")
    if walk.trail and head.get("trail") != walk.trail:
        walk.find(
            "audit.head_other_trail",
            f"the published head belongs to trail {head.get('trail')}, this file to trail "
            f"{walk.trail}: not the file the verifier is writing, or it was replaced",
        )
        return
    seq = int(head.get("seq", -1))
    last = walk.seq - 1
    if seq > last and not (torn and seq == walk.seq):
        walk.find(
            "audit.head_dropped",
            f"the published head is record {seq} ({head.get('time')}) but the trail ends at "
            f"record {last}: {seq - last} or more records were dropped from its end",
        )


def _report(walk: _Walk, torn: int) -> TrailReport:
    return TrailReport(
        records=walk.records,
        first_seq=walk.first_seq or 0,
        next_seq=walk.seq,
        last_hash=walk.prev,
        checkpoints=walk.checkpoints,
        last_checkpoint=walk.last_valid_checkpoint if walk.keys else walk.last_checkpoint,
        torn_tail=torn,
        trail=walk.trail,
        identity=walk.identity,
        signatures_checked=walk.keys is not None,
        findings=tuple(walk.findings),
        notes=tuple(walk.notes),
        broken_at=walk.broken_at,
    )

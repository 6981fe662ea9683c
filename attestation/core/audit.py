"""The audit trail's format: JSON lines, each holding the SHA-256 of the line before it.

Pure: encoding a record and checking a whole chain from bytes. The file writer lives in
``attestation.verifier.auditlog``. A chain is broken when a line's ``prev`` is not the hash of the
line before it (an edit, a deletion, a reorder); a *torn tail* (the last line cut short by a crash
mid-write) is a different finding: nothing before it was touched.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

__all__ = ["ChainReport", "encode_record", "line_hash", "verify_chain"]

GENESIS: Final = "0" * 64


def line_hash(line: bytes) -> str:
    """The hash the next record's ``prev`` must hold (over the line without its newline)."""
    return hashlib.sha256(line).hexdigest()


def encode_record(seq: int, prev: str, record: Mapping[str, Any]) -> bytes:
    """One line, newline included. ``seq`` and ``prev`` come first so a reader sees the chain."""
    body = {
        "seq": seq,
        "prev": prev,
        **{k: v for k, v in record.items() if k not in ("seq", "prev")},
    }
    return json.dumps(body, separators=(",", ":"), sort_keys=False).encode() + b"\n"


@dataclass(frozen=True, slots=True)
class ChainReport:
    """``records`` whole, verified records; ``broken_at`` the 1-based line number of the first
    record that breaks the chain (None if none) with ``problem``; ``torn_tail`` bytes of an
    unfinished last line; ``last_hash``/``next_seq`` where a writer continues."""

    records: int
    last_hash: str
    next_seq: int
    broken_at: int | None = None
    problem: str = ""
    torn_tail: int = 0

    @property
    def ok(self) -> bool:
        return self.broken_at is None


def verify_chain(data: bytes) -> ChainReport:
    prev = GENESIS
    seq = 0
    count = 0
    lines = data.split(b"\n")
    tail = lines.pop()  # after the last newline: empty, or a torn record
    for number, line in enumerate(lines, 1):
        problem = _check(line, prev, seq)
        if problem:
            return ChainReport(count, prev, seq, broken_at=number, problem=problem)
        prev = line_hash(line)
        seq += 1
        count += 1
    return ChainReport(count, prev, seq, torn_tail=len(tail))


def _check(line: bytes, prev: str, seq: int) -> str:
    try:
        record = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        return f"not a JSON record ({e.msg if isinstance(e, json.JSONDecodeError) else e})"
    if not isinstance(record, dict):
        return "not a JSON object"
    if record.get("prev") != prev:
        return f"prev {record.get('prev')!r} is not the hash of the record before it ({prev})"
    if record.get("seq") != seq:
        return f"seq {record.get('seq')!r} where {seq} was expected"
    return ""

"""Recover where an audit file's chain continues from its first line and its tail only.

Why not read the whole file: a trail grows for as long as the verifier runs (rotation bounds one
file, not what start-up would have to read before the first round), and the whole chain is the
job of `trustgate audit verify`, which runs elsewhere. The last 64 KiB hold several whole records
(one is at most ``core.audit.MAX_RECORD_BYTES``), enough to check the links near the end and to
find the newest published checkpoint there.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from attestation.core.audit import GENESIS, MAX_RECORD_BYTES, TORN_TAIL, line_hash, verify_chain

__all__ = ["TAIL_WINDOW", "Tail", "read_tail", "rotated_files", "torn_record"]

#: How much of a file's end start-up reads.
TAIL_WINDOW: Final = 64 * 1024


@dataclass(frozen=True, slots=True)
class Tail:
    """Where the chain continues (``next_seq``, ``last_hash``); ``size`` the file's length
    without ``torn`` (bytes after its last newline); ``recent`` the window's records by seq."""

    trail: str
    first_seq: int
    next_seq: int
    last_hash: str
    size: int
    torn: bytes = b""
    recent: dict[int, dict[str, Any]] = field(default_factory=dict)


def rotated_files(path: Path) -> list[Path]:
    """``path``'s rotated predecessors, oldest first (``<name>.<12-digit first record>``)."""
    pattern = re.compile(re.escape(path.name) + r"\.(\d{12})")
    found = [p for p in path.parent.glob(path.name + ".*") if pattern.fullmatch(p.name)]
    return sorted(found, key=lambda p: p.name)


def torn_record(torn: bytes) -> dict[str, Any]:
    """The record that keeps a torn line's bytes in the chain, at the torn record's place."""
    return {
        "kind": TORN_TAIL,
        "message": f"a record was cut short by a crash ({len(torn)} bytes); kept here",
        "torn": base64.b64encode(torn).decode(),
    }


def read_tail(path: Path, window: int = TAIL_WINDOW) -> Tail:
    """The tail of ``path``; ``ValueError`` naming the problem when its end does not verify."""
    with path.open("rb") as f:
        first = f.readline(2 * MAX_RECORD_BYTES)
        size = f.seek(0, 2)
        start = max(0, size - window)
        f.seek(start)
        data = f.read(window)
    if start > 0:  # the window starts inside a line: skip to the next one
        cut = data.find(b"\n")
        if cut < 0:
            raise ValueError(f"no complete record in the last {window} bytes")
        data, start = data[cut + 1 :], start + cut + 1
    body_end = data.rfind(b"\n") + 1
    body, torn = data[:body_end], data[body_end:]
    lines = body.split(b"\n")[:-1]
    if not lines:
        if start > 0:
            raise ValueError(f"no complete record in the last {window} bytes")
        return Tail(_trail_of(first), 0, 0, GENESIS, 0, torn)
    head = _parse(lines[0])
    seq, prev = (0, GENESIS) if start == 0 else (head.get("seq"), head.get("prev"))
    if not isinstance(seq, int) or not isinstance(prev, str):
        raise ValueError(f"the record at byte {start} has no seq and prev")
    report = verify_chain(body, seq=seq, prev=prev)
    if not report.ok:
        at = seq + (report.broken_at or 1) - 1
        raise ValueError(f"record {at} breaks the chain: {report.problem}")
    recent = {seq + i: _parse(line) for i, line in enumerate(lines)}
    first_record = _parse(first) if first.endswith(b"\n") else {}
    first_seq = first_record.get("seq")
    if not isinstance(first_seq, int):
        first_seq = seq
    return Tail(
        _trail_of(first), first_seq, report.next_seq, line_hash(lines[-1]),
        start + body_end, torn, recent,
    )  # fmt: skip


def _parse(line: bytes) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return record if isinstance(record, dict) else {}


def _trail_of(first: bytes) -> str:
    """The trail's id: the first record's ``trail``, or (a trail written before ids) a hash of
    its first line, so that it stays the same across restarts."""
    trail = _parse(first.rstrip(b"\n")).get("trail")
    if isinstance(trail, str) and trail:
        return trail
    return line_hash(first.rstrip(b"\n"))[:32] if first else ""

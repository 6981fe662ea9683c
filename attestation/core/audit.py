"""The audit trail's format: JSON lines, each holding the SHA-256 of the line before it.

Pure: encoding (and capping) a record, the bytes a record at a given place must start with, and
walking a chain from bytes. The file writer lives in ``attestation.verifier.auditlog``; signed
checkpoints and whole-trail verification in ``attestation.core.auditcheck``.

A chain is broken when a line's ``prev`` is not the hash of the line before it (an edit, a
deletion, a reorder). A *torn tail* (the last line cut short by a crash mid-write) is a different
finding: nothing before it was touched. Every record starts ``{"seq":N,"prev":"<hash>"`` and the
writer knows both before it writes, so a torn line can be told from other junk: it must be a
strict prefix of that start or begin with it, and must not parse as JSON (a crash never removes
only the newline: the line and its newline are one ``write``). Whether a torn line was a crash or
an edited record cut short is decided by coverage: a record that a signed checkpoint or the
published head already covered was whole once (``auditcheck``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

__all__ = [
    "CHECKPOINT",
    "GENESIS",
    "HEAD_MISMATCH",
    "MAX_RECORD_BYTES",
    "OPENED",
    "ROTATED",
    "TORN_TAIL",
    "ChainReport",
    "cap_record",
    "check_link",
    "encode_record",
    "is_torn_record",
    "line_hash",
    "record_prefix",
    "verify_chain",
]

GENESIS: Final = "0" * 64
#: Record kinds the trail writes about itself.
OPENED: Final = "audit.opened"
ROTATED: Final = "audit.rotated"
CHECKPOINT: Final = "audit.checkpoint"
TORN_TAIL: Final = "audit.torn_tail"
HEAD_MISMATCH: Final = "audit.head_mismatch"

#: A whole record's cap (bytes, newline included): pod names, reasons and file paths from IMA
#: logs are chosen by whoever controls a node or a namespace.
MAX_RECORD_BYTES: Final = 16 * 1024
#: One string's cap (characters) and one list's or object's (items) inside a record.
MAX_STRING: Final = 1024
MAX_ITEMS: Final = 64
_MAX_DEPTH: Final = 8


def line_hash(line: bytes) -> str:
    """The hash the next record's ``prev`` must hold (over the line without its newline)."""
    return hashlib.sha256(line).hexdigest()


def record_prefix(seq: int, prev: str) -> bytes:
    """The bytes every record at ``seq`` after a line hashing to ``prev`` starts with."""
    return b'{"seq":%d,"prev":"%s"' % (seq, prev.encode("ascii", "replace"))


def encode_record(seq: int, prev: str, record: Mapping[str, Any]) -> bytes:
    """One line, newline included. ``seq`` and ``prev`` come first so a reader sees the chain.
    ASCII-only JSON: no byte of an attacker's string can end the line early."""
    body = {
        "seq": seq,
        "prev": prev,
        **{k: v for k, v in record.items() if k not in ("seq", "prev")},
    }
    return json.dumps(body, separators=(",", ":"), sort_keys=False).encode() + b"\n"


def cap_record(record: Mapping[str, Any], max_bytes: int = MAX_RECORD_BYTES) -> dict[str, Any]:
    """``record`` with long strings, lists and objects cut (each cut says how much went), and
    replaced by a summary (its kind, time, size and SHA-256, and an excerpt) if still too big."""
    capped: dict[str, Any] = _cap(dict(record), 0)
    encoded = json.dumps(capped, separators=(",", ":"), default=str)
    if len(encoded) + 100 <= max_bytes:  # seq, prev and the newline
        return capped
    return {
        "time": capped.get("time"),
        "kind": capped.get("kind"),
        "truncated": {
            "bytes": len(encoded),
            "sha256": hashlib.sha256(encoded.encode()).hexdigest(),
            "excerpt": encoded[: max(0, max_bytes // 4)],
        },
    }


def _cap(value: Any, depth: int) -> Any:
    if isinstance(value, str):
        return _cap_str(value)
    if depth >= _MAX_DEPTH and isinstance(value, (Mapping, list, tuple)):
        return "…[nested too deep]"
    if isinstance(value, Mapping):
        items = list(value.items())
        out = {_cap_str(str(k)): _cap(v, depth + 1) for k, v in items[:MAX_ITEMS]}
        if len(items) > MAX_ITEMS:
            out["…"] = f"[{len(items) - MAX_ITEMS} more entries]"
        return out
    if isinstance(value, (list, tuple)):
        kept = [_cap(v, depth + 1) for v in value[:MAX_ITEMS]]
        if len(value) > MAX_ITEMS:
            kept.append(f"…[{len(value) - MAX_ITEMS} more items]")
        return kept
    return value


def _cap_str(text: str) -> str:
    if len(text) <= MAX_STRING:
        return text
    return f"{text[:MAX_STRING]}…[{len(text) - MAX_STRING} more characters]"


def is_torn_record(torn: bytes, seq: int, prev: str) -> bool:
    """Whether ``torn`` (no newline) can be what a crash left of the record at ``seq`` after a
    line hashing to ``prev``: a strict prefix of its known start, or that start followed by
    more, and not a whole JSON value (a whole record missing only its newline was edited)."""
    if not torn or b"\n" in torn:
        return False
    start = record_prefix(seq, prev)
    if not (start.startswith(torn) or torn.startswith(start)):
        return False
    try:
        json.loads(torn)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return True
    return False


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


def verify_chain(data: bytes, *, seq: int = 0, prev: str = GENESIS) -> ChainReport:
    """Walk ``data`` (whole lines and maybe a torn last one) from record ``seq`` after a line
    hashing to ``prev`` (a rotated file continues its predecessor's chain)."""
    count = 0
    lines = data.split(b"\n")
    tail = lines.pop()  # after the last newline: empty, or a torn record
    for number, line in enumerate(lines, 1):
        problem = check_link(line, prev, seq)
        if problem:
            return ChainReport(count, prev, seq, broken_at=number, problem=problem)
        prev = line_hash(line)
        seq += 1
        count += 1
    return ChainReport(count, prev, seq, torn_tail=len(tail))


def check_link(line: bytes, prev: str, seq: int) -> str:
    """Empty when ``line`` is a JSON object at ``seq`` whose ``prev`` is ``prev``; else why not."""
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

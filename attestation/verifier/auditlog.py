"""The verifier's append-only audit file (format: ``attestation.core.audit``).

Each record is written with one ``write`` and ``fsync``ed before the action it records is taken
as done, so a crash loses at most the record being written. On open the file is verified: a torn
last line (a crash mid-write) is cut off and an ``audit.torn_tail`` record, holding the torn
bytes, continues the chain; a broken chain refuses to open (someone edited the trail).
"""

from __future__ import annotations

import base64
import os
import threading
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from attestation.core.audit import encode_record, line_hash, verify_chain
from attestation.core.clock import Clock, format_time, utcnow

__all__ = ["AuditChainBroken", "AuditLog", "audit_time"]


class AuditChainBroken(RuntimeError):
    """The existing audit file does not verify; the message names the first broken record."""


class AuditLog:
    def __init__(self, path: Path, *, clock: Clock = utcnow) -> None:
        self.path = path
        self._clock = clock
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        data = path.read_bytes() if path.exists() else b""
        report = verify_chain(data)
        if not report.ok:
            raise AuditChainBroken(
                f"audit log {path}: record {report.broken_at} breaks the chain: {report.problem}"
            )
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o640)
        self._prev = report.last_hash
        self._seq = report.next_seq
        self.recovered_torn_tail = report.torn_tail
        if report.torn_tail:
            torn = data[len(data) - report.torn_tail :]
            os.ftruncate(self._fd, len(data) - report.torn_tail)
            self.append(
                {
                    "kind": "audit.torn_tail",
                    "message": f"a record was cut short by a crash ({len(torn)} bytes); kept here",
                    "torn": base64.b64encode(torn).decode(),
                }
            )
        os.lseek(self._fd, 0, os.SEEK_END)

    def append(self, record: Mapping[str, Any]) -> None:
        with self._lock:
            # A record stamped when its event happened keeps that time.
            stamped = record if "time" in record else {"time": audit_time(self._clock()), **record}
            line = encode_record(self._seq, self._prev, stamped)
            os.lseek(self._fd, 0, os.SEEK_END)
            os.write(self._fd, line)
            os.fsync(self._fd)
            self._prev = line_hash(line[:-1])
            self._seq += 1

    def close(self) -> None:
        with self._lock:
            os.close(self._fd)


def audit_time(now: datetime) -> str:
    """The audit trail's timestamps: UTC, RFC 3339, milliseconds."""
    return format_time(now, "milliseconds")

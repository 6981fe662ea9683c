"""The verifier's append-only audit file (format: ``attestation.core.audit``).

Each record is written with one ``write`` and ``fsync``ed before the action it records is taken
as done, so a crash loses at most the record being written. Records are capped
(``core.audit.cap_record``): their strings come from nodes and tenants.

Start-up reads the file's first line (the trail's id) and its last 64 KiB only, never the whole
trail: the chain inside that window is checked (a break refuses to open: someone edited the
trail), a torn last line (a crash mid-write) is cut off and an ``audit.torn_tail`` record, holding
the torn bytes, continues the chain. The head this replica published before is compared: a file
that ends before it, or differs from it, gets an ``audit.head_mismatch`` record (the records are
gone, the trail says so and ``trustgate audit verify`` reports it).

With a signing key, ``checkpoint`` appends a signed checkpoint over the head (called every
``--audit-checkpoint-interval`` and on close; ``core.auditcheck``). Past ``max_bytes`` the file
rotates: it ends with a checkpoint, is renamed ``<name>.<first record, 12 digits>``, and the new
file's first record (``audit.rotated``) continues the same chain.

One writer per file: an exclusive ``flock`` on ``<name>.lock``; a second process (another
replica given the same path) gets ``AuditLogBusy`` instead of interleaving its own chain.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from attestation.core.audit import (
    GENESIS,
    HEAD_MISMATCH,
    MAX_RECORD_BYTES,
    OPENED,
    ROTATED,
    cap_record,
    encode_record,
    line_hash,
)
from attestation.core.auditcheck import make_checkpoint
from attestation.core.clock import Clock, format_time, utcnow
from attestation.verifier.audittail import Tail, read_tail, rotated_files, torn_record

__all__ = [
    "AuditChainBroken",
    "AuditLog",
    "AuditLogBusy",
    "AuditOptions",
    "audit_time",
    "rotated_files",
]

#: Default rotation size of one file.
DEFAULT_MAX_BYTES: Final = 64 * 1024 * 1024
#: Room kept for the checkpoint that ends a file (one is about 400 bytes).
_CHECKPOINT_RESERVE: Final = 1024


class AuditChainBroken(RuntimeError):
    """The existing audit file does not verify; the message names the first broken record."""


class AuditLogBusy(RuntimeError):
    """Another process holds this audit file."""


@dataclass(frozen=True, slots=True)
class AuditOptions:
    """``identity`` names the replica in checkpoints; ``signer`` signs them (None: no
    checkpoints); a file rotates before it would pass ``max_bytes``."""

    identity: str = "verifier"
    signer: Ed25519PrivateKey | None = None
    max_bytes: int = DEFAULT_MAX_BYTES
    max_record_bytes: int = MAX_RECORD_BYTES


class AuditLog:
    def __init__(
        self,
        path: Path,
        *,
        clock: Clock = utcnow,
        options: AuditOptions = AuditOptions(),
        published: Mapping[str, Any] | None = None,
    ) -> None:
        """Open (or start) the trail at ``path``; ``published``: the head this replica
        published before (``audithead``), compared with the file's."""
        self.path = path
        self._clock = clock
        self._options = options
        self._lock = threading.Lock()
        self.recovered_torn_tail = 0
        self.last_checkpoint: dict[str, Any] | None = None
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_fd = _lock(path)
        try:
            self._open(published)
        except BaseException:
            os.close(self._lock_fd)
            raise

    # -- opening ---------------------------------------------------------------------------

    def _open(self, published: Mapping[str, Any] | None) -> None:
        path = self.path
        current = path if path.exists() and path.stat().st_size > 0 else None
        rotated = rotated_files(path)
        source = current or (rotated[-1] if rotated else None)
        tail = _recover(source) if source is not None else None
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        if tail is None:
            self._start_trail(published)
            return
        self.trail = tail.trail
        self._seq, self._prev = tail.next_seq, tail.last_hash
        self._size = tail.size if source == path else 0
        self._file_first = tail.first_seq if source == path else tail.next_seq
        if tail.torn:
            os.ftruncate(self._fd, tail.size)
            self.recovered_torn_tail = len(tail.torn)
            self._append_locked(torn_record(tail.torn))
        if (
            source is not None and source != path
        ):  # a crash between a rotation's rename and the new file's first line
            self._append_locked({"kind": ROTATED, **self._names(), "previousFile": source.name})
        if published is not None:
            self._compare_published(published, tail)

    def _start_trail(self, published: Mapping[str, Any] | None) -> None:
        self.trail = os.urandom(16).hex()
        self._seq, self._prev, self._size, self._file_first = 0, GENESIS, 0, 0
        os.ftruncate(self._fd, 0)
        record: dict[str, Any] = {
            "time": audit_time(self._clock()), "kind": OPENED, **self._names(),
        }  # fmt: skip
        if published is not None:
            record["replaces"] = {k: published.get(k) for k in ("trail", "seq", "time")}
        self._append_locked(record)

    def _compare_published(self, head: Mapping[str, Any], tail: Tail) -> None:
        if head.get("trail") != self.trail:
            self._append_locked({
                "kind": "audit.head_other_trail", **self._names(),
                "message": f"the head published for {self._options.identity} belongs to trail "
                f"{head.get('trail')} (record {head.get('seq')}): another file took over",
            })  # fmt: skip
            return
        seq, last = int(head.get("seq", -1)), tail.next_seq - 1
        mine = tail.recent.get(seq)
        if seq > last:
            problem = (
                f"the head published at {head.get('time')} is record {seq}, but this file "
                f"ended at record {last}: records {last + 1}..{seq} are missing (dropped, or "
                "the file restored from an older copy)"
            )
        elif mine is not None and any(mine.get(k) != head.get(k) for k in ("prev", "signature")):
            problem = f"record {seq} is not the checkpoint published as the head: rewritten"
        else:
            return
        self._append_locked({"kind": HEAD_MISMATCH, **self._names(), "message": problem})

    def _names(self) -> dict[str, str]:
        return {"trail": self.trail, "identity": self._options.identity}

    # -- writing ---------------------------------------------------------------------------

    def append(self, record: Mapping[str, Any]) -> None:
        with self._lock:
            # A record stamped when its event happened keeps that time.
            stamped = record if "time" in record else {"time": audit_time(self._clock()), **record}
            self._append_locked(cap_record(stamped, self._options.max_record_bytes))

    def checkpoint(self) -> dict[str, Any] | None:
        """Sign the head if records came after the last checkpoint; the checkpoint, or None."""
        with self._lock:
            return self._checkpoint_locked()

    def _checkpoint_locked(self) -> dict[str, Any] | None:
        signer = self._options.signer
        last = self.last_checkpoint
        if signer is None or (last is not None and last["seq"] == self._seq - 1):
            return None
        record = make_checkpoint(
            self._seq, self._prev, time=audit_time(self._clock()), trail=self.trail,
            identity=self._options.identity, key=signer,
        )  # fmt: skip
        self._write(encode_record(self._seq, self._prev, record))
        self.last_checkpoint = record
        return record

    def _append_locked(self, record: Mapping[str, Any]) -> None:
        line = encode_record(self._seq, self._prev, record)
        reserve = _CHECKPOINT_RESERVE if self._options.signer else 0  # the file's last line
        if self._size > 0 and self._size + len(line) + reserve > self._options.max_bytes:
            self._rotate_locked()
            line = encode_record(self._seq, self._prev, record)
        self._write(line)

    def _write(self, line: bytes) -> None:
        view = memoryview(line)
        while view:
            view = view[os.write(self._fd, view) :]
        os.fsync(self._fd)
        self._prev = line_hash(line[:-1])
        self._seq += 1
        self._size += len(line)

    def _rotate_locked(self) -> None:
        """End the file signed, rename it after its first record, continue in a new one."""
        self._checkpoint_locked()
        os.close(self._fd)
        target = self.path.with_name(f"{self.path.name}.{self._file_first:012d}")
        os.rename(self.path, target)
        _fsync_dir(self.path.parent)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o640)
        self._size, self._file_first = 0, self._seq
        self._write(
            encode_record(
                self._seq, self._prev, {
                    "time": audit_time(self._clock()), "kind": ROTATED, **self._names(),
                    "previousFile": target.name,
                },
            )
        )  # fmt: skip

    def close(self) -> dict[str, Any] | None:
        """A last checkpoint (returned, to publish), then release the file."""
        with self._lock:
            final = self._checkpoint_locked()
            os.close(self._fd)
            os.close(self._lock_fd)
            return final


def _recover(source: Path) -> Tail:
    try:
        return read_tail(source)
    except ValueError as e:
        raise AuditChainBroken(f"audit log {source}: {e}") from e


def _lock(path: Path) -> int:
    lock = path.with_name(path.name + ".lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o640)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise AuditLogBusy(
            f"audit log {path} is in use by another process (it holds {lock}): give every "
            "verifier replica its own file, e.g. --audit-log /var/lib/trustgate/"
            "audit-{identity}.jsonl"
        ) from None
    return fd


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def audit_time(now: datetime) -> str:
    """The audit trail's timestamps: UTC, RFC 3339, milliseconds."""
    return format_time(now, "milliseconds")

"""The kernel's IMA measurement list as a file: read from an offset, and watch it grow.

securityfs files report size 0 and never fire inotify, so both reading and watching go by
reading to EOF, and the list is a seq_file: a seek to byte N re-formats every record before N
(measured on a real 6.1 kernel: tests/realnode, bench/realnode_bench.py). So the agent keeps the
list open and reads on from where it stopped (``_Cursor``) instead of reopening and seeking
every watch tick and every page. The kernel appends whole records under its lock, but a read can
still end inside a record the kernel is writing: the verifier's parser stops before a partial
trailing record and asks again from there next round.

Pages: the verifier reads the log a page at a time (``read_page``): at most ``max_bytes`` of whole
entries, and whether more follows, so the agent never holds more than a page of it, however long
the log has grown. The entries are framed by their length fields only; judging them is the
verifier's job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import struct
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import BinaryIO, Final

__all__ = ["ImaLogError", "ImaLogFile", "watch", "whole_entries"]

log = logging.getLogger(__name__)

_CHUNK: Final = 1 << 20
_U32: Final = struct.Struct("<I").unpack_from
#: The kernel's cap on a template name (``ima``, ``ima-ng``, ``ima-cgpath``, ...).
_MAX_TEMPLATE_NAME: Final = 15


def whole_entries(buf: bytes | memoryview, column_size: int) -> int:
    """How many leading bytes of ``buf`` are whole binary entries (``u32 pcr || column || u32
    name_len || name || u32 data_len || data``; the legacy ``ima`` template: ``digest[20] ||
    u32 len || name`` after its name). Stops at the first entry that is cut off, or whose
    template-name length no kernel writes: what the bytes mean is for the verifier to say."""
    n, pos = len(buf), 0
    while True:
        name_at = pos + 4 + column_size
        if name_at + 4 > n:
            return pos
        (name_len,) = _U32(buf, name_at)
        p = name_at + 4 + name_len
        if not 0 < name_len <= _MAX_TEMPLATE_NAME or p + 4 > n:
            return pos
        if bytes(buf[name_at + 4 : p]) == b"ima":
            if p + 24 > n:
                return pos
            end = p + 24 + _U32(buf, p + 20)[0]
        else:
            end = p + 4 + _U32(buf, p)[0]
        if end > n:
            return pos
        pos = end


class ImaLogError(OSError):
    """The measurement list could not be read."""


class _Cursor:
    """An open reader of the list that remembers where it is, so that reading on costs only the
    new bytes. securityfs's list is a seq_file: a seek to byte N re-formats every record before
    N (``seq_lseek`` -> ``traverse``), so reopening and seeking to the last end every round
    costs the whole list each time (bench/realnode_bench.py measures both); a read that goes on
    from where the last one stopped only walks the list's pointers to its index.

    ``pending`` holds bytes read past what the last caller took (a page cut at a whole entry,
    the byte read to see whether more follows), so the next read starting there needs no seek.
    Only for pseudo files (size 0: securityfs), whose list never shrinks or changes within a
    boot (a reboot restarts the agent). A regular file (the lab's writer, a captured log) is
    read at its offset every time: a seek there is cheap, and it may be rewritten or truncated.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._f: BinaryIO | None = None
        self._pseudo = False
        self.pos = 0  # the file position: the end of what was read
        self.pending = b""  # the bytes just before ``pos`` the last caller did not take

    def read(self, offset: int, max_bytes: int) -> bytes:
        """At most ``max_bytes`` from ``offset``."""
        if self._f is None:
            self._f = self.path.open("rb", buffering=0)
            self._pseudo = os.fstat(self._f.fileno()).st_size == 0
            self.pos, self.pending = 0, b""
        held = self.pos - len(self.pending)
        head = b""
        if self._pseudo and held <= offset <= self.pos:
            head = self.pending[offset - held :][:max_bytes]
        elif offset != self.pos or not self._pseudo:
            self._f.seek(offset)  # on a seq_file, the costly path: re-formats up to offset
            self.pos = offset
        parts, remaining = [head], max_bytes - len(head)
        while remaining > 0:
            chunk = self._f.read(min(_CHUNK, remaining))
            if not chunk:
                break
            parts.append(chunk)
            self.pos += len(chunk)
            remaining -= len(chunk)
        self.pending = b""
        return b"".join(parts)

    def skip(self, offset: int) -> int:
        """Read from ``offset`` to EOF without keeping the bytes; the end."""
        while self.read(offset, _CHUNK):
            offset = self.pos
        return self.pos

    def keep(self, tail: bytes) -> None:
        """``tail``, which ends at ``pos``, was read but not taken: the next read may start
        in it."""
        self.pending = tail if self._pseudo else b""

    def __del__(self) -> None:
        # the agent's cursor lives as long as its app; an app made in a test goes with it
        self.close()

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
        self.pos, self.pending = 0, b""


class ImaLogFile:
    """The list, read through one kept-open cursor for the verifier's pages (the next page
    starts where the last one ended), and through a fresh one while that one is busy."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._cursor = _Cursor(path)
        self._lock = threading.Lock()

    def read_from(self, offset: int, max_bytes: int) -> bytes:
        """Bytes from ``offset`` to EOF, at most ``max_bytes`` (the caller's cap)."""
        return self._read(offset, max_bytes, len)[0]

    def read_page(self, offset: int, max_bytes: int, column_size: int) -> tuple[bytes, bool]:
        """At most ``max_bytes`` of whole entries from ``offset``, and whether more bytes follow.
        When not even one whole entry is there (the kernel is writing it, or the bytes are not
        entries at all), the raw bytes go as they are: the verifier says what they are."""

        def cut(buf: bytes) -> int:
            view = memoryview(buf)[:max_bytes]
            return whole_entries(view, column_size) or len(view)

        page, read = self._read(offset, max_bytes + 1, cut)  # one byte more: does it go on?
        return page, read > len(page)

    def end_offset(self, start: int) -> int:
        """The current end of the log, reading on from a known offset ``start``."""
        cursor = _Cursor(self.path)
        try:
            return cursor.skip(start)
        except OSError as e:
            raise ImaLogError(f"cannot read IMA log {self.path}: {e.strerror or e}") from e
        finally:
            cursor.close()

    def _read(self, offset: int, max_bytes: int, take: Callable[[bytes], int]) -> tuple[bytes, int]:
        """The first ``take(read)`` bytes of what was read from ``offset``, and how many were
        read; the rest stays with the cursor for the next call."""
        mine = self._lock.acquire(blocking=False)
        cursor = self._cursor if mine else _Cursor(self.path)
        try:
            buf = cursor.read(offset, max_bytes)
            n = take(buf)
            cursor.keep(buf[n:])
            return buf[:n], len(buf)
        except OSError as e:
            cursor.close()
            raise ImaLogError(f"cannot read IMA log {self.path}: {e.strerror or e}") from e
        finally:
            if mine:
                self._lock.release()
            else:
                cursor.close()


async def watch(
    log_file: ImaLogFile,
    interval: float,
    on_growth: Callable[[int], Awaitable[None]],
) -> None:
    """Call ``on_growth(new_end)`` whenever the log grew; runs until cancelled.

    A failing callback or an unreadable log is logged and retried next tick: the push channel
    is an accelerator, the verifier's pull loop is the safety net.
    """
    # One cursor kept open for the agent's life: each tick reads only what was appended
    # (reopening and seeking to the end would re-format the whole list every tick).
    cursor = _Cursor(log_file.path)
    try:
        await _watch(cursor, interval, on_growth)
    finally:
        cursor.close()


async def _watch(
    cursor: _Cursor, interval: float, on_growth: Callable[[int], Awaitable[None]]
) -> None:
    end = 0
    with contextlib.suppress(OSError):
        end = await asyncio.to_thread(cursor.skip, 0)
    while True:
        await asyncio.sleep(interval)
        try:
            new_end = await asyncio.to_thread(cursor.skip, end)
        except OSError as e:
            cursor.close()
            log.warning("cannot read IMA log %s: %s", cursor.path, e.strerror or e)
            continue
        if new_end > end:
            end = new_end
            try:
                await on_growth(end)
            except Exception as e:
                log.warning("push notification failed: %s", e)

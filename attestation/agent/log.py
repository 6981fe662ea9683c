"""The kernel's IMA measurement list as a file: read from an offset, and watch it grow.

securityfs files report size 0 and never fire inotify, so both reading and watching go by
reading from an offset to EOF. The kernel appends whole records under its lock, but a read can
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
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final

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


class ImaLogFile:
    def __init__(self, path: Path) -> None:
        self.path = path

    def read_from(self, offset: int, max_bytes: int) -> bytes:
        """Bytes from ``offset`` to EOF, at most ``max_bytes`` (the caller's cap)."""
        try:
            with self.path.open("rb", buffering=0) as f:
                f.seek(offset)
                parts: list[bytes] = []
                remaining = max_bytes
                while remaining > 0:
                    chunk = f.read(min(_CHUNK, remaining))
                    if not chunk:
                        break
                    parts.append(chunk)
                    remaining -= len(chunk)
                return b"".join(parts)
        except OSError as e:
            raise ImaLogError(f"cannot read IMA log {self.path}: {e.strerror or e}") from e

    def read_page(self, offset: int, max_bytes: int, column_size: int) -> tuple[bytes, bool]:
        """At most ``max_bytes`` of whole entries from ``offset``, and whether more bytes follow.
        When not even one whole entry is there (the kernel is writing it, or the bytes are not
        entries at all), the raw bytes go as they are: the verifier says what they are."""
        buf = self.read_from(offset, max_bytes + 1)  # one byte more: does the log go on?
        view = memoryview(buf)[:max_bytes]
        cut = whole_entries(view, column_size) or len(view)
        return bytes(view[:cut]), len(buf) > cut

    def end_offset(self, start: int) -> int:
        """The current end of the log, scanning forward from a known offset ``start``."""
        try:
            with self.path.open("rb", buffering=0) as f:
                f.seek(start)
                end = start
                while chunk := f.read(_CHUNK):
                    end += len(chunk)
                return end
        except OSError as e:
            raise ImaLogError(f"cannot read IMA log {self.path}: {e.strerror or e}") from e


async def watch(
    log_file: ImaLogFile,
    interval: float,
    on_growth: Callable[[int], Awaitable[None]],
) -> None:
    """Call ``on_growth(new_end)`` whenever the log grew; runs until cancelled.

    A failing callback or an unreadable log is logged and retried next tick: the push channel
    is an accelerator, the verifier's pull loop is the safety net.
    """
    end = 0
    with contextlib.suppress(ImaLogError):
        end = await asyncio.to_thread(log_file.end_offset, 0)
    while True:
        await asyncio.sleep(interval)
        try:
            new_end = await asyncio.to_thread(log_file.end_offset, end)
        except ImaLogError as e:
            log.warning("%s", e)
            continue
        if new_end > end:
            end = new_end
            try:
                await on_growth(end)
            except Exception as e:
                log.warning("push notification failed: %s", e)

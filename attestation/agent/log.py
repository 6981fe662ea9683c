"""The kernel's IMA measurement list as a file: read from an offset, and watch it grow.

securityfs files report size 0 and never fire inotify, so both reading and watching go by
reading from an offset to EOF. The kernel appends whole records under its lock, but a read can
still end inside a record the kernel is writing: the verifier's parser stops before a partial
trailing record and asks again from there next round.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final

__all__ = ["ImaLogError", "ImaLogFile", "watch"]

log = logging.getLogger(__name__)

_CHUNK: Final = 1 << 20


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

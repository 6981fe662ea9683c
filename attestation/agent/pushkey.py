"""The agent's push key: derived from the credential secret of its latest activation
(``core.pushauth``), kept in memory and in the state directory, so a restarted agent (same AK,
no re-enrollment) still signs its pushes.

The file is readable by root on the node only; root on the node can wake its own node anyway.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from attestation.core.pushauth import KEY_BYTES, NotifyPayload, encode_push, push_key

__all__ = ["PushKey"]

log = logging.getLogger(__name__)


class PushKey:
    """The current key and the counter of the last push signed with any key."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._key: bytes | None = None
        self._counter = 0
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as e:
            log.warning("push key %s unreadable (%s): pushes wait for the next enrollment", path, e)
            return
        if len(data) == KEY_BYTES:
            self._key = data
        else:
            log.warning("push key %s has %d bytes, not %d: ignored", path, len(data), KEY_BYTES)

    def activated(self, secret: bytes) -> None:
        """A credential was activated: the verifier that made it derives the same key."""
        key = push_key(secret)
        self._key = key
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self._path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(key)
            tmp.replace(self._path)
        except OSError as e:  # kept in memory: only a restart before re-enrollment loses it
            log.warning("push key not saved to %s (%s)", self._path, e)

    def sign(self, node: str) -> NotifyPayload | None:
        """A push for ``node`` with a counter above every earlier one (the clock's nanoseconds,
        so it keeps rising across restarts); None before any activation."""
        if self._key is None:
            return None
        self._counter = max(self._counter + 1, time.time_ns())
        return encode_push(self._key, node, self._counter)

"""uvicorn inside a process that owns its signals.

uvicorn's ``Server.serve`` installs its own SIGINT/SIGTERM handlers and re-raises the signal at
exit; a process that runs several things on one loop (the verifier) handles signals itself and
tells the server to exit.
"""

from __future__ import annotations

import contextlib
from collections.abc import Generator

import uvicorn

__all__ = ["EmbeddedServer"]


class EmbeddedServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield

"""Serve an ASGI app with a real uvicorn server in a thread (as httpx's own tests do), on a free
loopback port, optionally over TLS; the lifespan runs for real."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import uvicorn

from attestation.lab.poll import wait_for
from attestation.lab.process import free_port

__all__ = ["serve"]


@contextlib.contextmanager
def serve(
    app: Any,
    *,
    port: int = 0,
    certfile: Path | None = None,
    keyfile: Path | None = None,
    timeout: float = 30,
) -> Iterator[str]:
    """Yield the base URL while ``app`` serves; stop the server on exit."""
    port = port or free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="on",
        ssl_certfile=str(certfile) if certfile else None,
        ssl_keyfile=str(keyfile) if keyfile else None,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"uvicorn:{port}", daemon=True)
    thread.start()

    def started() -> bool:
        if not thread.is_alive():
            raise RuntimeError(f"uvicorn did not start on port {port}")
        return server.started

    wait_for(f"uvicorn serving on port {port}", started, timeout, every=0.01)
    scheme = "https" if certfile else "http"
    try:
        yield f"{scheme}://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout)

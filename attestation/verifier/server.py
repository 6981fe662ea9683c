"""The verifier's own HTTP endpoint: push notifications from agents, metrics, health.

``/v1/notify`` is reachable by anything on the cluster network, so it trusts nothing it is
sent: the body is capped while it arrives (a declared length past the cap is refused before a
byte of the body is read, a chunked body as soon as it passes the cap, and the connection is
closed, so the rest is never read); a push must carry a MAC under its node's push key
(``core.pushauth``, checked by ``PushGate``), so a node can wake only itself; and a node's
accepted pushes wake its rounds at most at the gate's rate.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Final

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from attestation.core.pushauth import PushFormatError, decode_push
from attestation.verifier.metrics import VerifierMetrics
from attestation.verifier.pushgate import PushGate

__all__ = ["MAX_NOTIFY_BYTES", "create_server_app"]

log = logging.getLogger(__name__)

#: A push is ~120 bytes of JSON.
MAX_NOTIFY_BYTES: Final = 4096
#: Refusals answered 401 (the sender cannot prove it is the node) or 409 (a replay).
_STATUS: Final = {"push.not_enrolled": 401, "push.bad_mac": 401, "push.replayed": 409}


class _TooLarge(Exception):
    pass


async def _capped_body(request: Request, cap: int) -> bytes:
    """The body, read while it arrives; _TooLarge as soon as it passes ``cap`` (or declares
    more). A Content-Length that lies low cannot help: the server frames the body by it."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > cap):
        raise _TooLarge
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > cap:
            raise _TooLarge
    return bytes(body)


def _problem(status: int, message: str, failure: str | None = None) -> JSONResponse:
    content = {"error": message} if failure is None else {"error": message, "reason": failure}
    # Close the connection after a refusal: the rest of a huge body is never read.
    headers = {"connection": "close"} if status == 413 else None
    return JSONResponse(content, status_code=status, headers=headers)


def create_server_app(
    push: Callable[[str], bool],
    metrics: VerifierMetrics,
    ready: Callable[[], bool],
    gate: PushGate,
) -> FastAPI:
    """``push(node)`` wakes a node's round (False: not a node this verifier attests); ``gate``
    decides which pushes may call it, and when."""
    app = FastAPI(title="trustgate verifier", docs_url=None, redoc_url=None)

    def deferred(node: str) -> None:
        gate.fired(node)
        push(node)

    @app.post("/v1/notify")
    async def notify(request: Request) -> JSONResponse:
        """An agent's "my IMA log grew": attest that node now (or as soon as its rate allows).
        Carries no evidence: a genuine push only brings a verified round forward."""
        try:
            body = await _capped_body(request, MAX_NOTIFY_BYTES)
        except _TooLarge:
            return _problem(413, f"body larger than {MAX_NOTIFY_BYTES} bytes")
        try:
            notification = decode_push(json.loads(body))
        except (ValueError, PushFormatError) as e:  # JSONDecodeError, UnicodeDecodeError
            return _problem(400, f'expected {{"node", "counter", "mac"}}: {e}')
        admission = gate.admit(notification)
        if admission.refused is not None:
            metrics.push_refusals.labels(admission.refused).inc()
            return _problem(
                _STATUS[admission.refused],
                f"push for {notification.node!r} refused: {admission.refused}",
                admission.refused,
            )
        if admission.delay > 0:
            asyncio.get_running_loop().call_later(admission.delay, deferred, notification.node)
        elif admission.wake and not push(notification.node):
            gate.forget(notification.node)  # a node this verifier no longer attests
            return _problem(404, f"unknown node {notification.node!r}")
        return JSONResponse({"accepted": notification.node}, status_code=202)

    @app.get("/healthz")
    async def healthz() -> Response:
        return Response("ok", media_type="text/plain")

    @app.get("/readyz")
    async def readyz() -> Response:
        if ready():
            return Response("ok", media_type="text/plain")
        return Response("not ready", status_code=503, media_type="text/plain")

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app

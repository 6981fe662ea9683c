"""The verifier's own HTTP endpoint: push notifications from agents, metrics, health.

``/v1/notify`` is reachable by anything on the cluster network, so it trusts nothing it is
sent: the body is capped while it arrives (a declared length past the cap is refused before a
byte of the body is read, a chunked body as soon as it passes the cap, and the connection is
closed, so the rest is never read); a push must carry a MAC under its node's push key
(``core.pushauth``, checked by ``PushGate``), so a node can wake only itself; and a node's
accepted pushes wake its rounds at most at the gate's rate.

Agents push to the Service, which picks any ready replica; a push for a node another replica
attests (``verifier.shards``) is forwarded there as it came, once (a forwarded push is never
forwarded again), at most at the gate's rate per node: the owner checks its MAC.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Final

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from attestation.core.pushauth import PushFormatError, decode_push
from attestation.core.ratelimit import TokenBucket
from attestation.verifier.metrics import VerifierMetrics
from attestation.verifier.pushgate import PushGate

__all__ = ["FORWARDED_HEADER", "MAX_NOTIFY_BYTES", "create_server_app"]

log = logging.getLogger(__name__)

#: A push is ~120 bytes of JSON.
MAX_NOTIFY_BYTES: Final = 4096
#: Marks a push one replica forwarded to another (its value: the forwarding replica).
FORWARDED_HEADER: Final = "x-trustgate-forwarded-by"
#: The owner's answers a forwarded push passes on as they are (others become 502).
_PASSED_ON: Final = frozenset({202, 400, 401, 404, 409, 413, 429})
#: Nodes whose forwarding rate is tracked at most (a flood of made-up node names).
_MAX_FORWARD_BUCKETS: Final = 100_000
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


class _Forwarder:
    """Sends a push on to the replica that attests its node, at most ``rate`` a second per
    node (``burst`` at once); past that the push is dropped (pull rounds run regardless)."""

    def __init__(self, identity: str, rate: float, burst: float) -> None:
        self._identity = identity
        self._rate, self._burst = rate, burst
        self._buckets: dict[str, TokenBucket] = {}
        self._client: httpx.AsyncClient | None = None

    async def send(self, url: str, node: str, body: bytes) -> int:
        now = time.monotonic()
        if len(self._buckets) > _MAX_FORWARD_BUCKETS:
            self._buckets.clear()
        bucket = self._buckets.get(node) or TokenBucket.full(self._rate, self._burst, now)
        self._buckets[node], delay = bucket.take(now)
        if delay > 0:
            return 429
        if self._client is None:  # peers' certificates: the Service's, not the pod IP's
            self._client = httpx.AsyncClient(timeout=2.0, verify=False)  # noqa: S501 - the owner checks the MAC
        try:
            response = await self._client.post(
                f"{url.rstrip('/')}/v1/notify", content=body,
                headers={"content-type": "application/json", FORWARDED_HEADER: self._identity},
            )  # fmt: skip
        except httpx.HTTPError as e:
            log.warning("push for %s not forwarded to %s: %s", node, url, e)
            return 502
        return response.status_code

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def create_server_app(
    push: Callable[[str], bool],
    metrics: VerifierMetrics,
    ready: Callable[[], bool],
    gate: PushGate,
    *,
    route: Callable[[str], str | None] | None = None,
    identity: str = "",
) -> FastAPI:
    """``push(node)`` wakes a node's round (False: not a node this verifier attests); ``gate``
    decides which pushes may call it, and when; ``route(node)`` names the peer that attests
    ``node`` when it is not this replica (None: this one, or nobody known)."""
    forwarder = _Forwarder(identity, gate.rate, gate.burst)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        await forwarder.aclose()  # its connections belong to this server's loop

    app = FastAPI(title="trustgate verifier", docs_url=None, redoc_url=None, lifespan=lifespan)

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
        owner = route(notification.node) if route is not None else None
        if owner is not None and FORWARDED_HEADER not in request.headers:
            status = await forwarder.send(owner, notification.node, body)
            metrics.pushes_forwarded.labels(str(status)).inc()
            # The owner's answer (a refusal included) is the agent's; unreachable: 502.
            answer = status if status in _PASSED_ON else 502
            return JSONResponse({"forwarded": notification.node, "status": status},
                                status_code=answer)  # fmt: skip
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

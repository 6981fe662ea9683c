"""The verifier's own HTTP endpoint: push notifications from agents, metrics, health."""

from __future__ import annotations

import json
from collections.abc import Callable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from attestation.verifier.metrics import VerifierMetrics

__all__ = ["create_server_app"]

_MAX_NOTIFY_BYTES = 4096


def create_server_app(
    push: Callable[[str], bool], metrics: VerifierMetrics, ready: Callable[[], bool]
) -> FastAPI:
    app = FastAPI(title="trustgate verifier", docs_url=None, redoc_url=None)

    @app.post("/v1/notify")
    async def notify(request: Request) -> JSONResponse:
        """An agent's "my IMA log grew": attest that node now. Carries no evidence, so a forged
        notification can only cause an extra (verified) round for a node that exists."""
        body = await request.body()
        if len(body) > _MAX_NOTIFY_BYTES:
            return JSONResponse({"error": "body too large"}, status_code=413)
        try:
            payload = json.loads(body)
            node = payload["node"]
            if not isinstance(node, str):
                raise TypeError("node is not a string")
        except (ValueError, KeyError, TypeError) as e:
            return JSONResponse({"error": f'expected {{"node": <name>}}: {e}'}, status_code=400)
        if not push(node):
            return JSONResponse({"error": f"unknown node {node!r}"}, status_code=404)
        return JSONResponse({"accepted": node}, status_code=202)

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

"""Hostile agents for the adversarial suite: real HTTP servers the verifier is pointed at instead of
(or in front of) a node's real agent.

``HostileAgent`` is a man in the middle (a compromised agent, or a network attacker between the
verifier and the agent: the verifier does not pin the agent's TLS certificate, by design). It
proxies to the node's real agent and, depending on ``mode``, tampers with what comes back. The
mode can change while the lab runs, so one verifier process sees an honest agent turn hostile.

``BlackHole`` is a TCP relay that can start swallowing everything: accepted, never answered.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import select
import socket
import threading
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from attestation.adapters.httpclient import unverified_tls
from attestation.lab.pki import CertFiles
from tests.support.serve import serve

__all__ = ["BlackHole", "HostileAgent", "Impersonation", "Mode"]

Mode = Literal[
    "pass",  # forward everything unchanged
    "replay",  # evidence: an earlier answer (old quote, old nonce), offset relabelled
    "flip_signature",  # evidence: one bit of the quote's signature flipped
    "foreign",  # evidence: answered by another node's agent (a quote from another TPM)
    "relay",  # identity, activation and evidence: all answered by ``other`` (another TPM's agent)
    "foreign_ek",  # identity: the EK certificate and key of a TPM from an unknown CA
    "ak_unbound",  # identity: an AK that lives in another TPM (activation must fail)
    "wrong_secret",  # activation: a made-up secret instead of what the TPM recovered
    "garbage",  # evidence: 200 with bytes that are not JSON
    "huge",  # evidence: 200 with a body larger than the verifier's cap
    "trickle",  # evidence: 200, then one byte every half second, never finishing
    "hang",  # evidence: the request is read, no answer ever comes
    "hold",  # evidence: the agent answers at once; the answer is held back until ``release``
    "http_error",  # evidence: 500
]


@dataclass(frozen=True, slots=True)
class Impersonation:
    """Identity fields taken from another TPM, as on the wire (base64; ``ak_name`` hex)."""

    ek_certificate: str = ""
    ek_public: str = ""
    ak_public: str = ""
    ak_name: str = ""


@dataclass
class HostileAgent:
    """Serve with :meth:`running`; change ``mode`` at any time (one attribute write)."""

    upstream: str
    mode: Mode = "pass"
    #: Another agent, for ``foreign`` and ``relay``.
    other: str = ""
    impersonate: Impersonation = field(default_factory=Impersonation)
    #: Body size for ``huge``.
    huge_bytes: int = 0
    #: The client certificate the lab's agents admit (the verifier's, ``SimNode.verifier_client``):
    #: the proxy forwards as the verifier would.
    client: CertFiles | None = None
    #: Requests seen per (endpoint, mode).
    seen: Counter[tuple[str, str]] = field(default_factory=Counter)
    _recorded: dict[str, Any] | None = None
    #: Hung and trickling answers end when this changes (``release``) or at shutdown.
    _generation: int = 0
    _closing: bool = False

    @contextlib.contextmanager
    def running(self) -> Iterator[str]:
        """Yield the proxy's URL (plain HTTP on loopback) while it serves."""
        self._closing = False
        with serve(self._app()) as url:
            try:
                yield url
            finally:
                self._closing = True

    def release(self) -> None:
        """End every hung or trickling answer given so far."""
        self._generation += 1

    def _released(self, generation: int) -> bool:
        return self._closing or generation != self._generation

    def _app(self) -> FastAPI:
        client: list[httpx.AsyncClient] = []

        @contextlib.asynccontextmanager
        async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
            # The lab's self-issued agent certificates are not checked (as by the verifier).
            tls = unverified_tls(self.client.cert, self.client.key) if self.client else False
            async with httpx.AsyncClient(verify=tls, timeout=10) as c:
                client.append(c)
                yield

        app = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

        async def forward(request: Request, base: str) -> httpx.Response:
            body = await request.body()
            try:
                return await client[0].request(
                    request.method,
                    f"{base}{request.url.path}",
                    content=body,
                    headers={
                        "content-type": request.headers.get("content-type", "application/json")
                    },
                )
            except httpx.TransportError as e:  # an agent not (yet) there: a bad gateway
                return httpx.Response(502, json={"error": f"{base}: {e}"})

        @app.get("/v1/identity")
        async def identity(request: Request) -> Response:
            mode = self.mode
            self.seen["identity", mode] += 1
            real = await forward(request, self.other if mode == "relay" else self.upstream)
            if mode not in ("foreign_ek", "ak_unbound") or real.status_code != 200:
                return Response(real.content, real.status_code, media_type="application/json")
            doc = real.json()
            other = self.impersonate
            if mode == "foreign_ek":
                doc["ekCertificate"], doc["ekPublic"] = other.ek_certificate, other.ek_public
            else:
                doc["akPublic"], doc["akName"] = other.ak_public, other.ak_name
            return JSONResponse(doc)

        @app.post("/v1/activate")
        async def activate(request: Request) -> Response:
            mode = self.mode
            self.seen["activate", mode] += 1
            real = await forward(request, self.other if mode == "relay" else self.upstream)
            if mode != "wrong_secret":
                return Response(real.content, real.status_code, media_type="application/json")
            return JSONResponse({"secret": base64.b64encode(os.urandom(32)).decode()})

        @app.post("/v1/evidence")
        async def evidence(request: Request) -> Response:
            return await self._evidence(request, forward)

        return app

    async def _evidence(
        self, request: Request, forward: Callable[[Request, str], Awaitable[httpx.Response]]
    ) -> Response:
        mode = self.mode
        self.seen["evidence", mode] += 1
        if mode == "hang":
            generation = self._generation
            while not self._released(generation):
                await asyncio.sleep(0.05)
            return Response(status_code=503)
        if mode == "hold":  # a verifier paused mid-round gets its (old) answer late
            generation = self._generation
            held = await forward(request, self.upstream)
            while not self._released(generation):
                await asyncio.sleep(0.05)
            return Response(held.content, held.status_code, media_type="application/json")
        if mode == "garbage":
            return Response(b"\x00\xffnot json{" + os.urandom(512), media_type="application/json")
        if mode == "http_error":
            return JSONResponse({"error": "agent exploded"}, status_code=500)
        if mode == "huge":
            return StreamingResponse(_zeros(self.huge_bytes), media_type="application/json")
        if mode == "trickle":
            trickle = self._trickle(self._generation)
            return StreamingResponse(trickle, media_type="application/json")
        real = await forward(request, self.other if mode in ("foreign", "relay") else self.upstream)
        if real.status_code != 200:
            return Response(real.content, real.status_code, media_type="application/json")
        doc = real.json()
        if mode == "pass":
            self._recorded = doc
        elif mode == "replay" and self._recorded is not None:
            asked = json.loads(await request.body())
            doc = json.loads(json.dumps(self._recorded))
            # An attacker who knows the protocol relabels the old answer for the new offset.
            doc["ima"] = {"offset": asked["imaOffset"], "log": ""}
        elif mode == "flip_signature":
            sig = bytearray(base64.b64decode(doc["signature"]))
            sig[-1] ^= 0x01
            doc["signature"] = base64.b64encode(bytes(sig)).decode()
        return JSONResponse(doc)

    async def _trickle(self, generation: int) -> AsyncIterator[bytes]:
        yield b"{"
        while not self._released(generation):
            await asyncio.sleep(0.5)
            yield b" "


async def _zeros(size: int) -> AsyncIterator[bytes]:
    chunk = b"0" * (1 << 20)
    sent = 0
    while sent < size:
        part = chunk[: min(len(chunk), size - sent)]
        sent += len(part)
        yield part


class BlackHole:
    """A TCP relay in front of an agent that can turn into a black hole: connections (new and
    already open, TLS handshakes included) are accepted and read, and nothing ever comes back.
    What a wedged agent process or a network attacker dropping packets looks like from the
    verifier. Plain sockets and one ``select`` thread; stops with the context."""

    def __init__(self, upstream_port: int, scheme: str = "https") -> None:
        self.upstream_port = upstream_port
        self.scheme = scheme
        self.swallowing = False
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.setblocking(False)
        self.port: int = self._listener.getsockname()[1]
        self._peer: dict[socket.socket, socket.socket | None] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="black-hole", daemon=True)

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def __enter__(self) -> BlackHole:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        for sock in [self._listener, *self._peer]:
            sock.close()

    def _accept(self) -> None:
        client, _ = self._listener.accept()
        upstream = None
        if not self.swallowing:
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=2)
            except OSError:
                client.close()
                return
            self._peer[upstream] = client
        self._peer[client] = upstream

    def _drop(self, sock: socket.socket) -> None:
        other = self._peer.pop(sock, None)
        sock.close()
        if other is not None and other in self._peer:
            self._peer.pop(other, None)
            other.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            readable, _, _ = select.select([self._listener, *self._peer], [], [], 0.05)
            for sock in readable:
                if sock is self._listener:
                    self._accept()
                    continue
                try:
                    data = sock.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    self._drop(sock)
                    continue
                other = self._peer.get(sock)
                if other is not None and not self.swallowing:
                    try:
                        other.sendall(data)
                    except OSError:  # that side hung up (e.g. the verifier's cap): drop both
                        self._drop(sock)

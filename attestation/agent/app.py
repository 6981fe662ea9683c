"""The node agent's HTTP API (Starlette): identity, credential activation, evidence.

Who may call: with ``--client-ca`` (the manifests) only a caller presenting a certificate from
that CA, the verifier: anyone else fails the TLS handshake, before any HTTP or TPM work
(``cli.agent``). TPM work (quotes, activations) runs one at a time with a short queue; a request
that finds the queue full gets a 503 at once instead of waiting behind others.

Every request from outside may be wrong or hostile: bodies are capped and decoded by
``core.evidence``, bad ones get a 400 naming the field; a TPM failure is a 503 carrying
the decoded TSS return code; nothing a caller sends can stop the agent.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from attestation.adapters.httpclient import HttpClient, unverified_tls
from attestation.adapters.processmetrics import register_process_metrics
from attestation.agent import log as imalog
from attestation.agent.pushkey import PushKey
from attestation.agent.settings import AgentSettings
from attestation.agent.tpm import AkBlob, Tpm, TpmError
from attestation.core.evidence import (
    API_PREFIX,
    Evidence,
    EvidenceFormatError,
    EvidenceQuery,
    Identity,
    decode_activate_request,
    decode_evidence_request,
    decode_log_request,
    encode_evidence,
    encode_identity,
    encode_log_page,
)

__all__ = ["create_app", "load_or_create_ak"]

log = logging.getLogger(__name__)

#: Largest answer read from the verifier's /v1/notify (it is ignored; see ``push``).
_NOTIFY_ANSWER_BYTES = 64 * 1024
#: Pages of the log read and encoded at once: with ``page_bytes`` this bounds the agent's memory
#: (a page costs about 4x its size while it is encoded), however many callers ask.
_PAGES_AT_ONCE = 2


class _Busy(Exception):
    pass


class _TpmQueue:
    """TPM commands one at a time (a TPM executes one command at a time anyway), at most
    ``waiting`` callers queued behind the running one, served in arrival order; a caller past
    that is refused at once (503) rather than queued without bound."""

    def __init__(self, waiting: int) -> None:
        self._lock = asyncio.Lock()
        self._waiting = waiting
        self._queued = 0

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self._queued > self._waiting:
            raise _Busy
        self._queued += 1
        try:
            async with self._lock:
                yield
        finally:
            self._queued -= 1


def _problem(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


async def _json_body(request: Request, cap: int) -> Any:
    """The request's JSON, or EvidenceFormatError naming what is wrong with it."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip()
    if ctype != "application/json":
        raise EvidenceFormatError(f"content-type must be application/json, got {ctype!r}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > cap:
            raise EvidenceFormatError(f"body larger than {cap} bytes")
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise EvidenceFormatError(f"body is not JSON: {e}") from None


def load_or_create_ak(tpm: Tpm, settings: AgentSettings) -> AkBlob:
    """Reuse the AK blob kept in the state dir, or create one. The blob is wrapped by this TPM's
    EK: if the TPM changed, loading it fails and a new AK is made (the verifier re-enrolls)."""
    path = settings.state_dir / "ak.blob"
    if path.exists():
        blob = AkBlob.from_bytes(path.read_bytes())
        candidate = Tpm(tpm.tcti, ek_alg=tpm.ek_alg, ak=blob)
        try:
            candidate.quote(b"\x00" * 20, [10])
            return blob
        except TpmError as e:
            log.warning("stored AK unusable (%s); creating a new one", e)
    blob = tpm.create_ak()
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(blob.to_bytes())
    tmp.replace(path)
    return blob


@dataclass(frozen=True, slots=True)
class _Enrolled:
    """What the lifespan sets up before the first request: the TPM with its AK, the identity."""

    tpm: Tpm
    identity: Identity


def create_app(settings: AgentSettings, *, tpm: Tpm | None = None) -> Starlette:
    """Wires the parts together: the lifespan enrolls (loads or creates the AK) before the first
    request and runs the push to the verifier; the routes answer from what it enrolled.

    Starlette, not FastAPI: every body is decoded by ``core.evidence`` and no route needs
    FastAPI's validation or OpenAPI, while FastAPI and pydantic cost the agent ~14 MiB of
    resident memory on every node (bench/agent_bench.py)."""
    tpm = tpm or Tpm(settings.tcti, ek_alg="ecc" if settings.ek_alg == "ecc" else "rsa")
    log_file = imalog.ImaLogFile(settings.ima_log)
    registry = CollectorRegistry()
    register_process_metrics(registry, "agent")
    requests = Counter(
        "trustgate_agent_requests",
        "Agent API requests",
        ["endpoint", "status"],
        registry=registry,
    )
    enrolled: list[_Enrolled] = []  # filled once by the lifespan
    key = PushKey(settings.state_dir / "push.key")
    lifespan = _lifespan(settings, tpm, log_file, enrolled, key)
    routes = [
        *_attestation_routes(settings, log_file, enrolled, requests, key),
        *_probe_routes(registry),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


def _lifespan(
    settings: AgentSettings,
    tpm: Tpm,
    log_file: imalog.ImaLogFile,
    enrolled: list[_Enrolled],
    key: PushKey,
) -> Callable[[Starlette], AbstractAsyncContextManager[None]]:
    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        if settings.client_ca is None:
            log.warning(
                "no --client-ca: anyone who reaches port %d may ask for quotes", settings.port
            )
        enrolled.append(await _enroll(tpm, settings))
        async with _pushing(settings, log_file, key):
            yield

    return lifespan


async def _enroll(tpm: Tpm, settings: AgentSettings) -> _Enrolled:
    ak = await asyncio.to_thread(load_or_create_ak, tpm, settings)
    tpm_with_ak = Tpm(tpm.tcti, ek_alg=tpm.ek_alg, ak=ak)
    identity = Identity(
        node=settings.node_name,
        ek_certificate=await asyncio.to_thread(tpm.ek_certificate),
        ek_public=await asyncio.to_thread(tpm.ek_public),
        ak_public=ak.public,
        ak_name=tpm_with_ak.ak_name(),
    )
    return _Enrolled(tpm_with_ak, identity)


@contextlib.asynccontextmanager
async def _pushing(
    settings: AgentSettings, log_file: imalog.ImaLogFile, key: PushKey
) -> AsyncIterator[None]:
    """While the agent runs, tell the verifier whenever the log grows (if ``notify_url`` is set),
    signed with the push key of the latest activation (``core.pushauth``): the verifier acts
    only on pushes for a node signed with that node's key. None before the first activation."""
    if not settings.notify_url:
        yield
        return
    # The notification carries no evidence, only "look at me now"; its answer does not matter,
    # so the verifier's certificate is not checked here. The small client (not httpx) also keeps
    # the agent lean: httpx pulls in ~5 MiB of imports (rich, click).
    client = HttpClient(
        unverified_tls(),
        deadline=1.0,
        connect_timeout=1.0,
        max_peers=1,
        user_agent="trustgate-agent",
    )
    notify_url = settings.notify_url

    async def push(_end: int) -> None:
        payload = key.sign(settings.node_name)
        if payload is None:
            return  # not enrolled yet: the verifier would refuse it
        body = json.dumps(payload).encode()
        await client.request("POST", notify_url, "", body, _NOTIFY_ANSWER_BYTES)

    task = asyncio.create_task(imalog.watch(log_file, settings.watch_interval, push))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await client.aclose()


async def _answer(
    route: str,
    requests: Counter,
    work: Callable[[], Awaitable[JSONResponse]],
    bad_request: tuple[type[Exception], ...] = (EvidenceFormatError,),
) -> JSONResponse:
    """One route's answer and its count: 400 naming what is wrong with the request, 503 for
    what the TPM or the log could not do now (busy, a TSS return code, an unreadable log)."""
    try:
        answer = await work()
    except bad_request as e:
        answer = _problem(400, str(e))
    except _Busy:
        answer = _problem(503, "busy: too many TPM requests waiting")
    except TpmError as e:
        answer = _problem(503, str(e), tpmReturnCode=e.rc)
    except imalog.ImaLogError as e:
        answer = _problem(503, str(e))
    requests.labels(route, str(answer.status_code)).inc()
    return answer


def _attestation_routes(
    settings: AgentSettings,
    log_file: imalog.ImaLogFile,
    enrolled: list[_Enrolled],
    requests: Counter,
    key: PushKey,
) -> list[Route]:
    """Identity, credential activation and evidence: what the verifier asks of the agent."""
    cap = settings.max_body_bytes
    pages = asyncio.Semaphore(_PAGES_AT_ONCE)
    tpm_queue = _TpmQueue(settings.tpm_queue)

    def activate_and_keep(blob: bytes, secret: bytes) -> bytes:
        recovered = enrolled[0].tpm.activate_credential(blob, secret)
        key.activated(recovered)
        return recovered

    page = functools.partial(
        log_file.read_page, max_bytes=settings.page_bytes, column_size=settings.log_column_size
    )

    async def identity(_request: Request) -> JSONResponse:
        requests.labels("identity", "200").inc()
        return JSONResponse(encode_identity(enrolled[0].identity))

    async def activate(request: Request) -> JSONResponse:
        async def work() -> JSONResponse:
            blob, secret = decode_activate_request(await _json_body(request, cap))
            async with tpm_queue.slot():
                recovered = await asyncio.to_thread(activate_and_keep, blob, secret)
            return JSONResponse({"secret": base64.b64encode(recovered).decode()})

        # a blob the TPM cannot even parse is the caller's fault too
        return await _answer("activate", requests, work, (EvidenceFormatError, ValueError))

    async def evidence(request: Request) -> JSONResponse:
        async def work() -> JSONResponse:
            query = decode_evidence_request(await _json_body(request, cap))
            async with tpm_queue.slot(), pages:
                found = await asyncio.to_thread(_collect, enrolled[0].tpm, page, query)
                return JSONResponse(encode_evidence(found))

        return await _answer("evidence", requests, work)

    async def log_page(request: Request) -> JSONResponse:
        """The next page of the log, after the one an evidence answer carried (no quote)."""

        async def work() -> JSONResponse:
            offset = decode_log_request(await _json_body(request, cap))
            async with pages:
                data, more = await asyncio.to_thread(page, offset)
                return JSONResponse(encode_log_page(offset, data, more=more))

        return await _answer("log", requests, work)

    return [
        Route(f"{API_PREFIX}/identity", identity, methods=["GET"]),
        Route(f"{API_PREFIX}/activate", activate, methods=["POST"]),
        Route(f"{API_PREFIX}/evidence", evidence, methods=["POST"]),
        Route(f"{API_PREFIX}/log", log_page, methods=["POST"]),
    ]


def _collect(tpm: Tpm, page: Callable[[int], tuple[bytes, bool]], query: EvidenceQuery) -> Evidence:
    """Quote first, then read the log's first page: the log may run ahead of the quote (the
    verifier handles that), never behind it. Both in one worker-thread hop: each hop costs about
    as much CPU as reading a steady-state log."""
    quote = tpm.quote(query.nonce, query.pcrs, query.banks)
    log, more = page(query.ima_offset)
    return Evidence(
        quote=quote.attest,
        signature=quote.signature,
        pcr_values=quote.pcr_values,
        ima_offset=query.ima_offset,
        ima_log=log,
        more=more,
    )


def _probe_routes(registry: CollectorRegistry) -> list[Route]:
    async def healthz(_request: Request) -> Response:
        return Response("ok", media_type="text/plain")

    async def metrics(_request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]

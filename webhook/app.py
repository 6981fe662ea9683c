"""The webhook's HTTP shell: FastAPI routes, body limits, the fail-closed net, metrics, lifespan.

Decisions are pure (``mutate``, ``validate``); this module only reads the body within limits,
decodes it, asks the decision, and encodes the answer. The two families at the edge stay apart:
a body that is not an AdmissionReview is a bad request (400/413/415, the API server then applies
failurePolicy Fail), while any unexpected error while deciding becomes an AdmissionReview with
``allowed: false`` and code 500 for that request's UID.

``create_app`` only wires the parts together: the admission routes, the probe and metrics routes,
and the lifespan that runs the NodeAttestation and Namespace watches and the TLS renewals.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from time import perf_counter
from typing import Any

import uvicorn
from fastapi import APIRouter, FastAPI
from fastapi import Request as HttpRequest
from fastapi import Response as HttpResponse

from attestation.adapters.informer import ListWatchSource, list_watch
from attestation.core.clock import Clock, utcnow
from attestation.core.nodeattestation import Binding
from webhook.metrics import Metrics
from webhook.mutate import mutate
from webhook.namespaces import NamespaceLookup, NamespaceModes
from webhook.protect import network_function
from webhook.responses import Response, complete, errored
from webhook.reviews import Request, ReviewError, decode_review
from webhook.settings import WebhookSettings
from webhook.tls import SelfManagedTls
from webhook.trustview import PodCache, PodLookup, TrustView
from webhook.validate import ValidationPolicy, binding_pod, validate

__all__ = ["create_app", "server_config"]

log = logging.getLogger(__name__)

JSON = "application/json"
Decide = Callable[[Request], Awaitable[Response]]


class _Refused(Exception):
    """A request refused before it is decoded: HTTP status, metric label, message."""

    def __init__(self, status: int, decision: str, message: str) -> None:
        super().__init__(message)
        self.status, self.decision, self.message = status, decision, message


def create_app(
    settings: WebhookSettings,
    *,
    trust_source: ListWatchSource,
    pod_lookup: PodLookup,
    tls: SelfManagedTls | None = None,
    clock: Clock = utcnow,
    namespace_source: ListWatchSource | None = None,
    namespace_lookup: NamespaceLookup | None = None,
) -> FastAPI:
    """``trust_source``: the NodeAttestations, watched into the trust view for as long as the app
    runs. ``tls``: the self-managed certificate (``webhook.tls``), prepared before the server
    starts; the lifespan runs its caBundle and renewal checks, and readiness waits for them.
    ``namespace_source``: the Namespaces, watched for their enforcement label (without it every
    namespace is in ``settings.enforcement_default``, or the legacy ``audit_namespaces``'
    warn); ``namespace_lookup`` answers for one the watch has not delivered yet."""
    binding = Binding(settings.cluster_id, max_validity=settings.max_verdict_validity)
    view = TrustView(settings.verifier_keys, binding)
    modes = NamespaceModes(
        settings.enforcement_default, legacy_warn=settings.audit_namespaces,
        lookup=namespace_lookup, timeout_seconds=settings.pod_lookup_timeout_seconds,
    )  # fmt: skip
    # The file the server loads its certificate from: /metrics exports when it expires.
    served = tls.cert_file if tls is not None else settings.tls_cert_file or None
    metrics = Metrics(certificate_file=Path(served) if served else None)
    decisions = _Decisions(settings, view, pod_lookup, clock, modes)
    watches = [(trust_source, view.replace, view.apply, "NodeAttestation")]
    if namespace_source is not None:
        watches.append((namespace_source, modes.replace, modes.apply, "Namespace"))
    lifespan = _lifespan(watches, settings.watch_retry_seconds, tls)
    app = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.trust_view = view
    app.include_router(_admission_routes(decisions, metrics, settings.max_body_bytes))
    synced = (view, modes) if namespace_source is not None else (view,)
    app.include_router(_probe_routes(synced, tls, metrics))
    return app


#: (source, on_list, on_event, name) of one list/watch loop.
_Watch = tuple[ListWatchSource, Callable[..., object], Callable[[str, Any], object], str]


def _lifespan(
    watches: Sequence[_Watch], retry_seconds: float, tls: SelfManagedTls | None
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """The app's background work: the list/watch loops, each in a thread (the client is
    synchronous), and the TLS renewals as a task."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        stop = threading.Event()
        watchers = [
            threading.Thread(
                target=list_watch,
                args=(source, stop, on_list, on_event),
                kwargs={"retry_seconds": retry_seconds, "name": name},
                name=f"trustgate-{name.lower()}-watch",
                daemon=True,  # a watch blocked in the API server must not hold up shutdown
            )
            for source, on_list, on_event, name in watches
        ]
        for watcher in watchers:
            watcher.start()
        renewals = asyncio.create_task(tls.run()) if tls is not None else None
        try:
            yield
        finally:
            stop.set()
            if renewals is not None:
                renewals.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await renewals
            for watcher in watchers:
                watcher.join(timeout=1.0)

    return lifespan


class _Decisions:
    """The two admission decisions with what they read: the rules, the trust view, the pods."""

    def __init__(
        self,
        settings: WebhookSettings,
        view: TrustView,
        pod_lookup: PodLookup,
        clock: Clock,
        modes: NamespaceModes,
    ) -> None:
        rules = settings.protection
        self._rules = rules
        self._modes = modes
        self._policy = ValidationPolicy(
            settings.verifier_username,
            rules,
            allow_ephemeral_containers=settings.allow_ephemeral_containers,
        )
        self._view = view
        self._clock = clock
        self._pods = PodCache(
            pod_lookup,
            keep=lambda pod: network_function(pod, rules) is not None,
            ttl_seconds=settings.pod_cache_ttl_seconds,
            maxsize=settings.pod_cache_size,
            timeout_seconds=settings.pod_lookup_timeout_seconds,
        )

    async def mutate(self, review: Request) -> Response:
        if not review.is_pod or review.operation != "CREATE":
            return mutate(review, self._rules)
        return mutate(review, self._rules, await self._modes.mode(review.namespace))

    async def validate(self, review: Request) -> Response:
        bound = None
        ref = binding_pod(review)
        if ref is not None:
            bound = await self._pods.get(*ref)
        elif review.is_pod and review.operation == "CREATE" and review.object is not None:
            self._pods.remember(review.namespace, review.name, review.object)
        mode = await self._modes.mode(review.namespace)
        return validate(
            review, trust=self._view.nodes, now=self._clock(), policy=self._policy,
            bound_pod=bound, mode=mode,
        )  # fmt: skip


def _admission_routes(decisions: _Decisions, metrics: Metrics, max_body_bytes: int) -> APIRouter:
    router = APIRouter()

    @router.post("/mutate")
    async def mutate_route(request: HttpRequest) -> HttpResponse:
        return await _serve(request, "mutate", decisions.mutate, metrics, max_body_bytes)

    @router.post("/validate")
    async def validate_route(request: HttpRequest) -> HttpResponse:
        return await _serve(request, "validate", decisions.validate, metrics, max_body_bytes)

    return router


def _probe_routes(
    synced: Sequence[TrustView | NamespaceModes], tls: SelfManagedTls | None, metrics: Metrics
) -> APIRouter:
    router = APIRouter()

    @router.get("/healthz")
    async def healthz() -> HttpResponse:
        return HttpResponse(b"ok", media_type="text/plain")

    @router.get("/readyz")
    async def readyz() -> HttpResponse:
        for view in synced:
            if not view.synced:
                what = "NodeAttestations" if isinstance(view, TrustView) else "Namespaces"
                return HttpResponse(f"{what} not synced yet".encode(), 503, media_type="text/plain")
        if tls is not None and not tls.ready:
            return HttpResponse(b"caBundle not in place yet", 503, media_type="text/plain")
        return HttpResponse(b"ok", media_type="text/plain")

    @router.get("/metrics")
    async def metrics_route() -> HttpResponse:
        return HttpResponse(metrics.exposition(), media_type="text/plain; version=0.0.4")

    return router


async def _serve(
    request: HttpRequest, endpoint: str, decide: Decide, metrics: Metrics, limit: int
) -> HttpResponse:
    """One admission request: read and decode the body, decide, answer, count."""
    started = perf_counter()
    decision: str
    try:
        review = decode_review(await _read_json_body(request, limit))
        answer = await _decide_fail_closed(review, decide)
        status, decision = 200, str(answer.decision)
        body = json.dumps(complete(review.uid, answer), separators=(",", ":")).encode()
    except _Refused as e:
        status, decision, body = e.status, e.decision, _error_body(e.message)
    except ReviewError as e:
        status, decision, body = 400, "bad_request", _error_body(str(e))
    metrics.observe(endpoint, decision, perf_counter() - started)
    return HttpResponse(body, status_code=status, media_type=JSON)


async def _decide_fail_closed(review: Request, decide: Decide) -> Response:
    try:
        return await decide(review)
    except ReviewError:
        raise
    except TimeoutError:
        log.warning("review %s: pod lookup timed out; failing closed", review.uid)
        return errored(500, "trustgate webhook: pod lookup timed out; failing closed")
    except Exception:
        log.exception("review %s: unexpected error; failing closed", review.uid)
        return errored(500, "trustgate webhook: internal error; failing closed")


async def _read_json_body(request: HttpRequest, limit: int) -> bytes:
    """The body, refusing anything but JSON and anything over ``limit`` bytes before it is all in
    memory (the Content-Length may be absent or lie, so the stream is counted too)."""
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != JSON:
        raise _Refused(415, "unsupported_media_type", f"Content-Type must be {JSON}")
    declared = request.headers.get("content-length")
    if declared is not None and not declared.isdigit():
        raise _Refused(400, "bad_request", "Content-Length is not a number")
    if declared is not None and int(declared) > limit:
        raise _Refused(413, "too_large", f"body larger than {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _Refused(413, "too_large", f"body larger than {limit} bytes")
    return bytes(body)


def _error_body(message: str) -> bytes:
    return json.dumps({"message": message}).encode()


def server_config(
    app: FastAPI, settings: WebhookSettings, *, tls: SelfManagedTls | None = None
) -> uvicorn.Config:
    """uvicorn over TLS: the API server only calls webhooks over HTTPS. With ``tls`` (prepared),
    its files and its context factory, which keeps the SSLContext for renewals."""
    if tls is not None:
        cert, key = str(tls.cert_file), str(tls.key_file)
    elif settings.tls_cert_file and settings.tls_key_file:
        cert, key = settings.tls_cert_file, settings.tls_key_file
    else:
        raise ValueError("the webhook needs tls_cert_file and tls_key_file, or self-managed TLS")
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        ssl_certfile=cert,
        ssl_keyfile=key,
        ssl_context_factory=tls.ssl_context_factory if tls is not None else None,
        # --client-ca: a caller without a certificate from that CA fails the handshake.
        ssl_ca_certs=settings.client_ca_file or None,
        ssl_cert_reqs=ssl.CERT_REQUIRED if settings.client_ca_file else ssl.CERT_NONE,
        log_level="warning",
        # One line per review would cost more than the decision; /metrics counts them instead.
        access_log=False,
        timeout_keep_alive=30,  # the API server reuses connections across reviews
        lifespan="on",
    )

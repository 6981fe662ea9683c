"""Admission latency under a bounded, paced load: the real webhook app versus a bare handler.

Each app runs under uvicorn with TLS in its own process on 127.0.0.1; this process paces realistic
pods/binding AdmissionReviews at a fixed rate over HTTP keep-alive connections (open loop: a slow
server does not slow the schedule). Latency is measured inside the server by the same ASGI
wrapper for both apps (from the request's arrival at the app to the last body byte), so the two
numbers compare the handlers, not the load generator.

    .venv/bin/python bench/admission_bench.py                 # 1,000 req/s for 30 s per app
    .venv/bin/python bench/admission_bench.py --seconds 5     # shorter

Goal: real p99 <= 5 ms, <= 1.5x the bare handler's p99, and zero errors.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import random
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI, Request, Response

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attestation.lab.pki import CertificateAuthority
from attestation.lab.process import free_port

VECTORS = Path(__file__).resolve().parents[1] / "tests" / "unit" / "vectors" / "admission"
NODES = 50
PODS = 1000
CONNECTIONS = 8  # the API server keeps a few connections to a webhook open
UNTRUSTED_EVERY = 10  # one node in ten has an Untrusted verdict: its bindings are denied
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


# -- the server side -----------------------------------------------------------------------------


class Timed:
    """Wraps an ASGI app: records each /validate request's time inside the app; GET
    /__bench/latencies returns and clears them."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.samples: list[float] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/__bench/latencies":
            body = json.dumps(self.samples).encode()
            self.samples = []
            headers = [(b"content-length", str(len(body)).encode())]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()

        async def timed_send(message: Message) -> None:
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                self.samples.append(time.perf_counter() - started)

        await self.app(scope, receive, timed_send)


def pod_name(i: int) -> str:
    return f"upf-{i}"


def node_name(i: int) -> str:
    return f"worker-{i}"


def bare_app() -> ASGIApp:
    app = FastAPI()

    @app.post("/validate")
    async def validate(request: Request) -> Response:
        uid = json.loads(await request.body())["request"]["uid"]
        answer = {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "response": {"uid": uid, "allowed": True},
        }
        return Response(json.dumps(answer).encode(), media_type="application/json")

    @app.get("/readyz")
    async def ready() -> Response:
        return Response(b"ok")

    return app


def real_app() -> ASGIApp:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from attestation.core.clock import format_time
    from attestation.core.nodeattestation import bind
    from attestation.core.signing import public_keys_by_id, sign_status
    from webhook.app import create_app
    from webhook.settings import WebhookSettings

    key = Ed25519PrivateKey.generate()
    now = datetime.now(UTC)
    items = []
    for n in range(NODES):
        state = "Untrusted" if n % UNTRUSTED_EVERY == 0 else "Trusted"
        status = {
            "state": state,
            "reason": "bench",
            "verifiedAt": format_time(now),
            "expiresAt": format_time(now + timedelta(hours=1)),
            "quoteDigest": "00" * 32,
            "akName": "000b" + "11" * 32,
            "failures": [],
            "pods": [],
            "sequence": 1,
        }
        bound = bind(status, "bench-cluster", f"uid-{n}")  # as the verifier signs it
        items.append(
            {
                "metadata": {"name": node_name(n), "uid": f"uid-{n}"},
                "status": sign_status(node_name(n), bound, key),
            }
        )
    template = json.loads((VECTORS / "validate-pods-create-upf-0.json").read_text())
    pods = {}
    for i in range(PODS):
        pod = copy.deepcopy(template["request"]["object"])
        pod["metadata"].update(name=pod_name(i), uid=f"00000000-0000-0000-0000-{i:012d}")
        pods[("5gc", pod_name(i))] = pod

    class Source:
        def list(self) -> tuple[Sequence[dict[str, Any]], str]:
            return items, "1"

        def watch(self, resource_version: str) -> Iterator[tuple[str, dict[str, Any]]]:
            del resource_version
            time.sleep(3600)  # a quiet watch: nothing changes during the run
            yield from ()

    def lookup(namespace: str, name: str) -> dict[str, Any] | None:
        return pods.get((namespace, name))

    settings = WebhookSettings(
        verifier_keys=public_keys_by_id([key.public_key()]),
        cluster_id="bench-cluster",
        max_verdict_validity=timedelta(hours=2),  # the verdicts above last the whole run
    )
    return create_app(settings, trust_source=Source(), pod_lookup=lookup)


def serve(kind: str, port: int, cert: str, key: str) -> None:
    import uvicorn

    app = Timed(real_app() if kind == "real" else bare_app())
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        ssl_certfile=cert,
        ssl_keyfile=key,
        log_level="warning",
        access_log=False,
        timeout_keep_alive=60,
    )


# -- the load generator --------------------------------------------------------------------------


def reviews(count: int) -> list[bytes]:
    template = json.loads((VECTORS / "validate-pods-binding-create-upf-0.json").read_text())
    rng = random.Random(7)
    out = []
    for n in range(count):
        review = copy.deepcopy(template)
        i = rng.randrange(PODS)
        review["request"].update(uid=f"bench-{n}", name=pod_name(i))
        review["request"]["object"]["metadata"].update(
            name=pod_name(i), uid=f"00000000-0000-0000-0000-{i:012d}"
        )
        review["request"]["object"]["target"]["name"] = node_name(rng.randrange(NODES))
        out.append(json.dumps(review).encode())
    return out


async def load(
    port: int, tls: ssl.SSLContext, rate: float, seconds: float, bodies: list[bytes]
) -> dict[str, Any]:
    """Paced requests over ``CONNECTIONS`` keep-alive TLS connections with a minimal HTTP/1.1
    client (httpx costs more CPU per request than the server under test)."""
    errors: list[str] = []
    client_latency: list[float] = []
    decisions = {"allowed": 0, "denied": 0}
    total = int(rate * seconds)
    tickets = iter(range(total))
    start = time.perf_counter() + 0.1
    lag = [0.0]

    async def connection() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls)
        try:
            for n in tickets:
                delay = start + n / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                else:
                    lag[0] = max(lag[0], -delay)
                body = bodies[n % len(bodies)]
                sent = time.perf_counter()
                writer.write(
                    b"POST /validate HTTP/1.1\r\nHost: webhook\r\n"
                    b"Content-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
                )
                try:
                    status, answer = await _response(reader)
                    if status != 200 or answer["response"].get("status", {}).get("code") == 500:
                        errors.append(f"{status} {answer}"[:200])
                    else:
                        decisions["allowed" if answer["response"]["allowed"] else "denied"] += 1
                except (OSError, ValueError, KeyError, asyncio.IncompleteReadError) as e:
                    errors.append(repr(e))
                    return
                client_latency.append(time.perf_counter() - sent)
        finally:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(CONNECTIONS)))
    elapsed = time.perf_counter() - start
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls)
    writer.write(b"GET /__bench/latencies HTTP/1.1\r\nHost: webhook\r\n\r\n")
    _, server = await _response(reader)
    writer.close()
    return {
        "sent": total,
        "elapsed": elapsed,
        "errors": errors,
        "server": server,
        "client": client_latency,
        "max_lag": lag[0],
        "decisions": decisions,
    }


async def _response(reader: asyncio.StreamReader) -> tuple[int, Any]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = next(
        int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length:")
    )
    return status, json.loads(await reader.readexactly(length))


def quantile(samples: list[float], q: float) -> float:
    return statistics.quantiles(samples, n=1000, method="inclusive")[int(q * 1000) - 1]


def run(kind: str, args: argparse.Namespace, cert: Path, key: Path, ca: Path) -> dict[str, Any]:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--serve",
            kind,
            "--port",
            str(port),
            "--cert",
            str(cert),
            "--key",
            str(key),
        ],
    )
    tls = ssl.create_default_context(cafile=str(ca))
    base = f"https://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/readyz", verify=tls, timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"{kind} server did not become ready")
            time.sleep(0.1)
        bodies = reviews(5000)
        asyncio.run(load(port, tls, args.rate, min(2.0, args.seconds), bodies))  # warm-up
        return asyncio.run(load(port, tls, args.rate, args.seconds, bodies))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def report(kind: str, result: dict[str, Any]) -> float:
    server, client = result["server"], result["client"]
    p50, p99 = quantile(server, 0.5) * 1e3, quantile(server, 0.99) * 1e3
    print(
        f"{kind:5s} sent={result['sent']} rate={result['sent'] / result['elapsed']:.0f}/s "
        f"errors={len(result['errors'])} server p50={p50:.3f}ms p99={p99:.3f}ms "
        f"max={max(server) * 1e3:.3f}ms | client p50={quantile(client, 0.5) * 1e3:.2f}ms "
        f"p99={quantile(client, 0.99) * 1e3:.2f}ms | pacing lag max={result['max_lag'] * 1e3:.1f}ms"
        f" | {result['decisions']}"
    )
    for error in result["errors"][:5]:
        print("   error:", error)
    return p99


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="requests per second")
    parser.add_argument("--seconds", type=float, default=30.0, help="measured duration per app")
    parser.add_argument("--serve", choices=["real", "bare"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--cert", help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port, args.cert, args.key)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        ca = CertificateAuthority.create(Path(tmp), "bench-ca")
        cert = ca.issue(Path(tmp), "server", "127.0.0.1", ip_addresses=("127.0.0.1",), server=True)
        print(
            f"pods/binding reviews at {args.rate:.0f} req/s for {args.seconds:.0f} s per app, "
            "uvicorn+TLS in a separate process, latency measured in the server"
        )
        results = {k: run(k, args, cert.cert, cert.key, ca.files.cert) for k in ("bare", "real")}
    bare_p99 = report("bare", results["bare"])
    real_p99 = report("real", results["real"])
    ratio = real_p99 / bare_p99
    errors = sum(len(r["errors"]) for r in results.values())
    ok = real_p99 <= 5.0 and ratio <= 1.5 and errors == 0
    print(
        f"real/bare p99 ratio {ratio:.2f} (goal <= 1.5), real p99 {real_p99:.3f} ms "
        f"(goal <= 5), errors {errors} -> {'PASS' if ok else 'MISS'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""The webhook app over HTTP: in-process through httpx's ASGI transport, and once through a real
uvicorn TLS server on 127.0.0.1. Inputs are data: NodeAttestation dicts and a table of pods."""

from __future__ import annotations

import copy
import functools
import json
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio.from_thread
import httpx
import pytest
import uvicorn
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attestation.adapters.informer import ListWatchSource
from attestation.core.signing import public_keys_by_id
from attestation.lab.pki import CertificateAuthority
from attestation.lab.process import free_port
from tests.unit.webhook_data import CLUSTER, NOW, PodTable, StaticSource, node_attestation, vector
from webhook.app import create_app, server_config
from webhook.settings import WebhookSettings
from webhook.trustview import PodLookup

KEY = Ed25519PrivateKey.from_private_bytes(b"k" * 32)
SETTINGS = WebhookSettings(cluster_id=CLUSTER, verifier_keys=public_keys_by_id([KEY.public_key()]))
JSON_HEADERS = {"content-type": "application/json"}
UPF_POD = vector("validate-pods-create-upf-0")["request"]["object"]
NGINX_POD = vector("validate-pods-create-nginx")["request"]["object"]
BINDING = "validate-pods-binding-create-upf-0"


class Client:
    """Synchronous calls into one event loop that runs the app's lifespan (the watch thread)."""

    def __init__(self, portal: anyio.from_thread.BlockingPortal, client: httpx.AsyncClient):
        self._portal, self._client = portal, client

    def post(self, path: str, body: bytes | Mapping[str, Any], **headers: str) -> httpx.Response:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        call = functools.partial(
            self._client.post, path, content=content, headers=headers or JSON_HEADERS
        )
        return self._portal.call(call)

    def get(self, path: str) -> httpx.Response:
        return self._portal.call(self._client.get, path)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 10
        while self.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, "NodeAttestations never synced"
            time.sleep(0.01)


@contextmanager
def running(app: FastAPI) -> Iterator[Client]:
    with anyio.from_thread.start_blocking_portal() as portal:
        lifespan = portal.wrap_async_context_manager(app.router.lifespan_context(app))
        with lifespan:
            transport = httpx.ASGITransport(app=app)
            client = httpx.AsyncClient(transport=transport, base_url="http://webhook")
            try:
                yield Client(portal, client)
            finally:
                portal.call(client.aclose)


def make_app(
    nodes: Sequence[dict[str, Any]] = (),
    pods: PodLookup | None = None,
    *,
    source: ListWatchSource | None = None,
    settings: WebhookSettings = SETTINGS,
    clock: Callable[[], datetime] = lambda: NOW,
) -> FastAPI:
    return create_app(
        settings,
        trust_source=source or StaticSource(nodes),
        pod_lookup=pods if pods is not None else PodTable([UPF_POD, NGINX_POD]),
        clock=clock,
    )


@pytest.fixture
def client() -> Iterator[Client]:
    with running(make_app([node_attestation("worker-1", KEY)])) as c:
        c.wait_ready()
        yield c


def review_of(resp: httpx.Response) -> dict[str, Any]:
    assert resp.status_code == 200, resp.text
    doc: dict[str, Any] = resp.json()
    assert doc["apiVersion"] == "admission.k8s.io/v1"
    assert doc["kind"] == "AdmissionReview"
    return doc["response"]  # type: ignore[no-any-return]


def test_mutate_patches_nf_pod(client: Client) -> None:
    review = vector("mutate-pods-create-upf-0")
    answer = review_of(client.post("/mutate", review))
    assert answer["uid"] == review["request"]["uid"]
    assert answer["allowed"] is True
    assert answer["patchType"] == "JSONPatch"


def test_mutate_leaves_other_pods_alone(client: Client) -> None:
    answer = review_of(client.post("/mutate", vector("mutate-pods-create-nginx")))
    assert answer["allowed"] is True
    assert "patch" not in answer


def test_binding_to_attested_node_is_allowed(client: Client) -> None:
    answer = review_of(client.post("/validate", vector(BINDING)))
    assert answer == {"uid": vector(BINDING)["request"]["uid"], "allowed": True}


def test_binding_to_unattested_node_is_denied(client: Client) -> None:
    review = vector(BINDING)
    review["request"]["object"]["target"]["name"] = "worker-2"
    answer = review_of(client.post("/validate", review))
    assert answer["allowed"] is False
    assert answer["status"] == {"code": 403, "message": "node worker-2 has no NodeAttestation"}


def test_binding_of_unknown_pod_fails_closed(client: Client) -> None:
    review = vector(BINDING)
    review["request"]["name"] = "ghost"
    answer = review_of(client.post("/validate", review))
    assert answer["allowed"] is False
    assert answer["status"]["code"] == 404


def test_watch_events_change_the_decision() -> None:
    untrusted = node_attestation("worker-1", KEY, state="Untrusted", reason="ima.policy.x")
    source = StaticSource([node_attestation("worker-1", KEY)], [("MODIFIED", untrusted)])
    app = make_app(source=source)
    with running(app) as c:
        c.wait_ready()
        deadline = time.monotonic() + 10
        while app.state.trust_view.nodes["worker-1"].state != "Untrusted":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        answer = review_of(c.post("/validate", vector(BINDING)))
        assert answer["allowed"] is False
        assert (
            answer["status"]["message"] == "node worker-1 is not attested (Untrusted): ima.policy.x"
        )
        assert source.lists >= 1


def test_binding_uses_the_pod_seen_at_create_without_an_api_call() -> None:
    table = PodTable()
    with running(make_app([node_attestation("worker-1", KEY)], table)) as c:
        c.wait_ready()
        assert review_of(c.post("/validate", vector("validate-pods-create-upf-0")))["allowed"]
        assert review_of(c.post("/validate", vector(BINDING)))["allowed"]
        assert table.calls == 0
        # Another pod under the same name (new UID) is looked up again.
        review = vector(BINDING)
        review["request"]["object"]["metadata"]["uid"] = "00000000-0000-0000-0000-000000000000"
        assert review_of(c.post("/validate", review))["status"]["code"] == 404
        assert table.calls == 1


def failing_lookup(namespace: str, name: str) -> dict[str, Any] | None:
    raise ConnectionError(f"API server unreachable looking up {namespace}/{name}")


def test_unexpected_error_fails_closed_with_the_uid() -> None:
    with running(make_app([node_attestation("worker-1", KEY)], failing_lookup)) as c:
        c.wait_ready()
        review = vector(BINDING)
        answer = review_of(c.post("/validate", review))
        assert answer["uid"] == review["request"]["uid"]
        assert answer["allowed"] is False
        assert answer["status"]["code"] == 500
        assert "failing closed" in answer["status"]["message"]


def slow_lookup(namespace: str, name: str) -> dict[str, Any] | None:
    threading.Event().wait(1.0)  # an API server that does not answer in time
    return None


def test_pod_lookup_timeout_fails_closed() -> None:
    settings = WebhookSettings(
        cluster_id=CLUSTER, verifier_keys=SETTINGS.verifier_keys, pod_lookup_timeout_seconds=0.05
    )
    with running(make_app([], slow_lookup, settings=settings)) as c:
        c.wait_ready()
        answer = review_of(c.post("/validate", vector(BINDING)))
        assert answer["allowed"] is False
        assert "timed out" in answer["status"]["message"]


def test_deprecated_audit_namespace_is_warn_mode() -> None:
    settings = WebhookSettings(
        cluster_id=CLUSTER,
        verifier_keys=SETTINGS.verifier_keys,
        audit_namespaces=frozenset({"5gc"}),
    )
    with running(make_app([], settings=settings)) as c:
        c.wait_ready()
        answer = review_of(c.post("/validate", vector(BINDING)))
        assert answer["allowed"] is True
        assert answer["warnings"] == [
            "trustgate warn mode, would deny: node worker-1 has no NodeAttestation"
        ]


@pytest.mark.parametrize("allow", [False, True])
def test_ephemeral_containers_follow_the_setting(allow: bool) -> None:
    settings = WebhookSettings(
        cluster_id=CLUSTER, verifier_keys=SETTINGS.verifier_keys, allow_ephemeral_containers=allow
    )
    with running(make_app([node_attestation("worker-1", KEY)], settings=settings)) as c:
        c.wait_ready()
        answer = review_of(
            c.post("/validate", vector("validate-pods-ephemeralcontainers-update-upf-0"))
        )
        assert answer["allowed"] is allow
        if not allow:
            assert (
                "ephemeral container debugger in upf pod 5gc/upf-0" in answer["status"]["message"]
            )


class BlockedSource(StaticSource):
    def __init__(self) -> None:
        super().__init__([])
        self.release = threading.Event()

    def list(self) -> tuple[Sequence[dict[str, Any]], str]:
        self.release.wait(10)
        return super().list()


def test_ready_only_after_sync_and_healthy_before() -> None:
    source = BlockedSource()
    with running(make_app(source=source)) as c:
        assert c.get("/healthz").status_code == 200
        assert c.get("/readyz").status_code == 503
        source.release.set()
        c.wait_ready()


def test_metrics_count_decisions(client: Client) -> None:
    client.post("/mutate", vector("mutate-pods-create-upf-0"))
    client.post("/validate", b"{}")
    text = client.get("/metrics").text
    assert 'trustgate_webhook_requests_total{decision="patched",endpoint="mutate"} 1.0' in text
    assert (
        'trustgate_webhook_requests_total{decision="bad_request",endpoint="validate"} 1.0' in text
    )
    assert "trustgate_webhook_request_seconds_bucket" in text


def _without(path: Sequence[str]) -> bytes:
    review = vector(BINDING)
    target = review
    for part in path[:-1]:
        target = target[part]
    del target[path[-1]]
    return json.dumps(review).encode()


def _with(path: Sequence[str], value: Any) -> bytes:
    review = vector(BINDING)
    target = review
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    return json.dumps(review).encode()


@pytest.mark.parametrize(
    ("body", "headers", "status", "message"),
    [
        (b"{}", {"content-type": "text/plain"}, 415, "Content-Type must be application/json"),
        (b"{}", {}, 415, "Content-Type"),
        (b"x" * (SETTINGS.max_body_bytes + 1), JSON_HEADERS, 413, "larger than 1048576"),
        (b"not json", JSON_HEADERS, 400, "body is not JSON"),
        (b"\xff\xfe", JSON_HEADERS, 400, "body is not JSON"),
        (b"[1]", JSON_HEADERS, 400, "not an object"),
        (_with(["apiVersion"], "admission.k8s.io/v1beta1"), JSON_HEADERS, 400, "apiVersion"),
        (_with(["kind"], "Pod"), JSON_HEADERS, 400, "kind is 'Pod'"),
        (_without(["request"]), JSON_HEADERS, 400, "request is missing"),
        (_without(["request", "uid"]), JSON_HEADERS, 400, "request.uid is missing"),
        (_with(["request", "uid"], ""), JSON_HEADERS, 400, "request.uid is empty"),
        (_with(["request", "uid"], 7), JSON_HEADERS, 400, "request.uid is a int"),
        (_with(["request", "operation"], "PATCH"), JSON_HEADERS, 400, "request.operation"),
        (_with(["request", "dryRun"], "yes"), JSON_HEADERS, 400, "request.dryRun"),
        (_with(["request", "object"], [1]), JSON_HEADERS, 400, "request.object"),
        (_with(["request", "userInfo", "groups"], "a"), JSON_HEADERS, 400, "groups"),
        (_without(["request", "resource"]), JSON_HEADERS, 400, "request.resource is missing"),
        (_with(["request", "object", "target"], "worker-1"), JSON_HEADERS, 400, "object.target"),
    ],
)
def test_bad_requests(
    client: Client, body: bytes, headers: dict[str, str], status: int, message: str
) -> None:
    for path in ("/validate", "/mutate"):
        resp = client.post(path, body, **headers) if headers else _no_type(client, path, body)
        if path == "/mutate" and status == 400 and "object.target" in message:
            assert resp.status_code == 200  # /mutate never reads a Binding's target
            continue
        assert resp.status_code == status, resp.text
        assert message in resp.json()["message"]


def _no_type(client: Client, path: str, body: bytes) -> httpx.Response:
    call = functools.partial(client._client.post, path, content=body)
    return client._portal.call(call)


# -- hypothesis: no body makes the webhook crash or fail for an unhandled reason ------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


def _paths(doc: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = [prefix] if prefix else []
    if isinstance(doc, dict):
        for key, value in doc.items():
            out += _paths(value, (*prefix, key))
    return out


BASES = [vector(s) for s in (BINDING, "validate-pods-update-upf-gated", "mutate-pods-create-upf-0")]
PATHS = sorted({p for b in BASES for p in _paths(b) if "managedFields" not in p})


@st.composite
def mangled_reviews(draw: st.DrawFn) -> bytes:
    review = copy.deepcopy(draw(st.sampled_from(BASES)))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(PATHS))
        target = review
        for part in path[:-1]:
            if not isinstance(target, dict) or part not in target:
                break
            target = target[part]
        else:
            if isinstance(target, dict):
                target[path[-1]] = draw(JSON_VALUES)
    return json.dumps(review).encode()


@pytest.fixture(scope="module")
def shared_client() -> Iterator[Client]:
    with running(make_app([node_attestation("worker-1", KEY)])) as c:
        c.wait_ready()
        yield c


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    body=st.binary(max_size=64)
    | JSON_VALUES.map(lambda v: json.dumps(v).encode())
    | mangled_reviews()
)
def test_malformed_bodies_never_crash(shared_client: Client, body: bytes) -> None:
    for path in ("/validate", "/mutate"):
        resp = shared_client.post(path, body)
        assert resp.status_code in (200, 400), resp.text
        if resp.status_code == 200:
            answer = review_of(resp)
            assert answer["uid"] == json.loads(body)["request"]["uid"]
            # Decisions handle every shape they accept; the generic fail-closed net is not hit.
            assert answer.get("status", {}).get("code") != 500, answer
        else:
            assert resp.json()["message"]


# -- a real uvicorn TLS server -------------------------------------------------------------------


def test_served_by_uvicorn_over_tls(tmp_path: Path) -> None:
    ca = CertificateAuthority.create(tmp_path, "test-ca")
    cert = ca.issue(tmp_path, "webhook", "127.0.0.1", ip_addresses=("127.0.0.1",), server=True)
    settings = WebhookSettings(
        cluster_id=CLUSTER,
        verifier_keys=SETTINGS.verifier_keys,
        host="127.0.0.1",
        port=free_port(),
        tls_cert_file=str(cert.cert),
        tls_key_file=str(cert.key),
    )
    app = make_app([node_attestation("worker-1", KEY)], settings=settings)
    config = server_config(app, settings)
    config.log_level = "warning"
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            assert thread.is_alive()
            time.sleep(0.01)
        tls = ssl.create_default_context(cafile=str(ca.files.cert))
        base = f"https://127.0.0.1:{settings.port}"
        with httpx.Client(base_url=base, verify=tls, timeout=5) as http:
            while http.get("/readyz").status_code != 200:
                assert time.monotonic() < deadline
                time.sleep(0.01)
            answer = review_of(http.post("/validate", json=vector(BINDING)))
            assert answer["allowed"] is True
            review = vector(BINDING)
            review["request"]["object"]["target"]["name"] = "worker-3"
            answer = review_of(http.post("/validate", json=review))
            assert answer["status"]["message"] == "node worker-3 has no NodeAttestation"
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{base}/healthz", verify=ssl.create_default_context())
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    assert not thread.is_alive()


def test_server_config_needs_tls() -> None:
    with pytest.raises(ValueError, match="tls_cert_file"):
        server_config(make_app(), SETTINGS)

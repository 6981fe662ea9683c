"""Bad input, fuzzed with hypothesis, at the two HTTP edges an attacker can reach: the agent's API
(a real agent in front of a real swtpm, over real HTTP) and the webhook's AdmissionReview
endpoints (the real app under uvicorn). Only documented answers may come back: 200, a 4xx that
names the problem, the agent's 503 for a TPM refusal, or a fail-closed review; never a 500 from
an unhandled exception, never a hang (every call has a 5 s client timeout). ~20 s.

The parsers' own property tests live in tests/unit; these aim at what the parsers let through:
values of the right type that the TPM, the log file or the decisions then choke on, and pods of
any shape, for which the webhook's security invariants must still hold.
"""

from __future__ import annotations

import base64
import json
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from attestation.agent.app import create_app as create_agent
from attestation.agent.settings import AgentSettings
from attestation.core.evidence import decode_evidence, decode_evidence_request, decode_identity
from attestation.core.names import (
    ATTESTED_LABEL,
    NF_LABEL,
    PREFIX,
    SCHEDULING_GATE,
    TRUST_STATE_ANNOTATION,
)
from attestation.core.quote import verify_quote
from attestation.core.signing import public_keys_by_id
from attestation.core.types import HashAlg
from attestation.lab.ima_writer import ImaWriter
from tests.support.serve import serve
from tests.support.swtpm import LocalCa, SwTpm
from tests.unit.webhook_data import CLUSTER, PodTable, StaticSource, apply_patch, node_attestation
from webhook.app import create_app as create_webhook
from webhook.mutate import ATTESTED_EXPRESSION
from webhook.protect import ProtectionRules, network_function, trustgate_marks
from webhook.settings import WebhookSettings

FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
TIMEOUT = httpx.Timeout(5.0)

# -- the agent -------------------------------------------------------------------------------------


@dataclass
class Agent:
    client: httpx.Client
    tpm: SwTpm


@pytest.fixture(scope="module")
def agent(swtpm_ca: LocalCa, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    work = tmp_path_factory.mktemp("fuzz-agent")
    tpm = SwTpm(swtpm_ca, work / "tpm")
    tpm.start()
    writer = ImaWriter(work / "measurements", extend=tpm.extend_pcr, template="ima-cgpath")
    writer.boot_aggregate(tpm.read_pcrs(list(range(8)), (HashAlg.SHA256,))[HashAlg.SHA256])
    settings_ = AgentSettings(
        node_name="fuzz-1", tcti=tpm.tcti, ima_log=writer.log_path, state_dir=work / "state"
    )
    try:
        with (
            serve(create_agent(settings_)) as url,
            httpx.Client(base_url=url, timeout=TIMEOUT) as client,
        ):
            yield Agent(client, tpm)
    finally:
        tpm.stop(orderly=False)


def _agent_ok(resp: httpx.Response) -> None:
    assert resp.status_code in (200, 400, 503), (resp.status_code, resp.text)
    if resp.status_code != 200:
        assert resp.json()["error"], resp.text  # names the problem


HUGE_INTS = st.integers() | st.sampled_from([2**31, 2**63 - 1, 2**63, 2**64, 2**70, -1, -(2**63)])
JSONISH = st.none() | st.booleans() | HUGE_INTS | st.floats(allow_nan=False) | st.text(max_size=12)
BANKS = st.sampled_from(["sha1", "sha256", "sha384", "sha512", "sm3_256", "", "SHA256"])


@st.composite
def evidence_requests(draw: st.DrawFn) -> dict[str, Any]:
    """Mostly well-formed (so the TPM and the log file are reached), sometimes wild."""
    wild = draw(st.integers(0, 3)) == 0
    body: dict[str, Any] = {
        "nonce": draw(
            st.binary(min_size=0, max_size=80).map(bytes.hex) | st.text(max_size=10) | JSONISH
            if wild
            else st.binary(min_size=20, max_size=64).map(bytes.hex)
        ),
        "pcrs": draw(
            st.lists(st.integers(-2, 30) | JSONISH, max_size=30) | JSONISH
            if wild
            else st.lists(st.integers(0, 23), max_size=24)
        ),
        "banks": draw(
            st.lists(BANKS | JSONISH, max_size=4) | JSONISH if wild else st.lists(BANKS, max_size=3)
        ),
        "imaOffset": draw(HUGE_INTS | JSONISH if wild else HUGE_INTS),
    }
    for key in draw(st.sets(st.sampled_from(sorted(body)), max_size=2)):
        del body[key]
    return body


@FUZZ
@given(body=evidence_requests())
@example(body={"nonce": "00" * 20, "imaOffset": 2**63})  # was a 500: seek() OverflowError
def test_agent_evidence_answers_every_request_as_documented(
    agent: Agent, body: dict[str, Any]
) -> None:
    content = json.dumps(body).encode()  # Infinity and friends included, as Python writes them
    headers = {"content-type": "application/json"}
    _agent_ok(agent.client.post("/v1/evidence", content=content, headers=headers))


@FUZZ
@given(
    blob=st.binary(max_size=300),
    secret=st.binary(max_size=600),
    raw=st.none() | st.binary(max_size=200),
    content_type=st.sampled_from(["application/json", "text/plain", ""]),
)
def test_agent_activate_answers_every_request_as_documented(
    agent: Agent, blob: bytes, secret: bytes, raw: bytes | None, content_type: str
) -> None:
    body = raw
    if body is None:
        request = {"credentialBlob": base64.b64encode(blob).decode(),
                   "encryptedSecret": base64.b64encode(secret).decode()}  # fmt: skip
        body = json.dumps(request).encode()
    resp = agent.client.post("/v1/activate", content=body, headers={"content-type": content_type})
    _agent_ok(resp)
    if resp.status_code == 503:
        assert "tpmReturnCode" in resp.json()


def _framed(body: bytes) -> str:
    """``body`` as a TPM2B (u16 size, then the bytes), base64: it unmarshals, so the request
    reaches the TPM, which then refuses it."""
    return base64.b64encode(len(body).to_bytes(2, "big") + body).decode()


#: Requests that pass the decoders and fail in the TPM or the log: the error paths that would
#: leak a transient handle (swtpm holds about three) or wedge the agent if one forgot to clean up.
BAD_BURST: list[tuple[str, dict[str, Any]]] = [
    *[("/v1/activate", {"credentialBlob": _framed(os.urandom(66)),
                        "encryptedSecret": _framed(os.urandom(256))})] * 8,
    *[("/v1/evidence", {"nonce": "00" * 20, "pcrs": list(range(24)),
                        "banks": ["sha1", "sha256", "sha384", "sha512"]})] * 4,
    *[("/v1/evidence", {"nonce": "11" * 64, "imaOffset": 2**62})] * 4,
]  # fmt: skip


def test_agent_still_quotes_after_the_fuzzing(agent: Agent) -> None:
    """No TPM handle leaked, nothing wedged: after a burst of requests its TPM refuses (run
    here, so the test holds on its own, whatever ran before), an honest request still gets a
    quote that verifies with the agent's AK."""
    refused = 0
    for path, body in BAD_BURST:
        resp = agent.client.post(path, json=body)
        _agent_ok(resp)
        refused += resp.status_code == 503
    assert refused >= 8, "the burst must reach the TPM's error paths, not stop at the decoders"
    nonce = os.urandom(32)
    resp = agent.client.post("/v1/evidence", json={"nonce": nonce.hex(), "pcrs": [0, 10]})
    assert resp.status_code == 200, resp.text
    query = decode_evidence_request({"nonce": nonce.hex(), "pcrs": [0, 10]})
    evidence = decode_evidence(resp.json(), query)
    ak_public = decode_identity(agent.client.get("/v1/identity").json()).ak_public
    verdict = verify_quote(
        evidence.quote, evidence.signature, ak_public, nonce, evidence.pcr_values
    )
    assert verdict.ok, verdict


def test_agent_refuses_bodies_past_its_cap(agent: Agent) -> None:
    big = b'{"nonce": "' + b"0" * (1 << 20) + b'"}'
    resp = agent.client.post(
        "/v1/evidence", content=big, headers={"content-type": "application/json"}
    )
    assert resp.status_code == 400
    assert "larger than" in resp.json()["error"]


# -- the webhook ----------------------------------------------------------------------------------

KEY = Ed25519PrivateKey.generate()
VERIFIER = "system:serviceaccount:trustgate-system:trustgate-verifier"


@pytest.fixture(scope="module")
def webhook() -> Iterator[httpx.Client]:
    app = create_webhook(
        WebhookSettings(cluster_id=CLUSTER, verifier_keys=public_keys_by_id([KEY.public_key()])),
        trust_source=StaticSource([node_attestation("worker-1", KEY)]),
        pod_lookup=PodTable(),
    )
    with serve(app) as url, httpx.Client(base_url=url, timeout=TIMEOUT) as client:
        yield client


RULES = ProtectionRules()
NF_VALUES = st.sampled_from(["upf", "open5gs-upfd", "free5gc-smf", "oai-amf", "AMF", "upf1"])
NF_KEYS = st.sampled_from(["nf", "app", "app.kubernetes.io/name", "component", NF_LABEL])
LABEL_KEYS = st.sampled_from(["tier", "release", ATTESTED_LABEL, f"{PREFIX}x"])
EXPRESSIONS = st.lists(
    st.fixed_dictionaries(
        {"key": st.sampled_from(["zone", ATTESTED_LABEL, "kubernetes.io/hostname"]),
         "operator": st.sampled_from(["In", "NotIn", "Exists"]),
         "values": st.lists(st.sampled_from(["a", "true", "false"]), max_size=2)}
    ),
    max_size=3,
)  # fmt: skip
TERMS = st.lists(
    st.fixed_dictionaries(
        {}, optional={"matchExpressions": EXPRESSIONS, "matchFields": st.just([])}
    ),
    max_size=3,
)
AFFINITY = st.none() | st.fixed_dictionaries(
    {},
    optional={
        "nodeAffinity": st.none() | st.fixed_dictionaries(
            {}, optional={"requiredDuringSchedulingIgnoredDuringExecution": st.none()
                          | st.fixed_dictionaries({"nodeSelectorTerms": TERMS})},
        ),
        "podAffinity": st.just({}),
    },
)  # fmt: skip


@st.composite
def nf_pods(draw: st.DrawFn) -> dict[str, Any]:
    labels = draw(st.dictionaries(LABEL_KEYS, st.text(max_size=6), max_size=2))
    labels[draw(NF_KEYS)] = draw(NF_VALUES)  # recognisable as a network function
    metadata: dict[str, Any] = {"name": "p", "namespace": "core", "labels": labels}
    if draw(st.booleans()):
        metadata["annotations"] = draw(
            st.dictionaries(st.sampled_from([TRUST_STATE_ANNOTATION, f"{PREFIX}reason", "x"]),
                            st.sampled_from(["trusted", "pending", ""]), max_size=2)
        )  # fmt: skip
    spec: dict[str, Any] = {"containers": [{"name": "c", "image": "i"}]}
    affinity = draw(AFFINITY)
    if affinity is not None:
        spec["affinity"] = affinity
    gates = draw(st.none() | st.lists(st.sampled_from([{"name": "other"}]), max_size=1))
    if gates is not None:
        spec["schedulingGates"] = gates
    if draw(st.booleans()):
        spec["nodeName"] = draw(st.sampled_from(["worker-1", "worker-2"]))
    return {"metadata": metadata, "spec": spec}


def _review(operation: str, pod: dict[str, Any], old: dict[str, Any] | None, user: str) -> Any:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "u-1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "operation": operation, "namespace": "core", "name": "p",
            "userInfo": {"username": user}, "object": pod, "oldObject": old,
        },
    }  # fmt: skip


def _answer(resp: httpx.Response) -> dict[str, Any]:
    assert resp.status_code in (200, 400), resp.text
    if resp.status_code == 400:
        assert resp.json()["message"]
        return {}
    answer: dict[str, Any] = resp.json()["response"]
    assert answer["uid"] == "u-1"
    assert answer.get("status", {}).get("code") != 500, answer  # the fail-closed net not hit
    return answer


@FUZZ
@given(pod=nf_pods())
def test_mutated_nf_pod_cannot_reach_an_unattested_node(webhook: httpx.Client, pod: Any) -> None:
    """Whatever its affinity and gates, an NF pod comes out of /mutate labelled, pending, gated
    (unless pinned, which /validate checks) and with the attested-node requirement in every
    nodeSelectorTerm (terms are ORed: one term without it would be an escape)."""
    answer = _answer(webhook.post("/mutate", json=_review("CREATE", pod, None, "tenant")))
    if not answer:
        return
    assert answer["allowed"] is True
    patch = json.loads(base64.b64decode(answer["patch"])) if "patch" in answer else []
    out = apply_patch(pod, patch)
    nf = out["metadata"]["labels"][NF_LABEL]
    assert nf in ("upf", "smf", "amf")
    # The verifier's marks a creator brought along are gone; only the two /mutate sets remain.
    assert trustgate_marks(out) == {
        f"label {NF_LABEL}": nf,
        f"annotation {TRUST_STATE_ANNOTATION}": "pending",
    }
    gates = [g["name"] for g in out["spec"].get("schedulingGates") or []]
    assert (SCHEDULING_GATE in gates) != bool(out["spec"].get("nodeName"))
    required = out["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]
    assert required["nodeSelectorTerms"]
    for term in required["nodeSelectorTerms"]:
        assert ATTESTED_EXPRESSION in term["matchExpressions"], term


@FUZZ
@given(old=nf_pods(), new=nf_pods(), user=st.sampled_from(["tenant", VERIFIER]))
def test_trustgate_fields_change_only_by_the_verifier(
    webhook: httpx.Client, old: Any, new: Any, user: str
) -> None:
    answer = _answer(webhook.post("/validate", json=_review("UPDATE", new, old, user)))
    if not answer:
        return

    def mine(pod: Any) -> Any:
        meta = pod["metadata"]
        fields = {**meta.get("labels", {}), **meta.get("annotations", {})}
        gated = any(g["name"] == SCHEDULING_GATE for g in pod["spec"].get("schedulingGates") or [])
        return {k: v for k, v in fields.items() if k.startswith(PREFIX)}, gated

    if user != VERIFIER and mine(old) != mine(new):
        assert answer["allowed"] is False, answer
    # The pod's NF identity is fixed at creation, for every user (the verifier's included).
    if network_function(old, RULES) != network_function(new, RULES):
        assert answer["allowed"] is False, answer
    if not answer["allowed"]:
        assert answer["status"]["code"] == 403
        assert answer["status"]["message"]


@pytest.mark.parametrize(
    ("headers", "body", "status"),
    [
        ({"content-type": "application/json"}, b"[" * 100_000, 400),  # nesting past recursion
        ({"content-type": "application/json"}, b'{"a": 1e999999}', 400),
        ({"content-type": "application/json"}, b"\xff\xfe{}", 400),
        ({"content-type": "application/json"}, b" " * (2 << 20), 413),
        ({"content-type": "text/yaml"}, b"{}", 415),
    ],
)
def test_webhook_http_abuse_gets_documented_errors(
    webhook: httpx.Client, headers: dict[str, str], body: bytes, status: int
) -> None:
    for path in ("/mutate", "/validate"):
        resp = webhook.post(path, content=body, headers=headers)
        assert resp.status_code == status, resp.text
        assert resp.json()["message"]


def test_webhook_refuses_a_declared_huge_body_before_reading_it(webhook: httpx.Client) -> None:
    """A Content-Length of 10^30 with two bytes behind it: refused at once, not awaited."""
    port = webhook.base_url.port
    assert port is not None
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(
            b"POST /validate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + b"9" * 30 + b"\r\n\r\n{}"
        )
        status_line = conn.recv(4096).split(b"\r\n", 1)[0]
    assert status_line.split()[1] in (b"400", b"413"), status_line

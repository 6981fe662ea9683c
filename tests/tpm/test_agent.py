"""The node agent over real HTTP in front of a real swtpm and an IMA log written like the kernel's:
identity, credential activation (enrollment) and evidence that the pure core verifies."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from attestation.agent.app import create_app
from attestation.agent.log import whole_entries
from attestation.agent.settings import AgentSettings
from attestation.core import enroll
from attestation.core.evidence import (
    MIN_PAGE_BYTES,
    EvidenceQuery,
    decode_activate_response,
    decode_evidence,
    decode_identity,
    decode_log_page,
    encode_activate_request,
    encode_evidence_request,
    encode_log_request,
)
from attestation.core.quote import verify_quote
from attestation.core.types import HashAlg
from attestation.lab.ima_writer import ImaWriter, build_log, systemd_pod_cgroup
from tests.support.serve import serve
from tests.support.swtpm import SwTpm

UPF_UID = "7c5b2a8e-1f0d-4b8e-9a3c-2d4e6f8a0b1c"


@dataclass
class RunningAgent:
    url: str
    client: httpx.Client
    writer: ImaWriter
    tpm: SwTpm


@pytest.fixture
def agent(swtpm: SwTpm, tmp_path: Path) -> Iterator[RunningAgent]:
    log_path = tmp_path / "binary_runtime_measurements"
    writer = ImaWriter(log_path, extend=swtpm.extend_pcr, template="ima-cgpath")
    writer.boot_aggregate(swtpm.read_pcrs(list(range(8)), (HashAlg.SHA256,))[HashAlg.SHA256])
    settings = AgentSettings(
        node_name="worker-1", tcti=swtpm.tcti, ima_log=log_path, state_dir=tmp_path / "state"
    )
    with serve(create_app(settings)) as url, httpx.Client(base_url=url, timeout=10) as client:
        yield RunningAgent(url, client, writer, swtpm)


def _evidence(agent: RunningAgent, offset: int = 0) -> tuple[EvidenceQuery, httpx.Response]:
    query = EvidenceQuery(nonce=os.urandom(32), ima_offset=offset)
    return query, agent.client.post("/v1/evidence", json=encode_evidence_request(query))


def test_identity_enrollment_and_activation(agent: RunningAgent) -> None:
    identity = decode_identity(agent.client.get("/v1/identity").json())
    assert identity.node == "worker-1"
    secret = os.urandom(32)
    cred = enroll.make_credential(identity.ek_public, identity.ak_name, secret)
    answer = agent.client.post(
        "/v1/activate",
        json=encode_activate_request(cred.credential_blob, cred.encrypted_secret),
    )
    assert answer.status_code == 200, answer.text
    assert decode_activate_response(answer.json()) == secret


def test_evidence_verifies_and_log_reaches_quoted_pcr(agent: RunningAgent) -> None:
    identity = decode_identity(agent.client.get("/v1/identity").json())
    agent.writer.measure("/usr/bin/upf", b"upf v1", cgroup_path=systemd_pod_cgroup(UPF_UID, "c1"))
    query, response = _evidence(agent)
    assert response.status_code == 200, response.text
    evidence = decode_evidence(response.json(), query)
    result = verify_quote(
        evidence.quote,
        evidence.signature,
        identity.ak_public,
        query.nonce,
        evidence.pcr_values,
        None,
    )
    assert result.ok, result.failures
    assert evidence.ima_log == agent.writer.log_path.read_bytes()
    assert evidence.pcr_values[HashAlg.SHA256][10] == agent.writer.pcr10[HashAlg.SHA256]


def test_evidence_from_offset_carries_only_new_entries(agent: RunningAgent) -> None:
    size = agent.writer.log_path.stat().st_size
    agent.writer.measure("/usr/bin/nc", b"netcat")
    query, response = _evidence(agent, offset=size)
    evidence = decode_evidence(response.json(), query)
    assert evidence.ima_log == agent.writer.log_path.read_bytes()[size:]


@pytest.mark.parametrize(
    ("body", "content_type", "needle"),
    [
        (b"{}", "application/json", "missing field 'nonce'"),
        (b'{"nonce": "abcd"}', "application/json", "at least 20 bytes"),
        (b'{"nonce": "zz"}', "application/json", "not hex"),
        (b"not json", "application/json", "not JSON"),
        (b'{"nonce": "' + b"00" * 32 + b'", "pcrs": [99]}', "application/json", "PCR index"),
        (b'{"nonce": "' + b"00" * 32 + b'", "banks": ["md5"]}', "application/json", "md5"),
        (b'{"nonce": "' + b"00" * 32 + b'"}', "text/plain", "content-type"),
        (b'{"nonce": "' + b"00" * 32 + b'", "imaOffset": -1}', "application/json", "negative"),
        (b"[" * 70000, "application/json", "larger than"),
    ],
)
def test_bad_requests_get_400_naming_the_problem(
    agent: RunningAgent, body: bytes, content_type: str, needle: str
) -> None:
    response = agent.client.post(
        "/v1/evidence", content=body, headers={"content-type": content_type}
    )
    assert response.status_code == 400
    assert needle in response.json()["error"]
    assert agent.client.get("/healthz").status_code == 200


def test_garbage_credential_is_400_and_tpm_refusal_is_503(agent: RunningAgent) -> None:
    junk = {
        "credentialBlob": base64.b64encode(b"\x00\x05abc").decode(),
        "encryptedSecret": base64.b64encode(b"xx").decode(),
    }
    assert agent.client.post("/v1/activate", json=junk).status_code == 400
    identity = decode_identity(agent.client.get("/v1/identity").json())
    wrong_name = b"\x00\x0b" + os.urandom(32)  # a credential for some other AK
    cred = enroll.make_credential(identity.ek_public, wrong_name, os.urandom(32))
    answer = agent.client.post(
        "/v1/activate",
        json=encode_activate_request(cred.credential_blob, cred.encrypted_secret),
    )
    assert answer.status_code == 503
    assert answer.json()["tpmReturnCode"] != 0


def test_tpm_gone_is_503_and_agent_keeps_serving(agent: RunningAgent) -> None:
    agent.tpm.stop(orderly=False)
    _, response = _evidence(agent)
    assert response.status_code == 503
    assert "TPM" in response.json()["error"]
    agent.tpm.start()
    _, response = _evidence(agent)
    assert response.status_code == 200


def test_a_long_log_comes_in_pages_of_whole_entries(swtpm: SwTpm, tmp_path: Path) -> None:
    """The agent answers with at most ``page_bytes`` of whole entries and says whether more
    follow; ``/v1/log`` serves the next pages (no quote); together they are the whole log."""
    log_path = tmp_path / "binary_runtime_measurements"
    log_path.write_bytes(build_log(12000, template="ima-cgpath", column_alg=HashAlg.SHA1).binary)
    raw = log_path.read_bytes()
    assert len(raw) > 2 * MIN_PAGE_BYTES
    settings = AgentSettings(
        node_name="worker-1", tcti=swtpm.tcti, ima_log=log_path, state_dir=tmp_path / "state",
        page_bytes=MIN_PAGE_BYTES,
    )  # fmt: skip
    with serve(create_app(settings)) as url, httpx.Client(base_url=url, timeout=10) as client:
        query = EvidenceQuery(nonce=os.urandom(32))
        answer = client.post("/v1/evidence", json=encode_evidence_request(query))
        evidence = decode_evidence(answer.json(), query)
        pages, offset, more = [evidence.ima_log], len(evidence.ima_log), evidence.more
        while more:
            page = client.post("/v1/log", json=encode_log_request(offset))
            assert page.status_code == 200, page.text
            log, more = decode_log_page(page.json(), offset)
            pages.append(log)
            offset += len(log)
        assert b"".join(pages) == raw
        assert len(pages) == 3
        assert all(0 < len(p) <= MIN_PAGE_BYTES for p in pages)
        assert all(whole_entries(p, 20) == len(p) for p in pages)
        past_the_end = client.post("/v1/log", json=encode_log_request(len(raw) + 10))
        assert decode_log_page(past_the_end.json(), len(raw) + 10) == (b"", False)
        bad = client.post("/v1/log", json={"imaOffset": "0"})
        assert bad.status_code == 400
        assert "imaOffset: expected int" in bad.json()["error"]

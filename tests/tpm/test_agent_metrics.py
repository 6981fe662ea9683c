"""A real ``trustgate agent`` process in front of swtpm, scraped as Prometheus scrapes it: its
/metrics carries the process (its own RSS, CPU, file descriptors), the interpreter and
``trustgate_build_info``, and its resident memory stays within the agent's budget (issue 11:
agent RSS <= 60 MB) after enrolling and answering evidence requests."""

from __future__ import annotations

import os
import platform
import time
import urllib.request
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from attestation.core.evidence import EvidenceQuery, encode_evidence_request
from attestation.core.names import BUILD_INFO_METRIC
from attestation.core.types import HashAlg
from attestation.lab.ima_writer import ImaWriter
from attestation.lab.node import trustgate_exe
from attestation.lab.process import ManagedProcess, free_port
from tests.support.swtpm import SwTpm

#: The agent's memory budget: a DaemonSet on every node of a 5G core must stay small.
AGENT_RSS_BUDGET_BYTES = 60_000_000


def _healthy(url: str) -> bool:
    with urllib.request.urlopen(f"{url}/healthz", timeout=1) as resp:  # noqa: S310 - loopback
        return bool(resp.read() == b"ok")


@pytest.fixture
def agent_process(swtpm: SwTpm, tmp_path: Path) -> Iterator[tuple[str, int, float]]:
    """The agent as the DaemonSet runs it (its own process, the console script)."""
    writer = ImaWriter(tmp_path / "ima.log", extend=swtpm.extend_pcr, template="ima-cgpath")
    writer.boot_aggregate(swtpm.read_pcrs(list(range(8)), (HashAlg.SHA256,))[HashAlg.SHA256])
    writer.measure("/usr/bin/amf", b"amf")
    port = free_port()
    argv = [
        trustgate_exe(), "agent", "--node", "worker-1", "--tcti", swtpm.tcti,
        "--ima-log", str(writer.log_path), "--state-dir", str(tmp_path / "state"),
        "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    before = time.time()
    agent = ManagedProcess("agent", argv, tmp_path / "agent.log").start()
    try:
        agent.wait_until(lambda: _healthy(url), 30, "agent healthy")
        assert agent.pid is not None
        yield url, agent.pid, before
    finally:
        agent.stop()


def _samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def test_agent_metrics_carry_its_process_and_build(
    agent_process: tuple[str, int, float],
) -> None:
    url, pid, before = agent_process
    with httpx.Client(base_url=url, timeout=10) as client:
        for _ in range(20):  # the first quotes and log pages, as a verifier's rounds ask them
            query = EvidenceQuery(nonce=os.urandom(32), ima_offset=0)
            answer = client.post("/v1/evidence", json=encode_evidence_request(query))
            assert answer.status_code == 200, answer.text
        scraped = client.get("/metrics")
    assert scraped.status_code == 200
    samples = _samples(scraped.text)

    assert samples[BUILD_INFO_METRIC] == [
        (
            {
                "component": "agent",
                "version": version("trustgate"),
                "python": platform.python_version(),
            },
            1.0,
        )
    ]
    assert samples["python_info"][0][0]["version"] == platform.python_version()
    assert samples["process_open_fds"][0][1] > 0
    assert samples["process_cpu_seconds_total"][0][1] > 0
    # The agent's own process, not this test's: it started after this test did.
    assert before - 1 <= samples["process_start_time_seconds"][0][1] <= time.time()
    rss = samples["process_resident_memory_bytes"][0][1]
    status = Path(f"/proc/{pid}/status").read_text()
    peak = next(int(line.split()[1]) * 1024 for line in status.splitlines() if "VmHWM" in line)
    assert rss <= AGENT_RSS_BUDGET_BYTES, f"agent RSS {rss / 2**20:.1f} MiB"
    assert peak <= AGENT_RSS_BUDGET_BYTES, f"agent peak RSS {peak / 2**20:.1f} MiB"


def test_agent_serves_only_its_routes(agent_process: tuple[str, int, float]) -> None:
    """No OpenAPI schema or docs pages (FastAPI served /openapi.json by default): only the
    verifier's calls and the probes; a wrong method is 405, not a TPM call."""
    url, _pid, _before = agent_process
    with httpx.Client(base_url=url, timeout=10) as client:
        for path in ("/openapi.json", "/docs", "/redoc", "/v1"):
            assert client.get(path).status_code == 404, path
        assert client.get("/v1/evidence").status_code == 405
        assert client.get("/healthz").text == "ok"

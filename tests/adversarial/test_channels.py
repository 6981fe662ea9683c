"""The verifier's push endpoint under attack: real verifier process, real swtpm nodes and agents,
the real control plane.

- Anyone on the cluster network streams a 600 MiB body at ``/v1/notify``: refused (413) after a
  few KiB, the connection closed, the verifier's memory flat.
- Root on node B (it can read B's agent state, B's push key included) pushes "attest me now"
  for node A 500 times a second: every push refused (401), A's rounds run at the pull rate.
- Root on node A pushes for A itself, correctly signed, 500 times a second: A's rounds run at
  most at the push rate (``--push-rate``) plus the pull rounds.
"""

from __future__ import annotations

import collections
import os
import re
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from attestation.adapters.httpclient import unverified_tls
from attestation.core.pushauth import encode_push
from attestation.lab.node import SimNode
from tests.support.controlplane import ClusterHandle
from tests.support.lab import Lab, lab_cluster
from tests.support.swtpm import LocalCa
from tests.support.verdicts import seen

A, B = "chan-a", "chan-b"
INTERVAL = 2.0
PUSH_RATE = 2.0
FLOOD_SECONDS = 4.0
MIB = 1 << 20


@pytest.fixture(scope="module")
def lab(
    trustgate_installed: ClusterHandle, swtpm_ca: LocalCa, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Lab]:
    workdir = tmp_path_factory.mktemp("adv-channels")
    args = ("--push-rate", str(PUSH_RATE), "--push-burst", str(PUSH_RATE))
    with lab_cluster(
        trustgate_installed, swtpm_ca, workdir, [A, B], interval=INTERVAL, max_age=30,
        verifier_args=args, trusted=[A, B],
    ) as lab:  # fmt: skip
        yield lab


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def _stream(port: int, head: bytes, total: int, chunked: bool) -> tuple[bytes, int]:
    """Send ``head``, then up to ``total`` bytes of body (1 MiB chunks), reading the answer as
    soon as one comes: (the answer's first bytes, body bytes sent by then)."""
    chunk = b"x" * MIB
    frame = b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head)
        deadline = time.monotonic() + 120
        while sent < total and time.monotonic() < deadline:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                break
            try:
                sock.sendall(frame)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
        sock.settimeout(30)
        try:
            answer = sock.recv(4096)
        except ConnectionResetError:
            answer = b""
    return answer, sent


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "content-length"])
def test_a_huge_push_body_is_refused_while_it_streams_and_memory_stays_flat(
    lab: Lab, chunked: bool
) -> None:
    verifier = lab.verifier
    assert verifier is not None
    assert verifier.pid is not None
    port = lab.system.verifier_port
    total = 600 * MIB
    framing = b"Transfer-Encoding: chunked" if chunked else b"Content-Length: %d" % total
    head = (
        b"POST /v1/notify HTTP/1.1\r\nHost: verifier\r\nContent-Type: application/json\r\n"
        + framing
        + b"\r\n\r\n"
    )
    before = _rss_mib(verifier.pid)
    answer, sent = _stream(port, head, total, chunked)
    after = _rss_mib(verifier.pid)
    print(f"\n{'chunked' if chunked else 'declared'}: answered after {sent / MIB:.0f} MiB sent;"
          f" verifier RSS {before:.0f} -> {after:.0f} MiB; {answer[:40]!r}")  # fmt: skip
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert sent <= 16 * MIB, f"{sent / MIB:.0f} MiB were sent before the refusal"
    assert after - before < 20, (before, after)
    assert seen(lab, A).state == "Trusted"  # the verifier kept serving


def _evidence_served(node: SimNode) -> int:
    """How many evidence requests ``node``'s agent answered (its /metrics, asked as the
    verifier: the agent serves nobody else)."""
    client = getattr(node, "verifier_client", None)
    tls = unverified_tls(client.cert, client.key) if client else unverified_tls()
    text = httpx.get(f"{node.agent_url}/metrics", verify=tls, timeout=5).text
    found = re.search(
        r'trustgate_agent_requests_total\{endpoint="evidence",status="200"\} (\S+)', text
    )
    return int(float(found.group(1))) if found else 0


def _push_key(node: SimNode) -> bytes:
    """What root on ``node`` can read: its agent's push key (random when there is none)."""
    path = node.workdir / "agent" / "push.key"
    return path.read_bytes() if path.exists() else os.urandom(32)


def _flood(lab: Lab, key: bytes, target: str) -> tuple[collections.Counter[int], int, float]:
    """500 pushes a second for ``target``, signed with ``key``, for FLOOD_SECONDS (longer when
    the answers come slower): the answers' status codes, how many evidence requests the
    target's agent served meanwhile, and how long it took."""
    url = f"http://127.0.0.1:{lab.system.verifier_port}/v1/notify"
    statuses: collections.Counter[int] = collections.Counter()
    rounds_before = _evidence_served(lab.nodes[target])
    counter = time.time_ns()
    with httpx.Client(timeout=5) as client:
        start = time.monotonic()
        for i in range(int(500 * FLOOD_SECONDS)):
            time.sleep(max(0.0, start + i / 500 - time.monotonic()))
            counter += 1
            answer = client.post(url, json=dict(encode_push(key, target, counter)))
            statuses[answer.status_code] += 1
        took = time.monotonic() - start
    return statuses, _evidence_served(lab.nodes[target]) - rounds_before, took


def test_another_node_cannot_push_for_a_node(lab: Lab) -> None:
    statuses, rounds, took = _flood(lab, _push_key(lab.nodes[B]), A)
    print(f"\nB pushing for A: answers {dict(statuses)}; A's rounds in {took:.1f}s: {rounds}")
    assert set(statuses) == {401}, statuses
    assert rounds <= took / INTERVAL + 2, rounds  # the pull rounds only
    assert seen(lab, A).state == "Trusted"


def test_a_nodes_own_pushes_are_rate_limited(lab: Lab) -> None:
    statuses, rounds, took = _flood(lab, _push_key(lab.nodes[A]), A)
    print(f"\nA pushing for A: answers {dict(statuses)}; A's rounds in {took:.1f}s: {rounds}")
    assert set(statuses) == {202}, statuses
    assert rounds <= PUSH_RATE * (took + 1) + took / INTERVAL + 2, rounds
    assert seen(lab, A).state == "Trusted"


def test_pushes_still_wake_the_node_at_once(lab: Lab) -> None:
    """The honest path: the agent's own push (log growth) brings a round forward."""
    before = _evidence_served(lab.nodes[A])
    lab.nodes[A].writer.measure("/usr/bin/kubelet", b"kubelet 1.34")
    started = time.monotonic()
    while time.monotonic() - started < INTERVAL / 2:
        if _evidence_served(lab.nodes[A]) > before:
            return
        time.sleep(0.02)
    raise AssertionError(f"no round within {INTERVAL / 2}s of the log growing")

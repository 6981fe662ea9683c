"""Verifier replicas sharing the nodes, against the real control plane: every replica serves,
each node has exactly one owner (shown in its NodeAttestation), a replica joining takes only its
share, a rolling restart and a replica killed -9 let no verdict expire (so no NF binding is
refused), a push reaching the wrong replica is forwarded to the owner, a paused replica cannot
write back a stale verdict."""

from __future__ import annotations

import signal
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from attestation.core.clock import parse_time
from attestation.core.sharding import owner_of
from attestation.lab.poll import Lapses, hold_for
from attestation.lab.process import ManagedProcess
from tests.support.controlplane import ClusterHandle
from tests.support.lab import Lab, lab_cluster, wait_for
from tests.support.swtpm import LocalCa

NS = "5g-core-shards"
#: max-age >= 2 x (lease + interval): the defaults' proportions, scaled down for a test.
INTERVAL, MAX_AGE, LEASE = 0.5, 8.0, 2.0


def _port(proc: ManagedProcess) -> int:
    return int(proc.argv[proc.argv.index("--listen") + 1].rsplit(":", 1)[1])


def _ready(proc: ManagedProcess) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{_port(proc)}/readyz", timeout=2) as r:
            return bool(r.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _start(lab: Lab, replica: int) -> ManagedProcess:
    proc = lab.system.start_verifier(
        interval=INTERVAL, max_age=MAX_AGE, replica=replica, sharding=True, lease_duration=LEASE,
        extra_args=("--eviction-deadline", "5"),
    )  # fmt: skip
    wait_for(f"verifier-{replica} ready", lambda: _ready(proc), 30)
    return proc


def _owner(lab: Lab, node: str) -> str | None:
    status = (lab.nodeattestation(node) or {}).get("status") or {}
    owner = status.get("owner")
    return str(owner) if owner else None


def _owners(lab: Lab, nodes: Sequence[str]) -> dict[str, str | None]:
    return {n: _owner(lab, n) for n in nodes}


def _expected(nodes: Sequence[str], replicas: Sequence[int]) -> dict[str, str | None]:
    return {n: owner_of(n, [f"verifier-{r}" for r in replicas]) for n in nodes}


def _settle(lab: Lab, nodes: Sequence[str], replicas: Sequence[int], within: float) -> float:
    """Seconds until every node is owned as the hash over ``replicas`` says, and fresh."""
    start = time.monotonic()
    want = _expected(nodes, replicas)
    wait_for(f"owners {want}", lambda: _owners(lab, nodes) == want, within)
    return time.monotonic() - start


def _lapses(lab: Lab, nodes: Sequence[str]) -> Lapses:
    """Records every 100 ms each node the webhook would not admit NF pods to (its
    signature-checked, unexpired verdict)."""
    return Lapses(lambda: [n for n in nodes if not lab.system.trusted(n, datetime.now(UTC))])


def _denied_bindings(lab: Lab) -> float:
    """The webhook's count of denied admission requests (bindings among them)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    url = f"https://127.0.0.1:{lab.system.webhook_port}/metrics"
    with urllib.request.urlopen(url, context=ctx, timeout=5) as r:
        text = r.read().decode()
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "trustgate_webhook_requests_total" and s.labels.get("decision") == "denied"
    )


NODES = ["sh-1", "sh-2", "sh-3"]


@pytest.fixture
def sharded(trustgate_installed: ClusterHandle, swtpm_ca: LocalCa, tmp_path: Path) -> Iterator[Lab]:
    trustgate_installed.ensure_namespace(NS)
    with lab_cluster(
        trustgate_installed,
        swtpm_ca,
        tmp_path,
        NODES,
        webhook=True,
        trusted=NODES,
        interval=INTERVAL,
        max_age=MAX_AGE,
    ) as lab:
        lab.system.verifiers.pop().stop()  # the lab's lone verifier; replicas take over
        yield lab


def test_replicas_share_the_nodes_and_a_rolling_restart_lets_no_verdict_expire(
    sharded: Lab,
) -> None:
    lab = sharded
    replicas = {r: _start(lab, r) for r in (0, 1)}
    _settle(lab, NODES, (0, 1), 30)
    assert len(set(_owners(lab, NODES).values())) == 2, "both replicas attest some nodes"
    wait_for("all trusted", lambda: all(lab.trusted(n) for n in NODES), 30)
    denied = _denied_bindings(lab)
    took: dict[str, float] = {}
    with _lapses(lab, NODES) as lapses:
        # a Deployment's rolling update, maxSurge 1, maxUnavailable 0
        before = _owners(lab, NODES)
        replicas[2] = _start(lab, 2)
        took["join"] = _settle(lab, NODES, (0, 1, 2), 30)
        after = _owners(lab, NODES)
        assert all(after[n] == "verifier-2" for n in NODES if after[n] != before[n]), after
        assert "verifier-2" in after.values(), "the third replica took its share"
        pod = lab.create_nf_pod(NS, "upf-roll", "upf", "")  # gated, then bound by the scheduler
        replicas.pop(0).stop()  # SIGTERM: releases its Lease
        took["leave"] = _settle(lab, NODES, (1, 2), 30)
        replicas[3] = _start(lab, 3)
        replicas.pop(1).stop()
        took["roll"] = _settle(lab, NODES, (2, 3), 30)
        wait_for("the NF pod bound", lambda: (lab.pod(NS, "upf-roll") or {}).get("spec", {})
                 .get("nodeName") in NODES, 60)  # fmt: skip
        time.sleep(1.0)
    print(f"hand-over seconds: {took}; polls {lapses.polls}")
    assert lapses.polls > 20
    assert lapses.seen == [], f"verdicts lapsed during the roll: {lapses.seen[:5]}"
    assert _denied_bindings(lab) == denied, "an NF binding was refused during the roll"
    assert pod


def test_a_replica_killed_is_replaced_before_any_verdict_expires(sharded: Lab) -> None:
    lab = sharded
    replicas = {r: _start(lab, r) for r in (0, 1)}
    _settle(lab, NODES, (0, 1), 30)
    wait_for("all trusted", lambda: all(lab.trusted(n) for n in NODES), 30)
    failovers = []
    with _lapses(lab, NODES) as lapses:
        for victim in (1, 0, 1):
            node = next(n for n, o in _owners(lab, NODES).items() if o == f"verifier-{victim}")
            stamp = parse_time(lab.nodeattestation(node)["status"]["verifiedAt"], "verifiedAt")  # type: ignore[index]
            replicas[victim].signal(signal.SIGKILL)
            killed = time.monotonic()
            survivor = f"verifier-{1 - victim}"

            def taken(node: str = node, stamp: datetime = stamp, survivor: str = survivor) -> bool:
                status = (lab.nodeattestation(node) or {}).get("status") or {}
                return (
                    status.get("owner") == survivor
                    and parse_time(status["verifiedAt"], "verifiedAt") > stamp
                )

            wait_for(f"{survivor} attests {node}", taken, 30)
            failovers.append(time.monotonic() - killed)
            replicas[victim] = _start(lab, victim)  # the Deployment starts a new pod
            _settle(lab, NODES, (0, 1), 30)
    print(f"failover seconds: {[round(f, 2) for f in failovers]}")
    assert lapses.seen == [], f"verdicts lapsed: {lapses.seen[:5]}"
    assert max(failovers) < MAX_AGE / 2 + LEASE


def test_a_push_to_any_replica_reaches_the_owner(
    trustgate_installed: ClusterHandle, swtpm_ca: LocalCa, tmp_path: Path
) -> None:
    """Agents push to replica 0's port (the Service, in a cluster); a node replica 1 owns is
    attested within a second of a tamper although its pull interval is a minute."""
    with lab_cluster(trustgate_installed, swtpm_ca, tmp_path, NODES, trusted=NODES) as lab:
        lab.system.verifiers.pop().stop()
        replicas = [
            lab.system.start_verifier(
                interval=60.0, max_age=180.0, replica=r, sharding=True, lease_duration=LEASE
            )
            for r in (0, 1)
        ]
        for proc in replicas:
            wait_for("ready", lambda proc=proc: _ready(proc), 30)  # type: ignore[misc]
        _settle(lab, NODES, (0, 1), 30)
        node = next(n for n, o in _owners(lab, NODES).items() if o == "verifier-1")
        wait_for(f"{node} trusted", lambda: lab.state_of(node) == "Trusted", 30)
        time.sleep(1.0)  # past the push rate's burst of the first rounds
        lab.nodes[node].writer.measure("/usr/bin/rootkit", b"evil")
        tampered = time.monotonic()
        wait_for("Untrusted", lambda: lab.state_of(node) == "Untrusted", 20)
        took = time.monotonic() - tampered
        print(f"detected through a forwarded push in {took:.2f}s")
        assert took < 10, "the push did not reach the owner (a pull round came first)"
        assert _owner(lab, node) == "verifier-1"


def test_a_paused_replica_never_writes_back_a_stale_verdict(sharded: Lab) -> None:
    """A replica is stopped (SIGSTOP) past its lease; the other takes its nodes and publishes
    Untrusted after a tamper; the paused one resumes. Its Trusted verdict must never land."""
    lab = sharded
    replicas = {r: _start(lab, r) for r in (0, 1)}
    _settle(lab, NODES, (0, 1), 30)
    node = next(n for n, o in _owners(lab, NODES).items() if o == "verifier-1")
    wait_for(f"{node} Trusted", lambda: lab.state_of(node) == "Trusted", 30)
    replicas[1].signal(signal.SIGSTOP)
    try:
        wait_for("verifier-0 took it", lambda: _owner(lab, node) == "verifier-0", 30)
        lab.nodes[node].writer.measure("/usr/bin/rootkit", b"evil")
        wait_for("Untrusted", lambda: lab.state_of(node) == "Untrusted", 15)
        newest = (lab.nodeattestation(node) or {})["status"]["sequence"]
    finally:
        replicas[1].signal(signal.SIGCONT)

    def never_went_back() -> None:
        status = (lab.nodeattestation(node) or {})["status"]
        assert status["state"] == "Untrusted", "the paused replica's stale verdict landed"
        assert status["sequence"] >= newest

    hold_for(4.0, never_went_back, every=0.05)

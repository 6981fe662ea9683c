"""Attacks through the agent's channel: a compromised agent or a network attacker between the
verifier and the agent (hostile proxies, real HTTP), against the real verifier process, real
swtpm nodes and agents, and the real control plane.

One lab for the module (~60 s in all): ``mitm-1`` sits behind a proxy whose mode each test turns
hostile and back to honest (each attack lasts one round or until max-age, so it does not poison
the next test); ``badek-1``, ``unbound-1`` and ``secret-1`` are behind proxies that are hostile
from the start (enrollment happens once); ``peer-1`` is honest and carries an SMF pod: it must
stay Trusted, fresh and untouched through every attack.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from attestation.agent.tpm import Tpm
from attestation.core import enroll
from attestation.lab.node import SimNode
from attestation.lab.poll import wait_for
from attestation.lab.swtpm import SwTpm
from attestation.verifier.collector import _EVIDENCE_BODY
from tests.support.attacks import BlackHole, HostileAgent, Impersonation, Mode
from tests.support.controlplane import ClusterHandle
from tests.support.lab import Lab, lab_cluster
from tests.support.swtpm import LocalCa
from tests.support.verdicts import (
    assert_trusted_and_fresh,
    assert_user_sees,
    audit_records,
    pod_view,
    seen,
    wait_state,
    watch_freshness,
)

NS = "adv-agent"
MITM, PEER = "mitm-1", "peer-1"
BAD_EK, UNBOUND, SECRET = "badek-1", "unbound-1", "secret-1"
MAX_AGE = 3.0
AGENT_TIMEOUT = 2.0  # room for "huge" to reach the size cap before the deadline


@dataclass
class Env:
    lab: Lab
    proxies: dict[str, HostileAgent]
    hole: BlackHole  # in front of secret-1's proxy
    peer_pod: str


def _impersonation(other_ca: LocalCa, workdir: Path) -> Impersonation:
    """Identity fields of a TPM made by a CA the verifier does not know, with an AK of its own."""
    tpm = SwTpm(other_ca, workdir)
    tpm.start()
    try:
        foreign = Tpm(tpm.tcti)
        ak = foreign.create_ak("ecc")
        return Impersonation(
            ek_certificate=base64.b64encode(foreign.ek_certificate()).decode(),
            ek_public=base64.b64encode(foreign.ek_public()).decode(),
            ak_public=base64.b64encode(ak.public).decode(),
            ak_name=enroll.ak_name(ak.public).hex(),
        )
    finally:
        tpm.stop(orderly=False)


@pytest.fixture(scope="module")
def env(
    trustgate_installed: ClusterHandle,
    swtpm_ca: LocalCa,
    swtpm_other_ca: LocalCa,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Env]:
    trustgate_installed.ensure_namespace(NS)
    workdir = tmp_path_factory.mktemp("adv-agent")
    other = _impersonation(swtpm_other_ca, workdir / "foreign-tpm")
    hostile_from_start: dict[str, Mode] = {
        BAD_EK: "foreign_ek", UNBOUND: "ak_unbound", SECRET: "wrong_secret"
    }  # fmt: skip
    proxies: dict[str, HostileAgent] = {}
    holes: list[BlackHole] = []
    proxy_stack = contextlib.ExitStack()

    def urls(nodes: Mapping[str, SimNode]) -> dict[str, str]:
        out = {}
        for name in (MITM, *hostile_from_start):
            proxy = HostileAgent(
                nodes[name].agent_url,
                hostile_from_start.get(name, "pass"),
                other=nodes[PEER].agent_url,
                impersonate=other,
                client=nodes[name].verifier_client,  # the agents serve only the verifier
            )
            proxies[name] = proxy
            out[name] = proxy_stack.enter_context(proxy.running())
        hole = proxy_stack.enter_context(BlackHole(int(out[SECRET].rsplit(":", 1)[1]), "http"))
        holes.append(hole)
        out[SECRET] = hole.url
        return out

    with proxy_stack, lab_cluster(
        trustgate_installed, swtpm_ca, workdir, [MITM, PEER, *hostile_from_start],
        max_age=MAX_AGE, agent_urls=urls, trusted=[MITM, PEER],
        verifier_args=("--eviction-deadline", "5", "--agent-timeout", str(AGENT_TIMEOUT)),
    ) as lab:  # fmt: skip
        try:
            peer_pod = lab.create_nf_pod(NS, "smf-peer", "smf", PEER)
            lab.nodes[PEER].run_in_pod(peer_pod, "/usr/bin/smfd", b"open5gs-smfd 2.7")
            wait_for("the peer's SMF pod trusted", lambda: _pod_state(lab) == "trusted")
            yield Env(lab, proxies, holes[0], peer_pod)
        finally:
            # Proxies first: an agent with a proxy's connection open waits for it to stop.
            proxy_stack.close()


def _pod_state(lab: Lab) -> str:
    return pod_view(lab, NS, "smf-peer")[0]


@pytest.fixture
def mitm(env: Env) -> Iterator[HostileAgent]:
    """The man in the middle of mitm-1, honest at the start and the end of each test."""
    proxy = env.proxies[MITM]
    proxy.mode = "pass"
    wait_state(env.lab, MITM, "Trusted", timeout=30)
    yield proxy
    proxy.mode = "pass"
    proxy.release()  # end hung or trickling answers of this test


def _neighbours_untouched(env: Env) -> None:
    assert_trusted_and_fresh(env.lab, PEER)
    state, reason, leaving = pod_view(env.lab, NS, "smf-peer")
    assert (state, reason, leaving) == ("trusted", "", False)


# -- forged or stale quotes -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "failure_id"),
    [
        ("replay", "quote.nonce_mismatch"),  # an earlier, genuine answer: old nonce
        ("flip_signature", "quote.signature_invalid"),  # one bit of the signature
        ("foreign", "quote.signature_invalid"),  # another node's TPM answers: foreign AK
    ],
)
def test_forged_or_stale_quote_makes_only_that_node_untrusted(
    env: Env, mitm: HostileAgent, mode: Mode, failure_id: str
) -> None:
    mitm.mode = mode
    shown = assert_user_sees(env.lab, MITM, "Untrusted", failure_id)
    assert shown.reason.startswith(failure_id)
    _neighbours_untouched(env)
    # The attack lasts as long as the attacker keeps it up: an honest round restores trust.
    mitm.mode = "pass"
    wait_state(env.lab, MITM, "Trusted")


# -- enrollment ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("node", "failure_id"),
    [
        (BAD_EK, "enroll.ek_chain_untrusted"),  # EK certificate from an unknown CA
        (UNBOUND, "enroll.activation_failed"),  # an AK that is not in this TPM
        (SECRET, "enroll.activation_failed"),  # a made-up activation secret
    ],
)
def test_enrollment_attack_keeps_the_node_untrusted(env: Env, node: str, failure_id: str) -> None:
    shown = assert_user_sees(env.lab, node, "Untrusted", failure_id)
    assert shown.reason.startswith(failure_id)
    assert shown.verified_at is not None
    assert shown.expires_at == shown.verified_at  # an Untrusted verdict expires at once
    assert not shown.trusted
    proxy = env.proxies[node]
    assert proxy.seen["evidence", proxy.mode] == 0  # no evidence is ever asked of it
    _neighbours_untouched(env)


def test_enrollment_succeeds_once_the_agent_is_honest(env: Env) -> None:
    """The failed enrollments above are retried every round: an honest agent gets in."""
    for node in (BAD_EK, UNBOUND, SECRET):
        env.proxies[node].mode = "pass"
    for node in (BAD_EK, UNBOUND, SECRET):
        wait_state(env.lab, node, "Trusted")
    _neighbours_untouched(env)


# -- an agent that stops answering properly ------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "failure_id"),
    [
        ("garbage", "agent.bad_response"),
        ("http_error", "agent.http_error"),
        ("hang", "agent.timeout"),  # reads the request, never answers
        ("trickle", "agent.timeout"),  # answers one byte every half second, forever
        ("huge", "agent.too_large"),  # a body past the verifier's cap
    ],
)
def test_broken_agent_makes_node_unknown_after_max_age_and_others_stay_fresh(
    env: Env, mitm: HostileAgent, mode: Mode, failure_id: str
) -> None:
    mitm.huge_bytes = _EVIDENCE_BODY + 1  # used by "huge" only

    def start() -> None:
        mitm.mode = mode

    def stop() -> None:
        mitm.mode = "pass"
        mitm.release()

    _goes_unknown_alone(env, MITM, failure_id, start, stop, what=mode)


def test_black_holed_agent_makes_node_unknown_after_max_age_and_others_stay_fresh(
    env: Env,
) -> None:
    """Connections to secret-1's agent (open ones too) are accepted and read, and never
    answered: not a byte comes back. Its proxy turns honest first (the enrollment tests may
    not have run), so the node starts Trusted."""
    env.proxies[SECRET].mode = "pass"
    wait_state(env.lab, SECRET, "Trusted")

    def start() -> None:
        env.hole.swallowing = True

    def stop() -> None:
        env.hole.swallowing = False

    try:
        _goes_unknown_alone(env, SECRET, "agent.timeout", start, stop, what="black hole")
    finally:
        stop()


def _goes_unknown_alone(
    env: Env,
    node: str,
    failure_id: str,
    start: Callable[[], None],
    stop: Callable[[], None],
    *,
    what: str,
) -> None:
    """Break ``node``'s agent with ``start``: the node goes Unknown once its verdict expires, its
    neighbour stays fresh; after ``stop`` the node is trusted again."""
    started = time.monotonic()
    start()
    # The last good verdict stands until it expires, then the node is Unknown.
    shown = assert_user_sees(env.lab, node, "Unknown", failure_id)
    took = time.monotonic() - started
    assert took < MAX_AGE + 4 * AGENT_TIMEOUT + 3, took
    worst = watch_freshness(env.lab, PEER, 2.0)
    print(f"\n{what}: {node} Unknown after {took:.1f}s; {PEER} evidence age <= {worst:.2f}s")
    assert worst < MAX_AGE
    assert shown.reason.startswith(failure_id)
    _neighbours_untouched(env)
    stop()
    wait_state(env.lab, node, "Trusted")


# -- callers other than the verifier ---------------------------------------------------------------


def _evidence_loop(url: str, until: float, outcomes: collections.Counter[str]) -> None:
    """One caller on the node's host network asking the agent for quotes as fast as it can
    (its own nonce: no verifier involved), counting what it gets."""
    body = {"nonce": os.urandom(32).hex(), "pcrs": [0, 1, 2, 3, 4, 5, 6, 7, 10],
            "banks": ["sha256"], "imaOffset": 0}  # fmt: skip
    with httpx.Client(base_url=url, verify=False, timeout=5) as client:  # noqa: S501 - an attacker
        while time.monotonic() < until:
            try:
                answer = client.post("/v1/evidence", json=body)
                outcomes[f"http {answer.status_code}"] += 1
            except httpx.HTTPError as e:  # refused at the TLS handshake
                outcomes[type(e).__name__] += 1
                time.sleep(0.01)


def test_callers_other_than_the_verifier_get_no_quotes_and_the_node_stays_trusted(
    env: Env,
) -> None:
    """Root (or any pod) on peer-1's host network runs 64 parallel loops asking its agent for
    evidence: every one is refused before any TPM work (the agent admits only the verifier's
    client certificate), the node stays Trusted and fresh, its SMF pod stays."""
    url = env.lab.nodes[PEER].agent_url
    outcomes: collections.Counter[str] = collections.Counter()
    until = time.monotonic() + 2 * MAX_AGE
    threads = [
        threading.Thread(target=_evidence_loop, args=(url, until, outcomes), daemon=True)
        for _ in range(64)
    ]
    for t in threads:
        t.start()
    worst = watch_freshness(env.lab, PEER, 2 * MAX_AGE - 0.5)
    for t in threads:
        t.join(10)
    print(f"\n64 loops against {PEER}'s agent: {dict(outcomes)}; evidence age <= {worst:.2f}s")
    assert sum(outcomes.values()) > 64, outcomes  # the loops did run
    assert not [k for k in outcomes if k.startswith("http ")], outcomes  # not one HTTP answer
    assert worst < MAX_AGE
    _neighbours_untouched(env)


def test_peer_never_left_trusted(env: Env, mitm: HostileAgent) -> None:
    """Across every attack of this module, the neighbour's audit trail has no other verdict
    once it was first attested. One attack runs here, so the trail is never empty of them
    (this test alone, or first, still checks a neighbour under attack)."""
    mitm.mode = "flip_signature"
    wait_state(env.lab, MITM, "Untrusted", "quote.signature_invalid")
    mitm.mode = "pass"
    wait_state(env.lab, MITM, "Trusted")
    records = audit_records(env.lab)
    attacked = [r for r in records if r.get("node") == MITM and r.get("state") == "Untrusted"]
    assert attacked, "no attack in the audit trail: nothing to have stayed Trusted through"
    states = [r["state"] for r in records if r.get("node") == PEER and "state" in r]
    assert set(states[states.index("Trusted") :]) == {"Trusted"}, states
    assert seen(env.lab, PEER).state == "Trusted"

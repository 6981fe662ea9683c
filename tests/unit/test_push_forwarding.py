"""A push that reaches a replica which does not attest its node is forwarded to the one that does
(``verifier.server``), over real HTTP between two served apps: once, checked by the owner, at the
gate's rate per node."""

from __future__ import annotations

import httpx

from attestation.core.pushauth import encode_push
from attestation.verifier.metrics import VerifierMetrics
from attestation.verifier.pushgate import PushGate
from attestation.verifier.server import FORWARDED_HEADER, create_server_app
from tests.support.serve import serve

KEY = b"k" * 32


def _owner(woken: list[str]) -> tuple[object, PushGate]:
    gate = PushGate(rate=100.0, burst=100.0)
    gate.install("n1", KEY)

    def push(node: str) -> bool:
        woken.append(node)
        return True

    return create_server_app(push, VerifierMetrics(), lambda: True, gate, identity="v-1"), gate


def _front(owner_url: str, rate: float = 100.0, burst: float = 100.0) -> object:
    """A replica that attests nothing: every node is the owner's."""

    def push(_node: str) -> bool:
        raise AssertionError("the front replica woke a node it does not attest")

    gate = PushGate(rate=rate, burst=burst)
    route = lambda _node: owner_url  # noqa: E731
    return create_server_app(push, VerifierMetrics(), lambda: True, gate, route=route,
                             identity="v-0")  # fmt: skip


def test_a_push_reaches_the_owner_and_its_refusals_come_back() -> None:
    woken: list[str] = []
    owner, _ = _owner(woken)
    with serve(owner) as owner_url, serve(_front(owner_url)) as front_url:
        good = httpx.post(f"{front_url}/v1/notify", json=encode_push(KEY, "n1", 1))
        assert (good.status_code, good.json()["status"]) == (202, 202)
        assert woken == ["n1"]
        forged = httpx.post(f"{front_url}/v1/notify", json=encode_push(b"x" * 32, "n1", 2))
        assert forged.status_code == 401  # the owner checked the MAC: the front cannot
        replay = httpx.post(f"{front_url}/v1/notify", json=encode_push(KEY, "n1", 1))
        assert replay.status_code == 409
        assert woken == ["n1"]


def test_a_forwarded_push_is_never_forwarded_again() -> None:
    """Two replicas that each believe the other owns the node (views in flux) do not bounce a
    push between them: the second hop answers it itself (here: not enrolled)."""
    with serve(_front("http://127.0.0.1:9")) as front_url:
        hop = httpx.post(f"{front_url}/v1/notify", json=encode_push(KEY, "n1", 1),
                         headers={FORWARDED_HEADER: "v-9"})  # fmt: skip
        assert hop.status_code == 401
        assert hop.json()["reason"] == "push.not_enrolled"


def test_forwarding_is_rate_limited_per_node_and_an_unreachable_owner_is_502() -> None:
    woken: list[str] = []
    owner, _ = _owner(woken)
    with serve(owner) as owner_url, serve(_front(owner_url, rate=0.01, burst=2)) as front_url:
        answers = [
            httpx.post(f"{front_url}/v1/notify", json=encode_push(KEY, "n1", c)).status_code
            for c in range(1, 6)
        ]
        assert answers == [202, 202, 429, 429, 429]
        assert woken == ["n1", "n1"]
    with serve(_front("http://127.0.0.1:9")) as front_url:
        down = httpx.post(f"{front_url}/v1/notify", json=encode_push(KEY, "n1", 1))
        assert down.status_code == 502

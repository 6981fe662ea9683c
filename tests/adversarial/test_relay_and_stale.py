"""Two attacks from outside our own list, against the real verifier and webhook processes, swtpm
nodes and agents, and the real kube-apiserver with RBAC:

- relay enrollment: a node that fails attestation puts a proxy in front of its agent that sends
  identity, activation and evidence to a clean agent with another genuine TPM claiming that
  node's name (issue 14, item 1). The node is bound to the EK it first enrolled with.
- stale verdicts: an older, genuinely signed Trusted status written back over a newer Untrusted
  one, as an admin or a deposed verifier replica could (issue 14, item 10). The webhook never
  goes back to an older sequence than one it has seen for a node.

One lab (~40 s): ``relay-1`` behind a proxy, ``stale-1``, ``rekey-1`` and ``relay-peer`` honest;
the webhook runs. The stale test stops the verifier (a deposed leader), so it runs last.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import subprocess
import urllib.error
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from attestation.agent.tpm import Tpm
from attestation.core.names import NF_LABEL
from attestation.core.tpm_types import parse_public
from attestation.lab.cluster import NODEATTESTATIONS
from attestation.lab.node import SimNode, trustgate_exe
from attestation.lab.poll import hold_for, wait_for
from tests.support.attacks import HostileAgent
from tests.support.controlplane import ClusterHandle
from tests.support.lab import FILES, Lab, lab_cluster
from tests.support.root_on_node import roll_back_tpm, snapshot_tpm
from tests.support.swtpm import LocalCa
from tests.support.verdicts import assert_trusted_and_fresh, audit_records, seen, wait_state

NS = "adv-relay"
RELAY, STALE, PEER, REKEY, REUSE = "relay-1", "stale-1", "relay-peer", "rekey-1", "reuse-1"
NOWHERE = "http://127.0.0.1:9"  # nothing listens: an agent that never answers
MAX_AGE = 10.0  # a written-back Trusted verdict must still be unexpired when the webhook sees it


@dataclass
class Env:
    lab: Lab
    proxy: HostileAgent  # in front of relay-1's agent
    reuse: HostileAgent  # in front of reuse-1's agent, relaying from the start
    clean: SimNode  # another genuine TPM, its agent claiming to be relay-1
    workdir: Path


@pytest.fixture(scope="module")
def env(
    trustgate_installed: ClusterHandle, swtpm_ca: LocalCa, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Env]:
    cluster = trustgate_installed
    cluster.ensure_namespace(NS, {"trustgate.io/protected": "true"})
    workdir = tmp_path_factory.mktemp("adv-relay")
    proxies: list[HostileAgent] = []
    stack = contextlib.ExitStack()

    def urls(nodes: Mapping[str, SimNode]) -> dict[str, str]:
        caller = nodes[RELAY].verifier_client  # the agents serve only the verifier
        proxies.append(HostileAgent(nodes[RELAY].agent_url, client=caller))
        # reuse-1 never reaches its own TPM: it can only ever enroll the one it is relayed to.
        proxies.append(HostileAgent(nodes[REUSE].agent_url, "relay", other=NOWHERE, client=caller))
        return {
            n: stack.enter_context(p.running())
            for n, p in zip((RELAY, REUSE), proxies, strict=True)
        }

    with stack, lab_cluster(
        cluster, swtpm_ca, workdir, [RELAY, STALE, PEER, REKEY, REUSE], webhook=True,
        max_age=MAX_AGE, agent_urls=urls, trusted=[RELAY, STALE, PEER, REKEY],
    ) as lab:  # fmt: skip
        assert lab.system.tls_ca is not None
        clean = SimNode.create(RELAY, workdir / "clean", swtpm_ca, lab.system.tls_ca, None)
        try:
            clean.boot(dict(FILES["host"]))
            clean.start_agent()
            proxies[0].other = clean.agent_url
            yield Env(lab, proxies[0], proxies[1], clean, workdir)
        finally:
            stack.close()  # the proxy before the agents it holds connections to
            clean.shutdown()


def _ek_digest(node: SimNode) -> str:
    """SHA-256 of the EK's SubjectPublicKeyInfo, as an operator computes it from the EK
    certificate (``openssl x509 -pubkey | openssl pkey -pubin -outform DER | sha256sum``)."""
    key = parse_public(Tpm(node.tpm.tcti).ek_public()).public_key()
    return hashlib.sha256(
        key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    ).hexdigest()


def _admin(env: Env, *args: str) -> subprocess.CompletedProcess[str]:
    """``trustgate`` as a cluster admin runs it."""
    kubeconfig = str(env.lab.cluster.plane.kubeconfig)
    return subprocess.run(
        [trustgate_exe(), *args, "--kubeconfig", kubeconfig],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def _allowed(env: Env, user: str, groups: list[str], verb: str, subresource: str = "") -> bool:
    """What the API server's authorizers (Node and RBAC) answer for ``user``."""
    review = env.lab.cluster.request(
        "POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews",
        {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
         "spec": {"user": user, "groups": groups, "resourceAttributes": {
             "group": "trustgate.io", "resource": "nodeattestations", "name": RELAY,
             "verb": verb, "subresource": subresource}}},
    )  # fmt: skip
    return bool(review["status"].get("allowed"))


def test_relay_to_another_tpm_keeps_the_node_untrusted_until_an_operator_approves(
    env: Env,
) -> None:
    lab = env.lab
    # relay-1 fails attestation: root ran a binary no policy lists.
    lab.nodes[RELAY].writer.measure("/usr/bin/rootkit", b"evil")
    wait_state(lab, RELAY, "Untrusted", "ima.policy.unknown_file")
    # Root puts a relay in front of the agent: a clean node's genuine TPM answers as relay-1.
    env.proxy.mode = "relay"
    wait_for("the relay asked for identity", lambda: env.proxy.seen["identity", "relay"] > 0)

    def never_trusted() -> None:
        now = seen(lab, RELAY)
        assert not now.trusted, f"{RELAY} trusted on another TPM's word: {now.state}"
        assert now.attested_label != "true"

    hold_for(6.0, never_trusted)
    shown = wait_state(lab, RELAY, "Untrusted", "enroll.ek_changed")
    clean_ek, pinned_ek = _ek_digest(env.clean), _ek_digest(lab.nodes[RELAY])
    assert clean_ek in shown.reason or any(clean_ek in f.message for f in shown.trust.failures)  # type: ignore[union-attr]
    status = (lab.nodeattestation(RELAY) or {})["status"]
    assert status["ekDigest"] == pinned_ek  # the pin survives the failed re-enrollment
    assert_trusted_and_fresh(lab, PEER)

    # Approval is an operator's act: neither the node nor a namespace admin may write it.
    node_user = (f"system:node:{RELAY}", ["system:nodes", "system:authenticated"])
    for verb in ("patch", "update"):
        assert not _allowed(env, *node_user, verb), verb
    tenant = ("system:serviceaccount:adv-relay:tenant", ["system:serviceaccounts"])
    assert not _allowed(env, *tenant, "patch")
    refused = _admin(env, "node", "approve", RELAY, "--ek", "ab" * 32)
    assert refused.returncode == 0, refused.stderr  # any digest may be approved; it must match
    hold_for(2.0, never_trusted)

    approved = _admin(env, "node", "approve", RELAY, "--ek", clean_ek)
    assert approved.returncode == 0, approved.stderr
    wait_state(lab, RELAY, "Trusted")
    assert (lab.nodeattestation(RELAY) or {})["status"]["ekDigest"] == clean_ek


def test_a_new_ak_on_the_same_ek_keeps_the_tpm_clock(env: Env) -> None:
    """Root rolls the software TPM's state back and restarts the agent with a new AK: the node
    re-enrolls on the same EK, and what the verifier knew of that TPM's clock still holds."""
    lab, node = env.lab, env.lab.nodes[REKEY]
    snapshot = env.workdir / "rekey-snapshot"
    snapshot_tpm(node, snapshot, FILES["host"])
    wait_state(lab, REKEY, "Trusted")
    first = seen(lab, REKEY).verified_at
    assert first is not None
    # Let the TPM clock run well past the snapshot's, in verified quotes: after the roll-back,
    # the agent's restart and the re-enrollment take a few seconds of TPM clock themselves.
    wait_for(
        "12 s of verified quotes",
        lambda: (v := seen(lab, REKEY).verified_at) and (v - first).total_seconds() > 12,
        timeout=40,
    )
    enrolled = len([r for r in audit_records(lab) if r.get("kind") == "enrolled"])
    node.stop_agent()
    roll_back_tpm(node, snapshot, FILES["host"])
    (node.workdir / "agent" / "ak.blob").unlink()  # the agent makes a new AK at start
    node.start_agent()
    shown = wait_state(lab, REKEY, "Untrusted", "quote.clock_rollback")
    assert "went back" in shown.reason
    again = [r for r in audit_records(lab) if r.get("kind") == "enrolled"][enrolled:]
    assert [(r["node"], r["reenrolled"], r["tpmStateKept"]) for r in again] == [(REKEY, True, True)]
    assert_trusted_and_fresh(lab, PEER)


def test_one_tpm_claimed_by_two_nodes_is_refused_for_the_second(env: Env) -> None:
    """Root on relay-peer runs a second agent on its (genuine, bound) TPM that claims to be
    reuse-1, and relays reuse-1's agent traffic to it: reuse-1 would enroll on another node's
    TPM. relay-peer itself is untouched."""
    lab, peer = env.lab, env.lab.nodes[PEER]
    assert lab.system.tls_ca is not None
    tls = lab.system.tls_ca.issue(
        env.workdir / "twin-tls", "agent", REUSE, ip_addresses=("127.0.0.1",), server=True
    )
    (env.workdir / "twin").mkdir()
    twin = SimNode(REUSE, env.workdir / "twin", peer.tpm, peer.writer, tls.cert, tls.key, None)
    twin.start_agent()
    try:
        env.reuse.other = twin.agent_url
        shown = wait_state(lab, REUSE, "Untrusted", "enroll.ek_reused")
        assert f"bound to node {PEER}" in shown.trust.failures[0].message  # type: ignore[union-attr]

        def never_trusted() -> None:
            assert not seen(lab, REUSE).trusted

        hold_for(3.0, never_trusted)
        assert (lab.nodeattestation(REUSE) or {})["status"]["ekDigest"] == ""
        assert_trusted_and_fresh(lab, PEER)
    finally:
        env.reuse.other = NOWHERE
        twin.stop_agent()


def _dry_run_nf_pod(env: Env, node: str) -> tuple[int, str]:
    body = {
        "metadata": {"name": "upf-stale", "labels": {NF_LABEL: "upf", "app": "upf"}},
        "spec": {"nodeName": node, "containers": [{"name": "upf", "image": "open5gs/upf"}]},
    }
    try:
        env.lab.cluster.request("POST", f"/api/v1/namespaces/{NS}/pods?dryRun=All", body)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}").get("message", "")
    return 201, ""


def test_an_older_signed_trusted_verdict_written_back_is_refused(env: Env) -> None:
    lab = env.lab
    wait_state(lab, STALE, "Trusted")
    old: dict[str, Any] = (lab.nodeattestation(STALE) or {})["status"]
    assert _dry_run_nf_pod(env, STALE)[0] == 201
    lab.nodes[STALE].writer.measure("/usr/bin/rootkit", b"evil")
    newer = wait_state(lab, STALE, "Untrusted", "ima.policy.unknown_file")
    assert newer.trust is not None
    assert newer.trust.sequence > old["sequence"]
    wait_for("the webhook refuses", lambda: _dry_run_nf_pod(env, STALE)[0] == 403)
    # The verifier is deposed (stopped); the old, genuinely signed Trusted status comes back
    # while it has not expired yet.
    assert lab.verifier is not None
    lab.verifier.stop()
    current = (lab.nodeattestation(STALE) or {})["status"]
    patch = {k: None for k in current if k not in old} | old
    path = f"{NODEATTESTATIONS}/{STALE}/status"
    lab.cluster.request("PATCH", path, {"status": patch}, "application/merge-patch+json")
    back = seen(lab, STALE)
    assert back.state == "Trusted"
    assert back.trusted, "the written-back verdict is not valid"

    def refused() -> None:
        code, message = _dry_run_nf_pod(env, STALE)
        assert code == 403, f"the webhook took the older verdict back ({code})"
        assert "Untrusted" in message, message

    hold_for(4.0, refused, every=0.25)

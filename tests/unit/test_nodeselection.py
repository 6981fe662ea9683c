"""Which nodes the verifier attests: the label selector it evaluates itself, and the rule that
keeps a node attested while NF pods or its NodeAttestation depend on it."""

from __future__ import annotations

import pytest

from attestation.core.names import CORE_NODE_LABEL
from attestation.core.nodeselection import (
    NodeFacts,
    SelectorError,
    attested,
    matches,
    parse_selector,
    unrestricted_keys,
)
from attestation.verifier.scope import NodeScope

LABELS = {CORE_NODE_LABEL: "true", "zone": "a", "kubernetes.io/os": "linux"}


@pytest.mark.parametrize(
    ("selector", "selected"),
    [
        ("", True),
        (f"{CORE_NODE_LABEL}=true", True),
        (f"{CORE_NODE_LABEL}==true", True),
        (f"{CORE_NODE_LABEL}=false", False),
        ("zone!=a", False),
        ("zone!=b", True),
        ("missing!=x", True),
        ("zone in (a, b)", True),
        ("zone in (b,c)", False),
        ("zone notin (b)", True),
        ("missing notin (b)", True),
        ("zone", True),
        ("missing", False),
        ("!missing", True),
        ("! zone", False),
        (f"{CORE_NODE_LABEL}=true,zone in (a,b),!missing", True),
        (f"{CORE_NODE_LABEL}=true, zone=b", False),
    ],
)
def test_selector_matches_as_the_api_server_does(selector: str, selected: bool) -> None:
    assert matches(parse_selector(selector), LABELS) is selected


@pytest.mark.parametrize("selector", ["=x", "a=b=c", "zone in a,b", "zone in (a b)", "a,,b", "a b"])
def test_a_bad_selector_is_named(selector: str) -> None:
    with pytest.raises(SelectorError, match="label selector"):
        parse_selector(selector)


def test_unrestricted_keys_are_the_ones_a_kubelet_can_change() -> None:
    reqs = parse_selector(f"{CORE_NODE_LABEL}=true,trustgate.io/5g-core=true,!zone")
    assert unrestricted_keys(reqs) == ("trustgate.io/5g-core", "zone")
    assert unrestricted_keys(parse_selector(f"{CORE_NODE_LABEL}=true")) == ()


OURS, THEIRS = "key-ours", "key-theirs"


@pytest.mark.parametrize(
    ("facts", "expected"),
    [
        (NodeFacts(), False),
        (NodeFacts(exists=True), False),  # an ordinary node
        (NodeFacts(selected=True, exists=True), True),
        (NodeFacts(selected=True, exists=True, attestation_key=THEIRS), True),
        # the label removed: its NodeAttestation keeps it attested
        (NodeFacts(exists=True, attestation_key=OURS), True),
        (NodeFacts(exists=True, attestation_key=""), True),  # created, status not yet signed
        # ... and its NF pods, even without the Node object
        (NodeFacts(hosts_nf_pods=True), True),
        (NodeFacts(exists=True, hosts_nf_pods=True, attestation_key=OURS), True),
        # the Node deleted, no NF pods left: released (its NodeAttestation stays in the API)
        (NodeFacts(attestation_key=OURS), False),
        # another verifier's node, NF pods or not
        (NodeFacts(exists=True, hosts_nf_pods=True, attestation_key=THEIRS), False),
        (NodeFacts(exists=True, attestation_key=THEIRS), False),
    ],
)
def test_attested_while_anything_depends_on_the_node(facts: NodeFacts, expected: bool) -> None:
    assert attested(facts, OURS) is expected


def _node(name: str, labels: dict[str, str]) -> dict[str, object]:
    return {"metadata": {"name": name, "labels": labels}}


def _attestation(key: str | None) -> dict[str, object]:
    return {"status": {"signature": {"keyId": key}} if key else {}}


def test_scope_attests_and_releases_as_the_facts_change() -> None:
    hosting: set[str] = set()
    calls: list[tuple[str, str]] = []
    scope = NodeScope(
        f"{CORE_NODE_LABEL}=true", OURS, hosting.__contains__,
        attest=lambda n: calls.append(("attest", n)),
        release=lambda n: calls.append(("release", n)),
    )  # fmt: skip
    scope.node_changed("w1", _node("w1", {CORE_NODE_LABEL: "true"}))
    scope.node_changed("other", _node("other", {}))
    scope.attestation_changed("theirs", _attestation(THEIRS))
    assert calls == []  # nothing before every watch has listed
    hosting.add("theirs")
    scope.start(["theirs"])
    assert calls == [("attest", "w1")]
    scope.attestation_changed("w1", _attestation(OURS))
    scope.node_changed("w1", _node("w1", {}))  # the label removed: its NodeAttestation keeps it
    hosting.add("other")
    scope.pods_moved(["other", None])  # an NF pod lands on an unselected node
    assert calls == [("attest", "w1"), ("attest", "other")]
    hosting.discard("other")
    scope.pods_moved(["other"])
    scope.node_changed("w1", None)  # the Node deleted, no NF pods: released
    assert calls[2:] == [("release", "other"), ("release", "w1")]
    scope.attestation_changed("w1", None)
    assert calls[4:] == []

"""Staged rollout on data: the mode a namespace is in, what each mode does, the mutation and the
webhook app per namespace, the PolicyReport's results and their merge across replicas."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest

from attestation.core.enforcement import (
    ENFORCEMENT_MODES,
    Enforcement,
    actions,
    label_problem,
    mode_in,
    namespace_mode,
    parse_mode,
    taints_nodes,
)
from attestation.core.names import ENFORCEMENT_LABEL, SCHEDULING_GATE
from attestation.core.policyreport import (
    MAX_RESULTS,
    PodResult,
    merge,
    report_body,
    result_wire,
    same_report,
    summary,
)
from attestation.core.status import PodTrustView
from attestation.core.types import Failure, NodeVerdict, PodVerdict
from attestation.core.verdict import PodInfo
from attestation.verifier.policyreport import pod_result
from tests.unit.test_webhook_app import KEY, SETTINGS, running
from tests.unit.webhook_data import PodTable, StaticSource, apply_patch, node_attestation, vector
from webhook.app import create_app
from webhook.mutate import mutate
from webhook.namespaces import NamespaceModes
from webhook.protect import ProtectionRules
from webhook.reviews import decode_review
from webhook.settings import WebhookSettings

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def labelled(value: str | None) -> dict[str, str]:
    return {} if value is None else {ENFORCEMENT_LABEL: value}


@pytest.mark.parametrize(
    ("value", "default", "mode"),
    [
        (None, "enforce", "enforce"),
        (None, "audit", "audit"),
        ("warn", "enforce", "warn"),
        (" Audit ", "enforce", "audit"),
        ("enforce", "audit", "enforce"),
        ("enforcing", "audit", "enforce"),  # a typo never loosens
        ("", "warn", "enforce"),
    ],
)
def test_namespace_mode(value: str | None, default: Enforcement, mode: Enforcement) -> None:
    assert namespace_mode(labelled(value), default) == mode
    namespaces = {"ns": {"metadata": {"name": "ns", "labels": labelled(value)}}}
    assert mode_in(namespaces, default, "ns") == mode
    assert mode_in(namespaces, default, "elsewhere") == default


def test_a_label_that_names_no_mode_is_reported() -> None:
    assert label_problem(labelled("audit")) is None
    assert label_problem({}) is None
    problem = label_problem(labelled("off"))
    assert problem is not None
    assert problem.id == "enforcement.invalid_label"
    assert "'off'" in problem.message
    assert "enforce applies" in problem.message
    assert parse_mode("off") is None


def test_only_enforce_gates_pins_denies_evicts_and_taints() -> None:
    for mode in ENFORCEMENT_MODES:
        todo = actions(mode)
        strict = mode == "enforce"
        assert (todo.gate, todo.pin, todo.deny, todo.evict) == (strict,) * 4
        assert todo.warn == (mode == "warn")
        assert taints_nodes(mode) == strict


@pytest.mark.parametrize("mode", ENFORCEMENT_MODES)
def test_mutation_gates_and_pins_only_in_enforce(mode: Enforcement) -> None:
    review = vector("mutate-pods-create-upf-0")
    request = decode_review(json.dumps(review).encode())
    response = mutate(request, ProtectionRules(), mode)
    pod = apply_patch(review["request"]["object"], response.patch)
    gated = any(g["name"] == SCHEDULING_GATE for g in pod["spec"].get("schedulingGates") or [])
    pinned = "nodeAffinity" in (pod["spec"].get("affinity") or {})
    assert (gated, pinned) == (mode == "enforce",) * 2
    assert pod["metadata"]["labels"]["trustgate.io/network-function"] == "upf"
    assert pod["metadata"]["annotations"]["trustgate.io/trust-state"] == "pending"


def namespace(name: str, mode: str | None) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labelled(mode)}}


def patched_pod(answer: dict[str, Any], review: dict[str, Any]) -> dict[str, Any]:
    ops = json.loads(base64.b64decode(answer["patch"]))
    return apply_patch(review["request"]["object"], ops)


@pytest.mark.parametrize(
    ("watched", "looked_up", "mode"),
    [
        ("audit", None, "audit"),
        (None, "warn", "warn"),  # not delivered by the watch yet: looked up
        (None, None, "enforce"),  # neither: the default
    ],
)
def test_app_takes_each_namespaces_mode_from_the_watch_or_a_lookup(
    watched: str | None, looked_up: str | None, mode: Enforcement
) -> None:
    items = [namespace("5gc", watched)] if watched else [namespace("other", "audit")]
    app = create_app(
        SETTINGS, trust_source=StaticSource([]), pod_lookup=PodTable([]),
        namespace_source=StaticSource(items),
        namespace_lookup=lambda name: namespace(name, looked_up) if looked_up else None,
    )  # fmt: skip
    with running(app) as c:
        c.wait_ready()
        review = vector("mutate-pods-create-upf-0")
        pod = patched_pod(c.post("/mutate", review).json()["response"], review)
        assert bool(pod["spec"].get("schedulingGates")) == (mode == "enforce")
        answer = c.post("/validate", vector("validate-pods-binding-create-upf-0"))
        response = answer.json()["response"]
    if mode == "enforce":
        assert response["allowed"] is False  # no UPF pod in the table: fail closed
        return
    assert response["allowed"] is True
    if mode == "warn":
        assert response["warnings"][0].startswith("trustgate warn mode, would deny: ")
    else:
        assert "warnings" not in response
        assert response["auditAnnotations"]["would-deny"]


def test_enforcement_default_applies_to_unlabelled_namespaces() -> None:
    settings = WebhookSettings(
        cluster_id=SETTINGS.cluster_id, verifier_keys=SETTINGS.verifier_keys,
        enforcement_default="audit",
    )  # fmt: skip
    app = create_app(
        settings, trust_source=StaticSource([node_attestation("worker-1", KEY)]),
        pod_lookup=PodTable([]), namespace_source=StaticSource([namespace("5gc", None)]),
    )  # fmt: skip
    with running(app) as c:
        c.wait_ready()
        review = vector("mutate-pods-create-upf-0")
        pod = patched_pod(c.post("/mutate", review).json()["response"], review)
    assert not pod["spec"].get("schedulingGates")


# -- PolicyReport ------------------------------------------------------------------------------

UPF = PodInfo("uid-upf", "5gc", "upf-0", "upf")
SMF = PodInfo("uid-smf", "5gc", "smf-0", "smf")
UNKNOWN_FILE = Failure("ima.policy.unknown_file", "not in policy", pod_uid="uid-upf")


def verdict(*, node_ok: bool = True) -> NodeVerdict:
    node_failures = () if node_ok else (Failure("ima.host.unknown_file", "host"),)
    return NodeVerdict(
        node="w1", trusted=node_ok, failures=node_failures,
        pods=(
            PodVerdict(uid="uid-upf", trusted=False, network_function="upf",
                       failures=(UNKNOWN_FILE,)),
            PodVerdict(uid="uid-smf", trusted=True, network_function="smf"),
        ),
    )  # fmt: skip


def test_a_results_failures_are_the_pods_own_else_its_nodes() -> None:
    bad = pod_result("w1", UPF, PodTrustView("untrusted", "x"), verdict(), "audit")
    assert bad.failures == ("ima.policy.unknown_file",)
    good = pod_result("w1", SMF, PodTrustView("trusted", ""), verdict(), "audit")
    assert good.failures == ()
    on_bad_node = pod_result("w1", SMF, PodTrustView("untrusted", "node"), verdict(node_ok=False),
                             "enforce")  # fmt: skip
    assert on_bad_node.failures == ("ima.host.unknown_file",)


def wire(name: str, node: str, state: str = "trusted", when: datetime = NOW) -> Any:
    failures = ("ima.policy.unknown_file",) if state == "untrusted" else ()
    result = PodResult("5gc", name, f"uid-{name}", node, "upf", state, "", failures, "audit")  # type: ignore[arg-type]
    return result_wire(result, when)


def test_result_wire_is_what_kyverno_tooling_reads() -> None:
    out = wire("upf-0", "w1", "untrusted")
    assert out["result"] == "fail"
    assert out["severity"] == "high"
    assert out["policy"] == "trustgate-runtime-integrity"
    assert out["resources"][0] == {
        "apiVersion": "v1", "kind": "Pod", "namespace": "5gc", "name": "upf-0", "uid": "uid-upf-0"
    }  # fmt: skip
    assert out["properties"]["failures"] == "ima.policy.unknown_file"
    assert out["timestamp"] == {"seconds": int(NOW.timestamp()), "nanos": 0}
    assert [wire("a", "w1", s)["result"] for s in ("trusted", "unknown", "pending")] == [
        "pass", "warn", "skip"
    ]  # fmt: skip


def test_merge_replaces_only_this_replicas_nodes_and_keeps_unchanged_timestamps() -> None:
    existing = [wire("a", "w1", when=NOW), wire("b", "w2"), wire("c", "w1")]
    later = NOW + timedelta(minutes=5)
    mine = {"w1": [wire("a", "w1", when=later), wire("d", "w1", "untrusted", later)]}
    merged = merge(existing, mine)
    names = [r["resources"][0]["name"] for r in merged]
    assert names == ["a", "b", "d"]  # c is gone from w1, b is another replica's
    assert merged[0]["timestamp"]["seconds"] == int(NOW.timestamp())  # a unchanged
    assert merge(merged, {"w2": []}) == [merged[0], merged[2]]


def test_merge_keeps_failures_first_when_there_are_too_many() -> None:
    many = [wire(f"p{i:05d}", "w1") for i in range(MAX_RESULTS + 5)]
    many.append(wire("zz-bad", "w1", "untrusted"))
    merged = merge([], {"w1": many})
    assert len(merged) == MAX_RESULTS
    assert any(r["result"] == "fail" for r in merged)


def test_report_body_counts_and_is_not_rewritten_when_unchanged() -> None:
    results = merge([], {"w1": [wire("a", "w1"), wire("b", "w1", "untrusted")]})
    assert summary(results) == {"pass": 1, "fail": 1, "warn": 0, "error": 0, "skip": 0}
    body = report_body("5gc", results, None)
    assert body["apiVersion"] == "wgpolicyk8s.io/v1alpha2"
    assert body["kind"] == "PolicyReport"
    assert body["metadata"]["name"] == "trustgate"
    stored = {**body, "metadata": {**body["metadata"], "resourceVersion": "7"}}
    again = report_body(
        "5gc", merge(results, {"w1": [wire("a", "w1"), wire("b", "w1", "untrusted")]}), stored
    )
    assert again["metadata"]["resourceVersion"] == "7"
    assert same_report(stored, again)
    assert not same_report(None, again)


def test_namespace_modes_follow_the_watch_and_the_deprecated_flag() -> None:
    modes = NamespaceModes("audit", legacy_warn=frozenset({"old"}))
    assert not modes.synced
    modes.replace([namespace("a", "enforce"), namespace("old", None), {"metadata": {}}])
    assert modes.synced
    assert (modes.known("a"), modes.known("old"), modes.known("b")) == ("enforce", "warn", None)
    modes.apply("MODIFIED", namespace("old", "audit"))  # its own label wins over the flag
    modes.apply("ADDED", namespace("b", "bogus"))  # logged as enforcement.invalid_label
    modes.apply("DELETED", namespace("a", "enforce"))
    assert (modes.known("old"), modes.known("b"), modes.known("a")) == ("audit", "enforce", None)
    assert anyio.run(modes.mode, "a") == "audit"  # gone and no lookup: the default


def test_a_failing_lookup_gives_the_default() -> None:
    def broken(_name: str) -> dict[str, Any] | None:
        raise OSError("API server away")

    modes = NamespaceModes("enforce", lookup=broken)
    assert anyio.run(modes.mode, "x") == "enforce"

"""RuntimePolicy objects into policies (pure): several objects of one network function merge,
``spec.parts`` waits for all, an invalid part holds the set, Keylime's format inside
``spec.keylime``; the status conditions; the seed overlay; the no-policy Event."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
import yaml

from attestation.core.names import (
    GATED_ANNOTATION,
    NF_LABEL,
    NO_POLICY_EVENT_REASON,
    SCHEDULING_GATE,
)
from attestation.core.overview import pod_lines
from attestation.core.policy import PolicyError, load_policy
from attestation.core.policy.conditions import policy_status, status_changed
from attestation.core.policy.objects import merge_policies, object_policy, resolve
from attestation.core.verdict import PolicySet
from attestation.verifier.events import no_policy_event, no_policy_message
from attestation.verifier.policywatch import effective_policies, runtime_policy_path

VECTORS = Path(__file__).parent / "vectors"
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def _sha(content: bytes) -> str:
    return f"sha256:{hashlib.sha256(content).hexdigest()}"


def _obj(name: str, nf: str, digests: dict[str, list[str]], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "trustgate.io/v1alpha1",
        "kind": "RuntimePolicy",
        "metadata": {"name": name, "namespace": "trustgate-system", "generation": 3, "uid": "u"},
        "spec": {"networkFunction": nf, "digests": digests, **spec},
        "status": {"conditions": []},
    }


def test_objects_of_one_network_function_are_one_policy() -> None:
    a = _obj("upf-1", "upf", {"/usr/bin/upfd": [_sha(b"1")]}, excludes=["^/tmp/x$"])
    b = _obj("upf-2", "upf", {"/usr/bin/upfd": [_sha(b"2")], "/usr/lib/gtp.so": [_sha(b"g")]})
    smf = _obj("smf", "smf", {"/usr/bin/smfd": [_sha(b"s")]})
    res = resolve([b, smf, a])
    assert set(res.policies) == {"upf", "smf"}
    upf = res.policies["upf"]
    assert upf.digests["/usr/bin/upfd"] == {hashlib.sha256(x).digest() for x in (b"1", b"2")}
    assert "/usr/lib/gtp.so" in upf.digests
    assert upf.excludes == ("^/tmp/x$",)
    assert upf.name == "upf-1"
    assert res.held == frozenset()
    assert all(o.loaded for o in res.outcomes.values())
    assert res.outcomes["upf-2"].entries == 2
    assert "2 paths from 2 object(s) (upf-1, upf-2)" in res.outcomes["upf-1"].message


def test_parts_wait_until_every_part_is_there() -> None:
    one = _obj("upf-1", "upf", {"/a": [_sha(b"a")]}, parts=2)
    two = _obj("upf-2", "upf", {"/b": [_sha(b"b")]}, parts=2)
    res = resolve([one])
    assert res.policies == {}
    assert res.held == {"upf"}
    assert res.outcomes["upf-1"].reason == "Incomplete"
    assert "1 of spec.parts=2" in res.outcomes["upf-1"].message
    assert set(resolve([one, two]).policies["upf"].digests) == {"/a", "/b"}


def test_parts_that_disagree_hold_the_set() -> None:
    res = resolve([_obj("a", "amf", {"/a": [_sha(b"a")]}, parts=2), _obj("b", "amf", {})])
    assert res.held == {"amf"}
    assert res.outcomes["a"].reason == "PartsDisagree"
    assert "a: 2, b: unset" in res.outcomes["b"].message


def test_an_invalid_part_holds_its_set_and_names_the_field() -> None:
    good = _obj("upf-1", "upf", {"/a": [_sha(b"a")]})
    bad = _obj("upf-2", "upf", {"/b": ["sha256:abcd"]})
    res = resolve([good, bad])
    assert "upf" not in res.policies
    assert res.held == {"upf"}
    out = res.outcomes["upf-2"]
    assert (out.loaded, out.invalid, out.reason) == (False, True, "Invalid")
    assert 'RuntimePolicy upf-2: spec.digests["/b"][0]' in out.message
    other = res.outcomes["upf-1"]
    assert (other.loaded, other.invalid, other.reason) == (False, False, "OtherPartInvalid")
    assert "upf-2" in other.message


@pytest.mark.parametrize(
    ("spec", "why"),
    [
        ({"networkFunction": ""}, "spec.networkFunction: must be a non-empty string"),
        ({"networkFunction": "upf", "parts": 0}, "spec.parts: must be a positive integer"),
        ({"networkFunction": "upf", "excludes": ["("]}, "spec.excludes[0]"),
        ({"networkFunction": "upf", "keylime": []}, "spec.keylime: must be an object"),
        ({"networkFunction": "upf", "extra": 1}, "unknown fields ['extra']"),
    ],
)
def test_object_errors_name_the_field(spec: dict[str, Any], why: str) -> None:
    with pytest.raises(PolicyError, match=r"RuntimePolicy p") as e:
        object_policy({"metadata": {"name": "p"}, "spec": spec})
    assert why in str(e.value)


def test_a_keylime_policy_inside_an_object() -> None:
    keylime = json.loads((VECTORS / "keylime_runtime_policy.json").read_text())
    obj = _obj("kl", "upf", {"/extra": [_sha(b"e")]}, keylime=keylime)
    policy = object_policy(obj)
    assert policy.network_function == "upf"
    assert {"/usr/bin/upf", "/extra"} <= set(policy.digests)
    assert len(policy.boot_aggregates) == 1
    assert len(policy.keys) == 2
    keylime["digests"]["/usr/bin/upf"] = ["abcd"]
    with pytest.raises(PolicyError, match=r"RuntimePolicy kl spec.keylime: digests"):
        object_policy(_obj("kl", "upf", {}, keylime=keylime))


def test_merge_is_a_union_and_keeps_the_name_given() -> None:
    a = object_policy(_obj("a", "x", {"/a": [_sha(b"1")]}, bootAggregate=[_sha(b"b")]))
    b = object_policy(_obj("b", "x", {"/a": [_sha(b"2")]}, excludes=["^/e$"]))
    merged = merge_policies("x-all", "x", [a, b])
    assert (merged.name, merged.network_function) == ("x-all", "x")
    assert len(merged.digests["/a"]) == 2
    assert merged.boot_aggregates == a.boot_aggregates
    assert merged.exclude_re is not None
    assert merged.exclude_re.match("/e")


def test_conditions_say_loaded_or_invalid_and_keep_their_transition_time() -> None:
    obj = _obj("upf", "upf", {"/a": [_sha(b"a")]})
    outcome = resolve([obj]).outcomes["upf"]
    status = policy_status(obj, outcome, NOW)
    loaded, invalid = status["conditions"]
    assert (loaded["type"], loaded["status"], loaded["reason"]) == ("Loaded", "True", "Loaded")
    assert (invalid["type"], invalid["status"], invalid["reason"]) == ("Invalid", "False", "Valid")
    assert loaded["observedGeneration"] == 3 == status["observedGeneration"]
    assert status["entries"] == 1
    assert loaded["lastTransitionTime"] == "2026-11-30T12:00:00Z"
    # Written, then recomputed later with the same outcome: nothing to write.
    obj["status"] = status
    again = policy_status(obj, outcome, NOW + timedelta(minutes=5))
    assert not status_changed(obj, again)
    # The object turns invalid: both conditions flip, with the new time.
    obj["spec"]["digests"] = {"/a": ["sha256:00"]}
    bad = policy_status(obj, resolve([obj]).outcomes["upf"], NOW + timedelta(minutes=9))
    assert status_changed(obj, bad)
    loaded, invalid = bad["conditions"]
    assert (loaded["status"], invalid["status"], invalid["reason"]) == ("False", "True", "Invalid")
    assert "spec.digests" in invalid["message"]
    assert invalid["lastTransitionTime"] == "2026-11-30T12:09:00Z"


def test_live_objects_override_the_seed_per_network_function() -> None:
    seed_amf = object_policy(_obj("amf-seed", "amf", {"/a": [_sha(b"a")]}))
    seed_host = object_policy(_obj("host-seed", "host", {"/h": [_sha(b"h")]}))
    seed = PolicySet(MappingProxyType({"amf": seed_amf}), seed_host)
    live_host = object_policy(_obj("host", "host", {"/k": [_sha(b"k")]}))
    live_upf = object_policy(_obj("upf", "upf", {"/u": [_sha(b"u")]}))
    out = effective_policies(seed, {"host": live_host, "upf": live_upf})
    assert dict(out.by_network_function) == {"amf": seed_amf, "upf": live_upf}
    assert out.host is live_host
    assert effective_policies(seed, {}).host is seed_host
    assert runtime_policy_path("ns", "p") == (
        "/apis/trustgate.io/v1alpha1/namespaces/ns/runtimepolicies/p"
    )


def test_the_no_policy_event_names_the_network_function() -> None:
    pod = {"metadata": {"name": "nrf-0", "namespace": "core", "uid": "u1"}}
    ns, ev = no_policy_event(pod, "nrf", instance="verifier-0", now=NOW)
    assert ns == "core"
    assert ev["reason"] == NO_POLICY_EVENT_REASON
    assert ev["type"] == "Warning"
    assert ev["involvedObject"] == {
        "kind": "Pod", "name": "nrf-0", "namespace": "core", "uid": "u1", "apiVersion": "v1"
    }  # fmt: skip
    assert "network function nrf" in ev["message"]
    assert GATED_ANNOTATION.startswith("trustgate.io/")


def test_unchanged_objects_are_not_parsed_again() -> None:
    a = _obj("a", "upf", {"/a": [_sha(b"a")]})
    b = _obj("b", "upf", {"/b": [_sha(b"b")]})
    a["metadata"]["uid"], b["metadata"]["uid"] = "uid-a", "uid-b"
    first = resolve([a, b])
    b["spec"]["digests"] = {"/b": [_sha(b"b2")]}
    b["metadata"]["generation"] = 4  # the API server counts spec changes
    second = resolve([a, b], first.parsed)
    assert second.parsed[("uid-a", 3)] is first.parsed[("uid-a", 3)]
    assert ("uid-b", 3) not in second.parsed
    assert second.policies["upf"].digests["/b"] == {hashlib.sha256(b"b2").digest()}


def test_a_file_of_several_objects_loads_as_one_policy() -> None:
    """The --policies directory and `policy lint` take what `policy generate` prints: objects."""
    a = _obj("upf-1", "upf", {"/a": [_sha(b"a")]}, parts=2)
    b = _obj("upf-2", "upf", {"/b": [_sha(b"b")]}, parts=2)
    for o in (a, b):
        del o["status"]
    policy = load_policy(yaml.safe_dump_all([a, b]), source="upf.yaml")
    assert (policy.network_function, set(policy.digests)) == ("upf", {"/a", "/b"})
    with pytest.raises(PolicyError, match=r"policy upf.yaml: .*upf-1: 1 of spec.parts=2"):
        load_policy(yaml.safe_dump_all([a, {}]), source="upf.yaml")
    other = _obj("smf", "smf", {"/s": [_sha(b"s")]})
    del other["status"]
    with pytest.raises(PolicyError, match="one network function per file"):
        load_policy(yaml.safe_dump_all([a, b, other]), source="upf.yaml")
    with pytest.raises(PolicyError, match=r"spec.keylime: not a Keylime runtime policy"):
        object_policy(_obj("kl", "upf", {}, keylime={"digests": {}}))


def test_trustgate_status_says_a_pod_waits_for_a_policy() -> None:
    pod = {
        "metadata": {"name": "nrf-0", "namespace": "core", "labels": {NF_LABEL: "nrf"},
                     "annotations": {GATED_ANNOTATION: no_policy_message("nrf")}},
        "spec": {"schedulingGates": [{"name": SCHEDULING_GATE}]},
    }  # fmt: skip
    (line,) = pod_lines([pod], [])
    assert (line.state, line.network_function) == ("Waiting", "nrf")
    assert line.why.startswith("gated: no runtime policy is loaded for network function nrf")

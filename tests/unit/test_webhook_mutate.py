"""The mutating decision on recorded AdmissionReviews and on the affinity shapes pods come in."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import pytest

from attestation.core.names import NF_LABEL, SCHEDULING_GATE
from tests.unit.webhook_data import apply_patch, vector
from webhook.mutate import ATTESTED_EXPRESSION, mutate, mutate_pod, pointer
from webhook.protect import ProtectionRules, trustgate_marks
from webhook.responses import complete
from webhook.reviews import decode_review

RULES = ProtectionRules()
REQUIRED = "requiredDuringSchedulingIgnoredDuringExecution"


def decide(stem: str) -> tuple[dict[str, Any], Any]:
    review = vector(stem)
    return review, mutate(decode_review(json.dumps(review).encode()), RULES)


def assert_gated(pod: dict[str, Any], nf: str, *, gate: bool = True) -> None:
    assert pod["metadata"]["labels"]["trustgate.io/network-function"] == nf
    assert pod["metadata"]["annotations"]["trustgate.io/trust-state"] == "pending"
    terms = pod["spec"]["affinity"]["nodeAffinity"][REQUIRED]["nodeSelectorTerms"]
    assert terms
    assert all(ATTESTED_EXPRESSION in t["matchExpressions"] for t in terms)
    gates = [g["name"] for g in pod["spec"].get("schedulingGates") or []]
    assert (SCHEDULING_GATE in gates) is gate
    assert gates.count(SCHEDULING_GATE) <= 1


@pytest.mark.parametrize(
    ("stem", "nf", "gate"),
    [
        ("mutate-pods-create-upf-0", "upf", True),
        ("mutate-pods-create-amf-generated", "amf", True),
        ("mutate-pods-create-upf-dry-dryrun", "upf", True),
        ("mutate-pods-create-upf-gated", "upf", True),
        # A preset nodeName and a gate cannot coexist; the validating webhook checks the node.
        ("mutate-pods-create-smf-pinned", "smf", False),
    ],
)
def test_nf_pod_create_is_patched_and_idempotent(stem: str, nf: str, gate: bool) -> None:
    review, response = decide(stem)
    assert response.allowed
    assert response.decision == "patched"
    pod = review["request"]["object"]
    patched = apply_patch(pod, response.patch)
    assert_gated(patched, nf, gate=gate)
    # Reinvocation (IfNeeded) sees the patched pod and must change nothing more.
    assert mutate_pod(patched, nf) == ()
    # Everything the pod had is still there.
    assert patched["spec"]["containers"] == pod["spec"]["containers"]
    assert {**pod["metadata"]["labels"]}.items() <= patched["metadata"]["labels"].items()


def test_existing_gate_is_not_added_twice() -> None:
    review, response = decide("mutate-pods-create-upf-gated")
    assert not any(op["path"].startswith("/spec/schedulingGates") for op in response.patch)
    assert review["request"]["object"]["spec"]["schedulingGates"] == [{"name": SCHEDULING_GATE}]


@pytest.mark.parametrize(
    "stem",
    [
        "mutate-pods-create-nginx",
        "mutate-pods-binding-create-upf-0",
        "mutate-pods-update-upf-0",
        "mutate-pods-update-upf-gated",
        "mutate-pods-ephemeralcontainers-update-upf-0",  # refused by /validate instead
        "mutate-pods-delete-nginx",
    ],
)
def test_everything_else_passes_unchanged(stem: str) -> None:
    _, response = decide(stem)
    assert response.allowed
    assert response.patch == ()
    assert response.decision == "allowed"


def test_patch_is_encoded_as_base64_json_patch_with_escaped_pointers() -> None:
    review, response = decide("mutate-pods-create-upf-0")
    wire = complete(review["request"]["uid"], response)["response"]
    assert wire["uid"] == review["request"]["uid"]
    assert wire["patchType"] == "JSONPatch"
    ops = json.loads(base64.b64decode(wire["patch"]))
    assert ops == list(response.patch)
    assert {
        "op": "add",
        "path": "/metadata/labels/trustgate.io~1network-function",
        "value": "upf",
    } in ops
    assert {
        "op": "add",
        "path": "/metadata/annotations",
        "value": {"trustgate.io/trust-state": "pending"},
    } in ops


def test_pointer_escaping() -> None:
    assert pointer("a/b", "c~d", "-") == "/a~1b/c~0d/-"


def base_pod(**spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "upf-0", "labels": {"app": "upf"}},
        "spec": {"containers": [{"name": "c", "image": "i"}], **spec},
    }


EXPR = dict(ATTESTED_EXPRESSION)
ZONE = {"key": "zone", "operator": "In", "values": ["a"]}
HOST = {"key": "metadata.name", "operator": "In", "values": ["w1"]}


@pytest.mark.parametrize(
    ("affinity", "expected_terms"),
    [
        (None, [{"matchExpressions": [EXPR]}]),
        ({"podAntiAffinity": {}}, [{"matchExpressions": [EXPR]}]),
        (
            {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}},
            [{"matchExpressions": [EXPR]}],
        ),
        ({"nodeAffinity": {REQUIRED: {"nodeSelectorTerms": []}}}, [{"matchExpressions": [EXPR]}]),
        # Terms are ORed: every term gets the expression, or the pod escapes through one.
        (
            {
                "nodeAffinity": {
                    REQUIRED: {
                        "nodeSelectorTerms": [
                            {"matchExpressions": [ZONE]},
                            {"matchFields": [HOST]},
                            {"matchExpressions": [ZONE, EXPR]},
                        ]
                    }
                }
            },
            [
                {"matchExpressions": [ZONE, EXPR]},
                {"matchFields": [HOST], "matchExpressions": [EXPR]},
                {"matchExpressions": [ZONE, EXPR]},
            ],
        ),
    ],
)
def test_affinity_is_merged_into_every_term(
    affinity: dict[str, Any] | None, expected_terms: list[dict[str, Any]]
) -> None:
    pod = base_pod(**({} if affinity is None else {"affinity": affinity}))
    before = copy.deepcopy(pod)
    ops = mutate_pod(pod, "upf")
    assert pod == before  # never mutates its argument
    patched = apply_patch(pod, ops)
    assert patched["spec"]["affinity"]["nodeAffinity"][REQUIRED]["nodeSelectorTerms"] == (
        expected_terms
    )
    for key, value in (affinity or {}).items():
        if key != "nodeAffinity":
            assert patched["spec"]["affinity"][key] == value
    assert mutate_pod(patched, "upf") == ()


def test_pre_set_trust_state_is_reset_to_pending() -> None:
    pod = base_pod()
    pod["metadata"]["annotations"] = {"trustgate.io/trust-state": "trusted", "other": "x"}
    patched = apply_patch(pod, mutate_pod(pod, "upf"))
    assert patched["metadata"]["annotations"] == {
        "trustgate.io/trust-state": "pending",
        "other": "x",
    }


def test_the_verifiers_marks_are_stripped_from_a_copied_manifest() -> None:
    """A pod copied from a verified UPF (``kubectl get -o yaml``) starts over as pending."""
    pod = base_pod()
    pod["metadata"]["labels"].update({NF_LABEL: "upf", "trustgate.io/attested": "true"})
    pod["metadata"]["annotations"] = {
        "trustgate.io/trust-state": "trusted",
        "trustgate.io/last-verified": "2026-11-26T14:00:00Z",
        "trustgate.io/reason": "",
        "team": "core",
    }
    ops = mutate_pod(pod, "upf")
    assert ops[:3] == (
        {"op": "remove", "path": "/metadata/labels/trustgate.io~1attested"},
        {"op": "remove", "path": "/metadata/annotations/trustgate.io~1last-verified"},
        {"op": "remove", "path": "/metadata/annotations/trustgate.io~1reason"},
    )
    patched = apply_patch(pod, ops)
    assert trustgate_marks(patched) == {
        f"label {NF_LABEL}": "upf",
        "annotation trustgate.io/trust-state": "pending",
    }
    assert patched["metadata"]["annotations"]["team"] == "core"
    assert patched["metadata"]["labels"]["app"] == "upf"
    assert_gated(patched, "upf")
    assert mutate_pod(patched, "upf") == ()


def test_wrong_label_value_is_replaced_and_other_gates_kept() -> None:
    pod = base_pod(schedulingGates=[{"name": "example.com/other"}])
    pod["metadata"]["labels"]["trustgate.io/network-function"] = "amf"
    patched = apply_patch(pod, mutate_pod(pod, "upf"))
    assert patched["metadata"]["labels"]["trustgate.io/network-function"] == "upf"
    assert patched["spec"]["schedulingGates"] == [
        {"name": "example.com/other"},
        {"name": SCHEDULING_GATE},
    ]


def test_pod_without_metadata_gets_it() -> None:
    pod: dict[str, Any] = {"spec": {"containers": []}}
    patched = apply_patch(pod, mutate_pod(pod, "upf"))
    assert_gated(patched, "upf")

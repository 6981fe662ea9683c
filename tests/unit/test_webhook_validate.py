"""The validating decision, table-driven on recorded AdmissionReviews and node trust views."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from attestation.core.enforcement import Enforcement
from attestation.core.nodeattestation import NodeTrust, node_trust
from attestation.core.signing import public_keys_by_id
from tests.unit.webhook_data import NOW, node_attestation, vector
from webhook.responses import Response, allowed, complete, errored
from webhook.reviews import Request, ReviewError, decode_review
from webhook.validate import ValidationPolicy, binding_pod, enforced, validate

VERIFIER_KEY = Ed25519PrivateKey.from_private_bytes(b"v" * 32)
ROGUE_KEY = Ed25519PrivateKey.from_private_bytes(b"r" * 32)
KEYS = public_keys_by_id([VERIFIER_KEY.public_key()])
VERIFIER = "system:serviceaccount:trustgate-system:trustgate-verifier"
POLICY = ValidationPolicy(VERIFIER)
NODE = "worker-1"  # the node the recorded pods were bound to
UNKNOWN_FILE = "ima.policy.unknown_file (/usr/bin/nc in pod upf-0)"


def view(obj: dict[str, Any] | None) -> Mapping[str, NodeTrust]:
    if obj is None:
        return {}
    trust = node_trust(obj, KEYS)
    return {trust.node: trust}


def copied() -> dict[str, Any]:
    obj = node_attestation("worker-9", VERIFIER_KEY)
    obj["metadata"]["name"] = NODE
    return obj


TRUSTED = view(node_attestation(NODE, VERIFIER_KEY))
VIEWS: dict[str, Mapping[str, NodeTrust]] = {
    "trusted": TRUSTED,
    "untrusted": view(node_attestation(NODE, VERIFIER_KEY, state="Untrusted", reason=UNKNOWN_FILE)),
    "pending": view(node_attestation(NODE, VERIFIER_KEY, state="Pending", reason="")),
    "expired": view(node_attestation(NODE, VERIFIER_KEY, ttl=timedelta(seconds=5))),
    "forged": view(node_attestation(NODE, ROGUE_KEY)),
    "unsigned": view(node_attestation(NODE, None)),
    "copied": view(copied()),
    "missing": {},
    "other-node": view(node_attestation("worker-2", VERIFIER_KEY)),
}
REFUSALS = {
    "untrusted": f"node {NODE} is not attested (Untrusted): {UNKNOWN_FILE}",
    "pending": f"node {NODE} is not attested (Pending): no reason given",
    "expired": f"node {NODE} attestation expired at 2026-11-26T13:59:55Z",
    "forged": f"node {NODE} NodeAttestation signature is not from the verifier",
    "unsigned": f"node {NODE} NodeAttestation signature is not from the verifier",
    "copied": f"node {NODE} NodeAttestation signature is not from the verifier",
    "missing": f"node {NODE} has no NodeAttestation",
    "other-node": f"node {NODE} has no NodeAttestation",
}


def pod_of(stem: str) -> dict[str, Any]:
    obj: dict[str, Any] = vector(stem)["request"]["object"]
    return obj


def run(
    review: dict[str, Any],
    trust: Mapping[str, NodeTrust],
    *,
    bound_pod: dict[str, Any] | None = None,
    policy: ValidationPolicy = POLICY,
    mode: Enforcement = "enforce",
) -> Any:
    request = decode_review(json.dumps(review).encode())
    return validate(request, trust=trust, now=NOW, policy=policy, bound_pod=bound_pod, mode=mode)


NODE_CHECKED = [
    # (a) the scheduler binds an NF pod; the Binding has no labels, the looked-up pod does.
    ("validate-pods-binding-create-upf-0", "validate-pods-create-upf-0"),
    ("validate-pods-binding-create-amf-lgsxv", "validate-pods-create-amf-lgsxv"),
    # (b) an NF pod created with spec.nodeName bypasses the scheduler.
    ("validate-pods-create-smf-pinned", None),
]


@pytest.mark.parametrize(("stem", "pod_stem"), NODE_CHECKED)
@pytest.mark.parametrize("trust_name", sorted(VIEWS))
def test_nf_pod_on_a_node_needs_fresh_signed_trust(
    stem: str, pod_stem: str | None, trust_name: str
) -> None:
    bound = pod_of(pod_stem) if pod_stem else None
    response = run(vector(stem), VIEWS[trust_name], bound_pod=bound)
    if trust_name == "trusted":
        assert response.allowed, response.message
        return
    assert not response.allowed
    assert response.code == 403
    assert response.message.startswith(REFUSALS[trust_name])


@pytest.mark.parametrize(
    ("stem", "bound_stem"),
    [
        ("validate-pods-binding-create-nginx", "validate-pods-create-nginx"),
        ("validate-pods-create-nginx", None),
        ("validate-pods-create-upf-0", None),  # gated, no node yet
        ("validate-pods-create-upf-dry-dryrun", None),
        ("validate-pods-create-upf-gated", None),
        ("validate-pods-delete-nginx", None),
    ],
)
def test_allowed_whatever_the_nodes_say(stem: str, bound_stem: str | None) -> None:
    bound = pod_of(bound_stem) if bound_stem else None
    for trust in VIEWS.values():
        response = run(vector(stem), trust, bound_pod=bound)
        assert response.allowed, (stem, response.message)
        assert response.decision == "allowed"


def test_binding_of_a_pod_that_cannot_be_found_fails_closed() -> None:
    response = run(vector("validate-pods-binding-create-upf-0"), TRUSTED, bound_pod=None)
    assert not response.allowed
    assert response.code == 404
    assert "5gc/upf-0 not found" in response.message


def test_binding_pod_reference() -> None:
    request = decode_review(json.dumps(vector("validate-pods-binding-create-upf-0")).encode())
    assert binding_pod(request) == ("5gc", "upf-0", "7666117a-b420-449e-a2ae-d3a1c1138bde")
    pod = decode_review(json.dumps(vector("validate-pods-create-upf-0")).encode())
    assert binding_pod(pod) is None


def gate_removal(username: str) -> dict[str, Any]:
    review = vector("validate-pods-update-upf-gated")
    review["request"]["userInfo"]["username"] = username
    return review


def label_change(old: dict[str, str], new: dict[str, str], where: str = "labels") -> Any:
    """The recorded UPDATE of UPF pod upf-0 with these labels (or annotations) before and after;
    changing annotations, its labels stay as they were."""
    review = vector("validate-pods-update-upf-0")
    request = review["request"]
    request["object"]["metadata"]["labels"] = request["oldObject"]["metadata"]["labels"]
    request["oldObject"]["metadata"][where] = old
    request["object"]["metadata"][where] = new
    return review


@pytest.mark.parametrize(
    ("review", "changed"),
    [
        (gate_removal("lab-admin"), "the scheduling gate trustgate.io/attestation"),
        (gate_removal("system:serviceaccount:trustgate-system:default"), "scheduling gate"),
        (
            label_change({"app": "upf", "trustgate.io/network-function": "upf"}, {"app": "upf"}),
            "label trustgate.io/network-function",
        ),
        (
            label_change(
                {"trustgate.io/trust-state": "pending"},
                {"trustgate.io/trust-state": "trusted"},
                "annotations",
            ),
            "annotation trustgate.io/trust-state",
        ),
        (
            label_change({}, {"trustgate.io/last-verified": "now"}, "annotations"),
            "annotation trustgate.io/last-verified",
        ),
    ],
)
def test_only_the_verifier_changes_trustgate_marks(review: dict[str, Any], changed: str) -> None:
    response = run(review, TRUSTED)
    assert not response.allowed
    assert changed in response.message
    assert "only the trustgate verifier may change" in response.message
    review["request"]["userInfo"]["username"] = VERIFIER
    assert run(review, TRUSTED).allowed


def test_other_annotations_may_change() -> None:
    review = label_change(
        {"trustgate.io/trust-state": "pending", "a": "1"},
        {"trustgate.io/trust-state": "pending", "a": "2"},
        "annotations",
    )
    assert run(review, VIEWS["missing"]).allowed


def test_warn_mode_warns_instead_of_denying() -> None:
    response = run(vector("validate-pods-create-smf-pinned"), VIEWS["untrusted"], mode="warn")
    assert response.allowed
    assert response.decision == "warned"
    assert response.warnings == (f"trustgate warn mode, would deny: {REFUSALS['untrusted']}",)
    assert not response.audit_annotations
    response = run(gate_removal("lab-admin"), TRUSTED, mode="warn")
    assert response.allowed
    assert "scheduling gate" in response.warnings[0]


def test_audit_mode_records_the_refusal_in_the_audit_log_only() -> None:
    response = run(vector("validate-pods-create-smf-pinned"), VIEWS["untrusted"], mode="audit")
    assert response.allowed
    assert response.decision == "audited"
    assert not response.warnings
    assert response.audit_annotations == (("would-deny", REFUSALS["untrusted"]),)
    wire = complete("u", response)["response"]
    assert wire["auditAnnotations"] == {"would-deny": REFUSALS["untrusted"]}
    assert "status" not in wire


@pytest.mark.parametrize("mode", ["warn", "audit"])
def test_no_mode_turns_an_error_or_an_allow_into_something_else(mode: Enforcement) -> None:
    assert enforced(errored(500, "boom"), mode) == errored(500, "boom")
    assert run(vector("validate-pods-create-smf-pinned"), TRUSTED, mode=mode) == allowed()


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda r: r["request"]["object"].pop("target"), "object.target"),
        (lambda r: r["request"]["object"]["target"].pop("name"), "object.target.name"),
        (lambda r: r["request"]["object"].update(metadata={"uid": 5}), "metadata.uid"),
        (lambda r: r["request"].update(object=None), "request.object is missing"),
    ],
)
def test_malformed_binding_is_a_bad_request(mutate: Any, match: str) -> None:
    review = vector("validate-pods-binding-create-upf-0")
    mutate(review)
    request = decode_review(json.dumps(review).encode())
    with pytest.raises(ReviewError, match=match):
        _binding_decision(request)


def _binding_decision(request: Request) -> Response:
    binding_pod(request)
    bound = pod_of("validate-pods-create-upf-0")
    return validate(request, trust=TRUSTED, now=NOW, policy=POLICY, bound_pod=bound)


def test_malformed_node_name_is_a_bad_request() -> None:
    review = vector("validate-pods-create-smf-pinned")
    review["request"]["object"]["spec"]["nodeName"] = ["worker-1"]
    with pytest.raises(ReviewError, match="nodeName"):
        run(review, TRUSTED)


NF = "trustgate.io/network-function"
FIXED = "the network function of pod 5gc/upf-0 is fixed at creation: "


@pytest.mark.parametrize(
    ("old", "new", "detail"),
    [
        # A plain pod relabelled into an NF: it was never gated, and would run unattested.
        ({"app": "web"}, {"app": "upf"}, "it is none, this update makes it upf (label app=upf)"),
        ({"app": "smf"}, {"app": "free5gc-upf"}, "it is smf, this update makes it upf"),
        # Shedding the identity (the recorded request drops app: free5gc-upf).
        ({"app": "free5gc-upf"}, {"team": "core"}, "it is upf, this update makes it none"),
        # The explicit label wins, but app: free5gc-smf would put a UPF behind the SMF's Service.
        (
            {NF: "upf", "app": "free5gc-upf"},
            {NF: "upf", "app": "free5gc-smf"},
            "it is upf, this update makes label app=free5gc-smf name smf",
        ),
        (
            {NF: "upf"},
            {NF: "upf", "component": "amf"},
            "it is upf, this update makes label component=amf name amf",
        ),
    ],
)
@pytest.mark.parametrize("user", ["lab-admin", VERIFIER])
def test_network_function_identity_is_fixed_at_creation(
    old: dict[str, str], new: dict[str, str], detail: str, user: str
) -> None:
    review = label_change(old, new)
    review["request"]["userInfo"]["username"] = user
    response = run(review, TRUSTED)
    assert not response.allowed
    assert response.code == 403
    assert response.message.startswith(FIXED + detail), response.message
    assert response.message.endswith("delete and re-create the pod to change it")


def test_shedding_the_explicit_label_is_refused_to_the_verifier_too() -> None:
    review = label_change({NF: "upf"}, {"team": "core"})
    assert "only the trustgate verifier may change label" in run(review, TRUSTED).message
    review["request"]["userInfo"]["username"] = VERIFIER
    assert run(review, TRUSTED).message.startswith(FIXED + "it is upf, this update makes it none")


def test_the_recorded_relabel_of_a_upf_is_refused() -> None:
    response = run(vector("validate-pods-update-upf-0"), TRUSTED)
    assert response.message == FIXED + (
        "it is upf, this update makes it none; delete and re-create the pod to change it"
    )


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ({NF: "upf", "app": "free5gc-upf"}, {NF: "upf", "app": "open5gs-upfd", "tier": "x"}),
        ({NF: "upf", "app": "upf"}, {NF: "upf"}),  # a second name for the same kind dropped
        ({"app": "web"}, {"app": "web2", "nf": "none"}),  # plain before and after
    ],
)
def test_labels_that_keep_the_identity_may_change(old: dict[str, str], new: dict[str, str]) -> None:
    assert run(label_change(old, new), VIEWS["missing"]).allowed


def created_with(labels: dict[str, str], annotations: dict[str, str]) -> Any:
    review = vector("validate-pods-create-upf-0")
    review["request"]["object"]["metadata"].update(labels=labels, annotations=annotations)
    return review


@pytest.mark.parametrize(
    ("labels", "annotations", "stray"),
    [
        (
            {"app": "upf"},
            {"trustgate.io/trust-state": "trusted"},
            "annotation trustgate.io/trust-state",
        ),
        ({"app": "upf", NF: "upf"}, {"trustgate.io/reason": ""}, "annotation trustgate.io/reason"),
        (
            {"app": "upf", NF: "upf", "trustgate.io/attested": "true"},
            {},
            "label trustgate.io/attested",
        ),
        ({"app": "upf", NF: "oai-upf"}, {}, f"label {NF}"),
    ],
)
def test_an_nf_pod_is_not_created_with_the_verifiers_marks(
    labels: dict[str, str], annotations: dict[str, str], stray: str
) -> None:
    """/mutate strips them; these are what a later mutation put back."""
    response = run(created_with(labels, annotations), TRUSTED)
    assert not response.allowed
    assert response.message.startswith(f"upf pod 5gc/upf-0 may not be created with {stray}:")


def test_an_nf_pod_is_created_with_the_marks_mutate_sets_or_none() -> None:
    marks = created_with({"app": "upf", NF: "upf"}, {"trustgate.io/trust-state": "pending"})
    assert run(marks, TRUSTED).allowed
    assert run(created_with({"app": "upf"}, {"x": "1"}), TRUSTED).allowed
    # A pod that is no NF carries what it likes: the webhook never sees it in a cluster.
    plain = created_with({"app": "web"}, {"trustgate.io/trust-state": "trusted"})
    assert run(plain, TRUSTED).allowed


def test_kubectl_debug_is_refused_in_nf_pods_unless_allowed() -> None:
    review = vector("validate-pods-ephemeralcontainers-update-upf-0")
    response = run(review, TRUSTED)
    assert not response.allowed
    assert response.code == 403
    assert response.message.startswith(
        "ephemeral container debugger in upf pod 5gc/upf-0 refused: an image in no runtime "
        "policy would run inside an attested network function (kubectl debug)"
    )
    assert run(
        review, TRUSTED, policy=ValidationPolicy(VERIFIER, allow_ephemeral_containers=True)
    ).allowed
    assert run(review, TRUSTED, mode="warn").decision == "warned"
    assert run(review, TRUSTED, mode="audit").decision == "audited"


def test_kubectl_debug_of_a_plain_pod_or_adding_nothing_is_allowed() -> None:
    plain = vector("validate-pods-ephemeralcontainers-update-upf-0")
    for which in ("object", "oldObject"):
        plain["request"][which]["metadata"]["labels"] = {"app": "nginx"}
    assert run(plain, TRUSTED).allowed
    nothing = vector("validate-pods-ephemeralcontainers-update-upf-0")
    nothing["request"]["object"] = nothing["request"]["oldObject"]
    assert run(nothing, TRUSTED).allowed


@pytest.mark.parametrize(
    ("containers", "match"),
    [({"name": "x"}, "ephemeralContainers is not a list"), ([{"name": 5}], "name is not a string")],
)
def test_malformed_ephemeral_containers_are_a_bad_request(containers: Any, match: str) -> None:
    review = vector("validate-pods-ephemeralcontainers-update-upf-0")
    review["request"]["object"]["spec"]["ephemeralContainers"] = containers
    with pytest.raises(ReviewError, match=match):
        run(review, TRUSTED)

"""Signed NodeAttestation status: the contract between the verifier and every reader."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from attestation.core.nodeattestation import NodeAttestationError, node_trust
from attestation.core.signing import (
    SigningError,
    canonical_payload,
    key_id,
    load_private_key_pem,
    load_public_key_pem,
    private_key_to_pem,
    public_key_to_pem,
    public_keys_by_id,
    sign_status,
    verify_status,
)
from tests.unit.webhook_data import NOW, node_attestation, status

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
KEYS = public_keys_by_id([KEY.public_key()])


def test_canonical_payload_is_sorted_compact_utf8_and_binds_the_node() -> None:
    payload = canonical_payload("wörker-1", {"state": "Trusted", "b": [1, {"z": 1, "a": 2}]})
    assert payload == '{"b":[1,{"a":2,"z":1}],"node":"wörker-1","state":"Trusted"}'.encode()


def test_canonical_payload_leaves_out_the_signature() -> None:
    st = status()
    assert canonical_payload("n", st) == canonical_payload("n", sign_status("n", st, KEY))


@pytest.mark.parametrize(
    ("node", "st", "match"),
    [
        ("", {}, "node name is empty"),
        ("n", {"node": "m"}, "collide"),
        ("n", {"x": float("nan")}, "not canonical JSON"),
        ("n", {"x": b"bytes"}, "not canonical JSON"),
    ],
)
def test_canonical_payload_refuses(node: str, st: dict[str, Any], match: str) -> None:
    with pytest.raises(SigningError, match=match):
        canonical_payload(node, st)


def test_key_id_is_sha256_prefix_of_raw_public_key() -> None:
    raw = KEY.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert key_id(KEY.public_key()) == hashlib.sha256(raw).hexdigest()[:16]


def test_sign_then_verify_and_argument_unchanged() -> None:
    st = status()
    before = json.dumps(st, sort_keys=True)
    signed = sign_status("worker-1", st, KEY)
    assert json.dumps(st, sort_keys=True) == before
    assert signed["signature"]["keyId"] == key_id(KEY.public_key())
    assert signed["signature"]["algorithm"] == "Ed25519"
    assert len(base64.b64decode(signed["signature"]["value"])) == 64
    assert verify_status("worker-1", signed, KEYS) is None
    # Re-signing replaces the old signature instead of signing over it.
    assert verify_status("worker-1", sign_status("worker-1", signed, KEY), KEYS) is None


def _tamper(field: str, value: Any) -> dict[str, Any]:
    signed = sign_status("worker-1", status(), KEY)
    if field.startswith("signature."):
        signed["signature"] = {**signed["signature"], field.split(".", 1)[1]: value}
    elif value is None:
        del signed[field]
    else:
        signed[field] = value
    return signed


OTHER = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))


@pytest.mark.parametrize(
    ("node", "signed", "failure_id"),
    [
        ("worker-2", sign_status("worker-1", status(), KEY), "signature.invalid"),
        ("worker-1", _tamper("state", "Untrusted"), "signature.invalid"),
        ("worker-1", _tamper("expiresAt", "2099-01-01T00:00:00Z"), "signature.invalid"),
        ("worker-1", _tamper("signature", None), "signature.missing"),
        ("worker-1", _tamper("signature", "abc"), "signature.missing"),
        ("worker-1", _tamper("signature.algorithm", "RS256"), "signature.algorithm"),
        ("worker-1", _tamper("signature.keyId", "0123456789abcdef"), "signature.unknown_key"),
        ("worker-1", _tamper("signature.keyId", 5), "signature.malformed"),
        ("worker-1", _tamper("signature.value", "not base64!"), "signature.malformed"),
        ("worker-1", _tamper("signature.value", "AAAA"), "signature.invalid"),
        ("worker-1", sign_status("worker-1", status(), OTHER), "signature.unknown_key"),
        (
            "worker-1",
            {**sign_status("worker-1", status(), KEY), "node": "x"},
            "signature.malformed",
        ),
    ],
)
def test_verify_refuses(node: str, signed: dict[str, Any], failure_id: str) -> None:
    failure = verify_status(node, signed, KEYS)
    assert failure is not None
    assert failure.id == failure_id
    assert failure.message


def test_key_rotation_accepts_any_configured_key() -> None:
    keys = public_keys_by_id([KEY.public_key(), OTHER.public_key()])
    assert verify_status("n", sign_status("n", status(), OTHER), keys) is None


def test_pem_round_trip() -> None:
    private = load_private_key_pem(private_key_to_pem(KEY))
    public = load_public_key_pem(public_key_to_pem(KEY.public_key()))
    assert key_id(private.public_key()) == key_id(public) == key_id(KEY.public_key())


@pytest.mark.parametrize(
    "pem", [b"", b"-----BEGIN PUBLIC KEY-----\nxx\n-----END PUBLIC KEY-----\n"]
)
def test_pem_load_refuses_garbage(pem: bytes) -> None:
    with pytest.raises(SigningError):
        load_public_key_pem(pem)
    with pytest.raises(SigningError):
        load_private_key_pem(pem)


def test_pem_load_refuses_other_key_types() -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    ec_key = ec.generate_private_key(ec.SECP256R1())
    pem = ec_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(SigningError, match="not Ed25519"):
        load_private_key_pem(pem)
    with pytest.raises(SigningError, match="not Ed25519"):
        load_public_key_pem(public_key_to_pem(ec_key.public_key()))  # type: ignore[arg-type]


# -- NodeAttestation -> NodeTrust --------------------------------------------------------------


def test_node_trust_of_a_signed_trusted_node() -> None:
    trust = node_trust(node_attestation("worker-1", KEY), KEYS)
    assert trust.defect is None
    assert trust.state == "Trusted"
    assert trust.sequence == 7
    assert trust.pods[0].network_function == "upf"
    assert trust.trusted_at(NOW)
    assert not trust.trusted_at(NOW + timedelta(minutes=2))
    assert not replace(trust, state="Untrusted").trusted_at(NOW)


def test_node_trust_of_an_untrusted_node_keeps_reason_and_failures() -> None:
    trust = node_trust(
        node_attestation("worker-2", KEY, state="Untrusted", reason="ima.policy.unknown_file"),
        KEYS,
    )
    assert trust.defect is None
    assert trust.reason == "ima.policy.unknown_file"
    assert trust.failures[0].id == "ima.policy.unknown_file"
    assert not trust.trusted_at(NOW)


def test_node_trust_copied_to_another_node_is_defective() -> None:
    obj = node_attestation("worker-1", KEY)
    obj["metadata"]["name"] = "worker-2"
    trust = node_trust(obj, KEYS)
    assert trust.defect is not None
    assert trust.defect.id == "signature.invalid"
    assert not trust.trusted_at(NOW)


@pytest.mark.parametrize(
    ("obj", "defect_id"),
    [
        ({"metadata": {"name": "n"}}, "nodeattestation.no_status"),
        ({"metadata": {"name": "n"}, "status": {}}, "nodeattestation.no_status"),
        (node_attestation("n", None), "signature.missing"),
        (
            {"metadata": {"name": "n"}, "status": sign_status("n", {"state": "Fine"}, KEY)},
            "nodeattestation.malformed",
        ),
        (
            {
                "metadata": {"name": "n"},
                "status": sign_status("n", {**status(), "expiresAt": "tomorrow"}, KEY),
            },
            "nodeattestation.malformed",
        ),
        (
            {
                "metadata": {"name": "n"},
                "status": sign_status("n", {**status(), "expiresAt": "2026-11-26T14:00:00"}, KEY),
            },
            "nodeattestation.malformed",
        ),
        (
            {"metadata": {"name": "n"}, "status": sign_status("n", {**status(), "pods": [1]}, KEY)},
            "nodeattestation.malformed",
        ),
        (
            {
                "metadata": {"name": "n"},
                "status": sign_status("n", {**status(), "sequence": True}, KEY),
            },
            "nodeattestation.malformed",
        ),
    ],
)
def test_node_trust_defects(obj: dict[str, Any], defect_id: str) -> None:
    trust = node_trust(obj, KEYS)
    assert trust.defect is not None
    assert trust.defect.id == defect_id
    assert not trust.trusted_at(NOW)


@pytest.mark.parametrize("obj", [{}, {"metadata": {}}, {"metadata": {"name": ""}}, {"metadata": 1}])
def test_node_trust_needs_a_name(obj: dict[str, Any]) -> None:
    with pytest.raises(NodeAttestationError, match=r"metadata\.name"):
        node_trust(obj, KEYS)

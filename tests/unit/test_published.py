"""What a new leader reads back from the NodeAttestations in the cluster (read_published): only
statuses signed by its own keys count, for trust, for the EK binding and for the sequence."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from attestation.core.nodeattestation import NodeTrust
from attestation.core.signing import public_keys_by_id, sign_status
from attestation.verifier.published import Published, read_published

V, E = "2025-03-01T12:00:00Z", "2025-03-01T12:00:10Z"
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
OTHER = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
KEYS = public_keys_by_id([KEY.public_key()])


def _status(**fields: Any) -> dict[str, Any]:
    return {"state": "Trusted", "reason": "", "verifiedAt": V, "expiresAt": E, **fields}


def _obj(name: str, status: dict[str, Any], version: str = "1") -> dict[str, Any]:
    return {"metadata": {"name": name, "resourceVersion": version}, "status": status}


def _signed(name: str, key: Ed25519PrivateKey = KEY, **fields: Any) -> dict[str, Any]:
    return _obj(name, sign_status(name, _status(**fields), key))


def test_signed_states_are_remembered_with_binding_version_and_sequence() -> None:
    published, sequence = read_published(
        [
            _signed("a", sequence=7, ekDigest="ab" * 32),
            _signed("b", state="Unknown", reason="agent.timeout: x", expiresAt=V, sequence=9),
        ],
        KEYS,
    )
    assert sequence == 9
    verified = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    expires = datetime(2025, 3, 1, 12, 0, 10, tzinfo=UTC)
    assert published == {
        "a": Published(
            NodeTrust("a", "Trusted", "", verified, expires, 7, ek_digest="ab" * 32), version="1"
        ),
        "b": Published(
            NodeTrust("b", "Unknown", "agent.timeout: x", verified, verified, 9), version="1"
        ),
    }
    assert not published["a"].labelled  # label and taint are written again once


@pytest.mark.parametrize(
    "obj",
    [
        pytest.param(_obj("unsigned", _status(sequence=50)), id="unsigned"),
        pytest.param(_signed("foreign", OTHER, sequence=60), id="another key"),
        pytest.param(
            _obj("copied", sign_status("elsewhere", _status(sequence=70), KEY)), id="copied"
        ),
        pytest.param(
            _obj("edited", {**sign_status("edited", _status(sequence=3), KEY), "sequence": 80}),
            id="edited after signing",
        ),
        pytest.param(_signed("bad-time", verifiedAt="noon", sequence=40), id="bad time"),
        pytest.param(_signed("future", state="Quarantined", sequence=12), id="unknown state"),
        pytest.param({"metadata": {"name": "no-status"}}, id="no status"),
        pytest.param({"metadata": {}, "status": _status()}, id="no name"),
    ],
)
def test_statuses_that_do_not_verify_count_for_nothing(obj: dict[str, Any]) -> None:
    """An admin (or anyone with write access) could write ``state: Trusted`` or a huge
    sequence; a start-up must not lift gates on it nor carry it on."""
    assert read_published([obj], KEYS) == ({}, 0)

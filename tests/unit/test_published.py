"""What a new leader reads back from the NodeAttestations in the cluster (read_published)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from attestation.core.nodeattestation import NodeTrust
from attestation.verifier.published import Published, read_published

V, E = "2025-03-01T12:00:00Z", "2025-03-01T12:00:10Z"


def _obj(name: str, **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": name}, "status": status}


def test_states_are_remembered_and_the_sequence_continues() -> None:
    published, sequence = read_published(
        [
            _obj("a", state="Trusted", reason="", verifiedAt=V, expiresAt=E, sequence=7),
            _obj("b", state="Unknown", reason="agent.timeout: x", verifiedAt=V, expiresAt=V,
                 sequence="9"),
        ]
    )  # fmt: skip
    assert sequence == 9
    verified = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    expires = datetime(2025, 3, 1, 12, 0, 10, tzinfo=UTC)
    assert published == {
        "a": Published(NodeTrust("a", "Trusted", "", verified, expires, 7)),
        "b": Published(NodeTrust("b", "Unknown", "agent.timeout: x", verified, verified, 9)),
    }
    assert not published["a"].labelled  # label and taint are written again once


def test_unreadable_objects_are_skipped_and_unknown_states_only_count() -> None:
    published, sequence = read_published(
        [
            _obj("no-times", state="Trusted", sequence=50),
            _obj("bad-time", state="Trusted", verifiedAt="noon", expiresAt=E, sequence=40),
            _obj("bad-seq", state="Trusted", verifiedAt=V, expiresAt=E, sequence="many"),
            _obj("future", state="Quarantined", verifiedAt=V, expiresAt=E, sequence=12),
            {"metadata": {"name": "no-status"}},
        ]
    )
    assert published == {}
    assert sequence == 12

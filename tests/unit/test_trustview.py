"""The webhook's trust view never goes back to an older signed verdict for a node (issue 14, item
10): an older, genuinely signed status written back — by an admin, a restore, a deposed verifier
replica — is not taken, through watch events, relists and deletions alike."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from attestation.core.signing import public_keys_by_id
from tests.unit.webhook_data import NOW, node_attestation
from webhook.trustview import TrustView

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
KEYS = public_keys_by_id([KEY.public_key()])


def _view() -> TrustView:
    view = TrustView(KEYS)
    view.replace([node_attestation("w1", KEY, sequence=5)])
    view.apply("MODIFIED", node_attestation("w1", KEY, state="Untrusted", sequence=9))
    return view


def test_an_older_signed_trusted_verdict_written_back_is_not_taken() -> None:
    view = _view()
    view.apply("MODIFIED", node_attestation("w1", KEY, sequence=5))
    held = view.nodes["w1"]
    assert (held.state, held.sequence, held.defect) == ("Untrusted", 9, None)
    assert not held.trusted_at(NOW)


def test_a_newer_verdict_and_the_same_one_again_are_taken() -> None:
    view = _view()
    view.apply("MODIFIED", node_attestation("w1", KEY, state="Untrusted", sequence=9))
    assert view.nodes["w1"].sequence == 9
    view.apply("MODIFIED", node_attestation("w1", KEY, sequence=10))
    assert view.nodes["w1"].trusted_at(NOW)


def test_relist_and_deletion_keep_the_highest_sequence_seen() -> None:
    view = _view()
    view.replace([node_attestation("w1", KEY, sequence=5)])  # a relist finds the old one
    assert not view.nodes["w1"].trusted_at(NOW)
    assert view.nodes["w1"].sequence == 9
    view.apply("DELETED", node_attestation("w1", KEY, sequence=9))
    view.apply("ADDED", node_attestation("w1", KEY, sequence=5))  # recreated with an old status
    entry = view.nodes["w1"]
    assert entry.defect is not None
    assert entry.defect.id == "nodeattestation.stale"
    assert "sequence 5 is older than 9" in entry.defect.message
    assert not entry.trusted_at(NOW)


def test_unsigned_statuses_do_not_raise_the_mark() -> None:
    """A forged status with a huge sequence must not lock the node out of later verdicts."""
    view = _view()
    view.apply("MODIFIED", node_attestation("w1", None, sequence=10**15))
    assert view.nodes["w1"].defect is not None
    view.apply("MODIFIED", node_attestation("w1", KEY, sequence=11))
    assert view.nodes["w1"].trusted_at(NOW)

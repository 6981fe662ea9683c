"""The verifier's time rules with the clock set by the test: whether the last verdict still holds
(NodeTrust.trusted_at), when a status is due for a refresh, when an Unknown node's grace is over,
and when another replica's Lease may be taken (attestation.core.freshness)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from attestation.core.clock import format_time
from attestation.core.freshness import lease_expired, refresh_due, unknown_too_long
from attestation.core.names import NodeState
from attestation.core.nodeattestation import NodeTrust
from attestation.core.types import Failure

T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("state", "expires", "now", "holds"),
    [
        ("Trusted", at(10), at(0), True),
        ("Trusted", at(10), at(9.999), True),
        ("Trusted", at(10), at(10), False),  # expiresAt itself is too late
        ("Trusted", at(10), at(60), False),
        ("Trusted", None, at(0), False),
        ("Untrusted", at(10), at(0), False),
        ("Unknown", at(10), at(0), False),
        ("Pending", at(10), at(0), False),
    ],
)
def test_the_last_verdict_holds_while_trusted_and_unexpired(
    state: NodeState, expires: datetime | None, now: datetime, holds: bool
) -> None:
    trust = NodeTrust("worker-1", state, "", at(0), expires, 1)
    assert trust.trusted_at(now) is holds


def test_a_defective_status_never_holds() -> None:
    defect = Failure("nodeattestation.signature_invalid", "signed by another key")
    trust = NodeTrust("worker-1", "Trusted", "", at(0), at(10), 1, defect=defect)
    assert not trust.trusted_at(at(0))


@pytest.mark.parametrize(
    ("verified_at", "now", "due"),
    [
        (None, at(0), True),  # never published
        (at(0), at(0), False),
        (at(0), at(4.999), False),
        (at(0), at(5), True),
        (at(0), at(30), True),
        (at(10), at(0), False),  # the clock stepped back: not due until it passes again
    ],
)
def test_refresh_due(verified_at: datetime | None, now: datetime, due: bool) -> None:
    assert refresh_due(verified_at, now, timedelta(seconds=5)) is due


@pytest.mark.parametrize(
    ("now", "over"),
    [(at(0), False), (at(299.9), False), (at(300), True), (at(3600), True), (at(-1), False)],
)
def test_unknown_grace(now: datetime, over: bool) -> None:
    assert unknown_too_long(at(0), now, timedelta(seconds=300)) is over


def test_no_grace_evicts_at_once() -> None:
    assert unknown_too_long(at(0), at(0), timedelta(0))


MICRO = format_time(at(0), "microseconds")


@pytest.mark.parametrize(
    ("spec", "now", "expired"),
    [
        ({"renewTime": MICRO, "leaseDurationSeconds": 10}, at(5), False),
        ({"renewTime": MICRO, "leaseDurationSeconds": 10}, at(10), False),  # the last instant
        ({"renewTime": MICRO, "leaseDurationSeconds": 10}, at(10.000001), True),
        ({"renewTime": MICRO, "leaseDurationSeconds": 30}, at(20), False),  # the holder's term
        ({"renewTime": MICRO}, at(14), False),  # no duration: ours (15 s)
        ({"renewTime": MICRO, "leaseDurationSeconds": 0}, at(14), False),  # 0: ours too
        ({"renewTime": MICRO}, at(16), True),
        ({"renewTime": "2025-03-01T12:00:00Z", "leaseDurationSeconds": "10"}, at(5), False),
        ({"renewTime": "2025-03-01T13:00:00+01:00", "leaseDurationSeconds": 10}, at(5), False),
        ({"leaseDurationSeconds": 10}, at(0), True),  # never renewed
        ({}, at(0), True),
        ({"renewTime": "yesterday", "leaseDurationSeconds": 10}, at(0), True),
        ({"renewTime": 1740830400, "leaseDurationSeconds": 10}, at(0), True),
        ({"renewTime": "2025-03-01T12:00:00", "leaseDurationSeconds": 10}, at(0), True),  # no zone
        ({"renewTime": MICRO, "leaseDurationSeconds": "ten"}, at(0), True),
        ({"renewTime": MICRO, "leaseDurationSeconds": "nan"}, at(0), True),
    ],
)
def test_lease_expired(spec: dict[str, Any], now: datetime, expired: bool) -> None:
    assert lease_expired(spec, now, 15.0) is expired

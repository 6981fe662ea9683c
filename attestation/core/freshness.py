"""The verifier's time rules, pure: each takes ``now`` and answers one question.

Whether a published verdict still holds at ``now`` is :meth:`NodeTrust.trusted_at
<attestation.core.nodeattestation.NodeTrust.trusted_at>` (the webhook asks the same question);
these are the rest: when a status is rewritten though nothing changed, when a node without fresh
evidence has been Unknown for too long, and when another replica's Lease may be taken.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from attestation.core.clock import parse_time

__all__ = ["lease_expired", "refresh_due", "unknown_too_long"]


def refresh_due(verified_at: datetime | None, now: datetime, every: timedelta) -> bool:
    """A status is rewritten at least ``every`` so that its ``expiresAt`` keeps moving ahead of
    the webhook's clock; a node never published is always due."""
    return verified_at is None or now - verified_at >= every


def unknown_too_long(since: datetime, now: datetime, grace: timedelta) -> bool:
    """A node Unknown since ``since`` (no fresh evidence) has had its grace once ``grace`` has
    passed: root on the node could have stopped the agent to tamper unseen."""
    return now - since >= grace


def lease_expired(spec: Mapping[str, Any], now: datetime, default_duration: float) -> bool:
    """Another holder's Lease may be taken once ``renewTime + leaseDurationSeconds`` has passed
    (``default_duration`` when it names none). A Lease without a readable ``renewTime`` protects
    nothing. This trusts the holder's ``renewTime`` and so both replicas' clocks to agree."""
    renewed = spec.get("renewTime")
    if renewed is None:
        return True
    try:
        renew_time = parse_time(renewed, "renewTime")
        lasts = timedelta(seconds=float(spec.get("leaseDurationSeconds") or default_duration))
    except ValueError:  # not RFC 3339, not a number, NaN
        return True
    return renew_time + lasts < now

"""Time as trustgate reads and writes it: an injectable clock and the one RFC 3339 form.

Whatever decides by time (verdict expiry, unknown-grace, lease expiry, certificate renewal)
takes a :data:`Clock` instead of reading the wall clock, so tests can set the time.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Literal

__all__ = ["Clock", "format_time", "parse_time", "utcnow"]

#: Returns the current time, timezone-aware.
Clock = Callable[[], datetime]


def utcnow() -> datetime:
    """The production clock."""
    return datetime.now(UTC)


def format_time(
    value: datetime, timespec: Literal["auto", "milliseconds", "microseconds"] = "auto"
) -> str:
    """RFC 3339 in UTC with a ``Z``, the form trustgate writes (NodeAttestation times and pod
    annotations: ``auto``; the audit trail: milliseconds; Lease times: microseconds, as the
    API's MicroTime)."""
    if value.tzinfo is None:
        raise ValueError(f"{value!r} has no time zone")
    return value.astimezone(UTC).isoformat(timespec=timespec).replace("+00:00", "Z")


def parse_time(value: object, what: str) -> datetime:
    """RFC 3339 with a zone (``Z`` or an offset), as Kubernetes writes times."""
    if not isinstance(value, str):
        raise ValueError(f"{what} is {type(value).__name__}, not an RFC 3339 string")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as e:
        raise ValueError(f"{what} {value!r} is not RFC 3339") from e
    if parsed.tzinfo is None:
        raise ValueError(f"{what} {value!r} has no time zone")
    return parsed

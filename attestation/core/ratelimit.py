"""A token bucket, as a value: how often a node's accepted pushes may wake its rounds.

Pure: the caller passes ``now`` (a monotonic clock reading, in seconds) and keeps the returned
bucket. Refilled at ``rate`` tokens a second up to ``burst``; a push takes one token, or reserves
the next one (a deferred wake) when none is left.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TokenBucket"]


@dataclass(frozen=True, slots=True)
class TokenBucket:
    rate: float
    burst: float
    tokens: float
    updated: float

    @classmethod
    def full(cls, rate: float, burst: float, now: float) -> TokenBucket:
        if rate <= 0 or burst < 1:
            raise ValueError(f"a bucket needs rate > 0 and burst >= 1, got {rate}, {burst}")
        return cls(rate, burst, burst, now)

    def _refilled(self, now: float) -> float:
        # A clock that went back (it should not: monotonic) refills nothing.
        return min(self.burst, self.tokens + max(0.0, now - self.updated) * self.rate)

    def take(self, now: float) -> tuple[TokenBucket, float]:
        """Take a token: (the bucket after, 0.0) when one was there; else the token is reserved
        (the bucket goes below zero) and the second value says in how many seconds it will have
        been earned. A caller keeps at most one reservation outstanding (``PushGate``)."""
        tokens = self._refilled(now) - 1.0
        return TokenBucket(self.rate, self.burst, tokens, now), max(0.0, -tokens / self.rate)

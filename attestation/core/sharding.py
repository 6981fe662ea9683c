"""Which verifier replica attests which node: rendezvous hashing over the live replicas, and the
hand-over rule that keeps two replicas from attesting one node at once.

Every replica holds a Lease of its own (``verifier.shards``) naming its *incarnation* (its
identity and the time it last (re)joined: the epoch) and the incarnations it has *applied*: the
members it knows of and has given up every node to that the hash now gives them. A node belongs to
the live member with the highest ``score(member, node)`` (rendezvous, or highest-random-weight,
hashing): a member joining or leaving moves only the nodes it takes or held, about ``1/n``.

Hand-over without a second owner: a replica attests its nodes only once every other live member
has applied its current incarnation (``acked``). Two members that each know the other agree on
every node's owner (the higher score wins in both views), so the only overlap left is a member
the other believes dead — and a member is believed dead only when its Lease has not moved for a
whole lease duration of the observer's own successful reads, longer than a member keeps writing
without renewing (``verifier.shards``: the renew deadline). A member that comes back after such a
gap joins again under a new epoch and waits for the others' acknowledgement again.

Pure: times are the caller's (monotonic seconds of this replica), never another replica's clock.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = [
    "MAX_VIEW",
    "Member",
    "Sighting",
    "acked",
    "alive",
    "format_view",
    "incarnation",
    "live_members",
    "owner_of",
    "parse_view",
    "score",
    "sighted",
]

#: Members one view names at most (an annotation is small; a cluster runs a handful).
MAX_VIEW = 64


def incarnation(identity: str, epoch: str) -> str:
    """One run of a member: its identity and the epoch it (re)joined at."""
    return f"{identity}@{epoch}"


@dataclass(frozen=True, slots=True)
class Member:
    """A replica as its Lease shows it."""

    identity: str
    epoch: str
    #: Where it takes forwarded pushes ("" when it takes none).
    url: str = ""
    #: The incarnations it has applied (``parse_view``).
    view: frozenset[str] = frozenset()

    @property
    def incarnation(self) -> str:
        return incarnation(self.identity, self.epoch)


def score(identity: str, node: str) -> int:
    digest = hashlib.sha256(f"{identity}\0{node}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def owner_of(node: str, identities: Iterable[str]) -> str | None:
    """The member with the highest score for ``node`` (ties by name); None with no member."""
    best: tuple[int, str] | None = None
    for identity in identities:
        candidate = (score(identity, node), identity)
        if best is None or candidate > best:
            best = candidate
    return None if best is None else best[1]


def acked(me: str, my_epoch: str, live: Iterable[Member]) -> bool:
    """Whether every other live member has applied this incarnation of ``me``."""
    mine = incarnation(me, my_epoch)
    return all(m.identity == me or mine in m.view for m in live)


def format_view(incarnations: Iterable[str]) -> str:
    return ",".join(sorted(set(incarnations))[:MAX_VIEW])


def parse_view(text: object) -> frozenset[str]:
    """A view as written by ``format_view``; anything else reads as an empty view (which
    acknowledges nobody: the safe side)."""
    if not isinstance(text, str) or not text:
        return frozenset()
    return frozenset(p for p in text.split(",")[:MAX_VIEW] if "@" in p)


@dataclass(frozen=True, slots=True)
class Sighting:
    """What this replica last saw of a member's Lease: its ``renewTime`` as written (an opaque
    token here, never compared with a clock) and when, on this replica's monotonic clock, that
    token was first seen."""

    renew: str
    since: float


def sighted(before: Sighting | None, renew: str, now: float) -> Sighting:
    """The sighting after reading ``renew`` at ``now``: it moved (a new sighting) or not."""
    if before is not None and before.renew == renew:
        return before
    return Sighting(renew, now)


def alive(sighting: Sighting, now: float, duration: float) -> bool:
    """Whether a member's Lease moved within ``duration`` of this replica's own reads."""
    return now - sighting.since < duration


def live_members(
    members: Mapping[str, Member], sightings: Mapping[str, Sighting], now: float, duration: float
) -> dict[str, Member]:
    """The members whose Leases moved recently enough, by identity."""
    return {
        identity: member
        for identity, member in members.items()
        if identity in sightings and alive(sightings[identity], now, duration)
    }

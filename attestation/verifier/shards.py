"""This replica's membership of the verifier shards, and the fence of every write it makes.

Each replica holds the Lease ``<prefix>-<identity>`` (label ``trustgate.io/verifier-shard``):
``acquireTime`` is its epoch (when this incarnation joined), the annotations say where it takes
forwarded pushes and which incarnations it has applied (``core.sharding``). Every ``duration / 4``
it renews that Lease and lists the others'. A peer is live while its Lease moved within
``duration`` of this replica's own successful lists (judged on this replica's monotonic clock,
never against a peer's timestamps); this replica writes only while its own last renewal is younger
than ``duration * 2 / 3`` (the renew deadline), so it has stopped well before any peer can
believe it dead. A replica whose renewal lapsed past that deadline (paused, cut off) joins again
under a new epoch and owns nothing until every live peer has applied it.

On SIGTERM the replica stops its node loops first and then deletes its Lease (``leave``): the
peers take its nodes at their next list, without waiting for an expiry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from attestation.adapters.kube import Kube, KubeError, lease_path
from attestation.core.clock import Clock, format_time, utcnow
from attestation.core.kubeobject import KubeObject
from attestation.core.names import PUSH_URL_ANNOTATION, SHARD_MEMBER_LABEL, SHARD_VIEW_ANNOTATION
from attestation.core.sharding import (
    Member,
    Sighting,
    acked,
    format_view,
    live_members,
    owner_of,
    parse_view,
    sighted,
)

__all__ = ["CLUSTER_DUTIES", "Fence", "Shards", "Unfenced"]

log = logging.getLogger(__name__)

#: A replica stops writing once its last renewal is this share of the lease old (client-go's
#: renewDeadline: 10 s of a 15 s lease).
_RENEW_DEADLINE = 2 / 3
#: The key whose owner does the cluster-wide work (lifting scheduling gates): not a node name.
CLUSTER_DUTIES = ""


class Fence(Protocol):
    """May this replica write about ``node`` now?"""

    def holds(self, node: str) -> bool:
        """From memory, cheap: checked before every write."""
        ...

    def confirm(self, node: str) -> bool:
        """From the API server, blocking: checked when a write found the object changed."""
        ...


class Unfenced:
    """One verifier alone: every write is its own."""

    def holds(self, node: str) -> bool:  # noqa: ARG002 - the Fence protocol
        return True

    def confirm(self, node: str) -> bool:  # noqa: ARG002
        return True


class Shards:
    """``mine(node)`` says whether this replica attests ``node`` now; ``holds(node)`` is the
    fence every write checks (the same answer, from memory)."""

    def __init__(
        self,
        kube: Kube,
        namespace: str,
        prefix: str,
        identity: str,
        duration: float,
        url: str = "",
        *,
        clock: Clock = utcnow,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._kube = kube
        self._namespace = namespace
        self.identity = identity
        self.lease_name = f"{prefix}-{identity}"
        self._duration = duration
        self._url = url
        self._clock = clock
        self._monotonic = monotonic
        #: This incarnation's epoch ("" until joined); the Lease's resourceVersion.
        self.epoch = ""
        self._version = ""
        #: When the last renewal that succeeded was sent (monotonic).
        self._renewed: float | None = None
        self._sightings: dict[str, Sighting] = {}
        #: The live peers the node assignment was last applied for (identity -> Member).
        self._live: dict[str, Member] = {}
        #: Incarnations applied: published in the next renewal.
        self._applied: frozenset[str] = frozenset()

    # -- answers ----------------------------------------------------------------------------------

    def member(self) -> bool:
        """Joined, and renewed recently enough that no peer can have written it off."""
        renewed = self._renewed
        deadline = self._duration * _RENEW_DEADLINE
        return bool(self.epoch) and renewed is not None and self._monotonic() - renewed < deadline

    def owner(self, node: str) -> str | None:
        """The replica the current view gives ``node`` to."""
        return owner_of(node, set(self._live) | {self.identity})

    def mine(self, node: str) -> bool:
        return (
            self.member()
            and acked(self.identity, self.epoch, self._live.values())
            and self.owner(node) == self.identity
        )

    def holds(self, node: str) -> bool:
        return self.mine(node)

    def confirm(self, node: str) -> bool:
        """After a write found the object changed: this replica's Lease is still this
        incarnation's (read from the API server), and the node still its own."""
        try:
            lease = self._kube.get(lease_path(self._namespace, self.lease_name))
        except KubeError as e:
            log.warning("shards: cannot confirm membership: %s", e)
            return False
        spec = (lease or {}).get("spec") or {}
        return spec.get("acquireTime") == self.epoch and self.mine(node)

    def owner_url(self, node: str) -> str | None:
        """Where to forward a push for ``node`` when another live replica owns it."""
        owner = self.owner(node)
        if owner is None or owner == self.identity:
            return None
        return self._live[owner].url or None

    # -- the loop ---------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event, apply: Callable[[], Awaitable[None]]) -> None:
        """Renew and look every ``duration / 4``; after the live set or the acknowledgements
        change, ``apply()`` (start and stop node loops) before the next renewal publishes the
        new view."""
        period = self._duration / 4
        state: tuple[object, ...] = ()
        while not stop.is_set():
            try:
                members = await asyncio.to_thread(self._cycle)
            except KubeError as e:
                log.warning("shards: %s", e)
                members = None
            if members is not None:
                now = self._monotonic()
                live = live_members(members, self._sightings, now, self._duration)
                live.pop(self.identity, None)
                self._live = live
                mine = acked(self.identity, self.epoch, live.values()) and self.member()
                new_state = (frozenset(m.incarnation for m in live.values()), mine, self.epoch)
                if new_state != state:
                    state = new_state
                    await apply()
                    self._applied = frozenset(m.incarnation for m in live.values())
                    continue  # publish the applied view now, not a period later
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), period)

    async def leave(self) -> None:
        """Delete this replica's Lease (its node loops must have stopped)."""
        self.epoch, self._renewed = "", None
        try:
            await asyncio.to_thread(self._kube.delete, lease_path(self._namespace, self.lease_name))
        except KubeError as e:
            log.warning("shards: Lease %s not deleted (%s); it expires instead", self.lease_name, e)

    def _cycle(self) -> dict[str, Member]:
        """Renew this replica's Lease, then list every member's."""
        sent = self._monotonic()
        if not self.member():
            self.epoch = format_time(self._clock(), "microseconds")  # join (again)
        self._renew()
        self._renewed = sent
        items, _ = self._kube.list(
            lease_path(self._namespace), label_selector=f"{SHARD_MEMBER_LABEL}=true"
        )
        now = self._monotonic()
        members: dict[str, Member] = {}
        for lease in items:
            member = _member(lease)
            if member is None:
                continue
            members[member.identity] = member
            renew = str((lease.get("spec") or {}).get("renewTime") or "")
            self._sightings[member.identity] = sighted(
                self._sightings.get(member.identity), renew, now
            )
        for gone in set(self._sightings) - set(members):
            del self._sightings[gone]  # deleted: left (or removed by an operator)
        return members

    def _renew(self) -> None:
        path = lease_path(self._namespace, self.lease_name)
        body = self._lease()
        if self._version:
            body["metadata"]["resourceVersion"] = self._version
            try:
                self._version = str(self._kube.replace(path, body)["metadata"]["resourceVersion"])
                return
            except KubeError as e:
                if e.status not in (404, 409):
                    raise
                if e.status == 404:  # deleted under us: rejoin under a new epoch
                    self.epoch = format_time(self._clock(), "microseconds")
                    body = self._lease()
        current = self._kube.get(path)
        if current is None:
            body["metadata"].pop("resourceVersion", None)
            self._version = str(
                self._kube.create(lease_path(self._namespace), body)["metadata"]["resourceVersion"]
            )
            return
        body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        self._version = str(self._kube.replace(path, body)["metadata"]["resourceVersion"])

    def _lease(self) -> dict[str, Any]:
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": self.lease_name,
                "namespace": self._namespace,
                "labels": {SHARD_MEMBER_LABEL: "true"},
                "annotations": {
                    PUSH_URL_ANNOTATION: self._url,
                    SHARD_VIEW_ANNOTATION: format_view(self._applied),
                },
            },
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": max(1, round(self._duration)),
                "acquireTime": self.epoch,
                "renewTime": format_time(self._clock(), "microseconds"),
            },
        }


def _member(lease: KubeObject) -> Member | None:
    spec = lease.get("spec") or {}
    meta = lease.get("metadata") or {}
    identity, epoch = spec.get("holderIdentity"), spec.get("acquireTime")
    if not isinstance(identity, str) or not identity or not isinstance(epoch, str) or not epoch:
        return None
    annotations = meta.get("annotations") or {}
    url = annotations.get(PUSH_URL_ANNOTATION)
    view = parse_view(annotations.get(SHARD_VIEW_ANNOTATION))
    return Member(identity, epoch, url if isinstance(url, str) else "", view)

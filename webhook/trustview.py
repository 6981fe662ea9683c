"""The webhook's memory: node trust from a NodeAttestation watch, and a short-lived pod cache.

Admission must answer in milliseconds and must not depend on the verifier being up, so nothing
here is called inline on a request path except the pod cache's fallback lookup. The trust view is
fed by ``attestation.adapters.informer.list_watch`` on NodeAttestations (the loop the verifier's
informers run too), which calls ``replace`` and ``apply`` in its thread; each object's signature
is checked once, when its event arrives, and the decision only compares ``now`` with
``expiresAt``.

A signed verdict is never replaced by an older one: the view remembers the highest signed
``sequence`` it has taken per node (across relists and deletions) and keeps the newer verdict when
an older, genuinely signed status is written back (by an admin, a restore, or a deposed verifier
replica). The verifier's sequences start at the time a replica takes over (microseconds since
the Unix epoch), so a new leader's verdicts always count as newer.

The pod lookup is a Protocol so the app can be run on data in tests and on the Kubernetes API in
production (``Kube.get_pod``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Protocol

import anyio
from cachetools import TTLCache
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from attestation.core.kubeobject import KubeObject
from attestation.core.nodeattestation import (
    Binding,
    NodeAttestationError,
    NodeTrust,
    node_name,
    node_trust,
)
from attestation.core.types import Failure

__all__ = ["PodCache", "PodLookup", "TrustView"]

log = logging.getLogger(__name__)


class PodLookup(Protocol):
    """(namespace, name) -> the pod as a dict, or None when it does not exist. Blocking; raises
    on I/O errors."""

    def __call__(self, namespace: str, name: str) -> KubeObject | None: ...


class TrustView:
    """Node name -> ``NodeTrust``. Written by one watch thread, read by the event loop: each
    update is a single dict assignment (atomic under the GIL), a relist swaps the whole dict."""

    def __init__(
        self, public_keys: Mapping[str, Ed25519PublicKey], binding: Binding | None = None
    ) -> None:
        """``binding``: what a verdict must be bound to besides its signature (the webhook's
        cluster, the longest validity it accepts); None only in tests of the signature alone."""
        self._keys = public_keys
        self._binding = binding
        self._nodes: dict[str, NodeTrust] = {}
        #: Node -> the highest signed sequence taken for it (kept when its object is deleted).
        self._highest: dict[str, int] = {}
        self._synced = threading.Event()

    @property
    def nodes(self) -> Mapping[str, NodeTrust]:
        return MappingProxyType(self._nodes)

    @property
    def synced(self) -> bool:
        """True once a full list has been loaded: before that, every NF pod would be refused."""
        return self._synced.is_set()

    def replace(self, objects: Iterable[KubeObject]) -> None:
        nodes: dict[str, NodeTrust] = {}
        for obj in objects:
            entry = self._convert(obj)
            if entry is not None:
                nodes[entry.node] = self._newest(entry)
        self._nodes = nodes
        self._synced.set()

    def apply(self, event_type: str, obj: KubeObject) -> None:
        if event_type in ("ADDED", "MODIFIED"):
            entry = self._convert(obj)
            if entry is not None:
                self._nodes[entry.node] = self._newest(entry)
        elif event_type == "DELETED":
            try:
                self._nodes.pop(node_name(obj), None)
            except NodeAttestationError:
                log.warning("ignoring a DELETED NodeAttestation event without a name")

    def _newest(self, entry: NodeTrust) -> NodeTrust:
        """``entry``, unless it is a signed verdict older than one already taken for its node:
        then the verdict held now (or, after a relist or deletion, a refusal saying why)."""
        highest = self._highest.get(entry.node)
        if entry.defect is not None or highest is None or entry.sequence >= highest:
            if entry.defect is None:
                self._highest[entry.node] = entry.sequence
            return entry
        why = (
            f"NodeAttestation {entry.node}: signed sequence {entry.sequence} is older than "
            f"{highest}, already seen; the older verdict is not taken"
        )
        log.warning("%s", why)
        held = self._nodes.get(entry.node)
        if held is not None and held.defect is None and held.sequence == highest:
            return held
        return NodeTrust(entry.node, "Unknown", why, defect=Failure("nodeattestation.stale", why))

    def _convert(self, obj: KubeObject) -> NodeTrust | None:
        try:
            entry = node_trust(obj, self._keys, self._binding)
        except NodeAttestationError as e:
            log.warning("ignoring NodeAttestation: %s", e)
            return None
        if entry.defect is not None:
            log.warning("NodeAttestation %s unusable: %s", entry.node, entry.defect.message)
        return entry


class PodCache:
    """Pods by (namespace, name): those seen in reviews, else fetched once from the API.

    A Binding names a pod but carries none of its labels; the pod's own CREATE review usually
    passed through this webhook a moment before, so most bindings are answered from memory.
    Only pods that ``keep`` accepts (network functions) are cached: NF-ness is sticky (the
    webhook labels NF pods and guards that label), but a non-NF pod could be relabelled into one
    while a cached copy says otherwise, and a miss must not hide a pod created a moment later.
    Used only on the event loop thread (TTLCache is not thread-safe).
    """

    def __init__(
        self,
        lookup: PodLookup,
        *,
        keep: Callable[[KubeObject], bool],
        ttl_seconds: float,
        maxsize: int,
        timeout_seconds: float,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lookup = lookup
        self._keep = keep
        self._timeout = timeout_seconds
        self._cache: TTLCache[tuple[str, str], KubeObject] = TTLCache(
            maxsize=maxsize, ttl=ttl_seconds, timer=timer
        )

    def remember(self, namespace: str, name: str, pod: KubeObject) -> None:
        if namespace and name and self._keep(pod):
            self._cache[(namespace, name)] = pod

    async def get(self, namespace: str, name: str, uid: str = "") -> KubeObject | None:
        """The pod, from memory when its UID matches (or none is asked for), else from the API
        (a pod deleted and recreated under the same name has a new UID)."""
        cached = self._cache.get((namespace, name))
        if cached is not None and (not uid or _uid(cached) == uid):
            return cached
        with anyio.fail_after(self._timeout):
            pod = await anyio.to_thread.run_sync(
                self._lookup, namespace, name, abandon_on_cancel=True
            )
        if pod is not None:
            self.remember(namespace, name, pod)
        return pod


def _uid(pod: KubeObject) -> str:
    metadata = pod.get("metadata")
    uid = metadata.get("uid") if isinstance(metadata, Mapping) else None
    return uid if isinstance(uid, str) else ""

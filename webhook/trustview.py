"""The webhook's memory: node trust from a NodeAttestation watch, and a short-lived pod cache.

Admission must answer in milliseconds and must not depend on the verifier being up, so nothing
here is called inline on a request path except the pod cache's fallback lookup. The trust view is
fed by a list + watch on NodeAttestations; each object's signature is checked once, when its event
arrives, and the decision only compares ``now`` with ``expiresAt``.

The two inputs are Protocols so the app can be run on data in tests and on the Kubernetes API in
production (``attestation.kube.client`` provides the real ones).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Protocol

import anyio
from cachetools import TTLCache
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from attestation.core.kubeobject import KubeObject
from attestation.core.nodeattestation import NodeAttestationError, NodeTrust, node_name, node_trust

log = logging.getLogger(__name__)

#: Watch event types as the API server sends them. ``ERROR`` (e.g. 410 Gone) ends the watch and
#: the view relists.
WatchEvent = tuple[str, KubeObject]


class NodeTrustSource(Protocol):
    """NodeAttestation objects as plain dicts.

    ``list`` returns every object and the list's resourceVersion; ``watch`` yields
    ``(type, object)`` events from that version on, blocking, and returns when the server ends
    the watch (the view then relists). Both may raise on I/O errors; the view retries.
    """

    def list(self) -> tuple[Sequence[KubeObject], str]: ...

    def watch(self, resource_version: str) -> Iterable[WatchEvent]: ...


class PodLookup(Protocol):
    """(namespace, name) -> the pod as a dict, or None when it does not exist. Blocking; raises
    on I/O errors."""

    def __call__(self, namespace: str, name: str) -> KubeObject | None: ...


class TrustView:
    """Node name -> ``NodeTrust``. Written by one watch thread, read by the event loop: each
    update is a single dict assignment (atomic under the GIL), a relist swaps the whole dict."""

    def __init__(self, public_keys: Mapping[str, Ed25519PublicKey]) -> None:
        self._keys = public_keys
        self._nodes: dict[str, NodeTrust] = {}
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
                nodes[entry.node] = entry
        self._nodes = nodes
        self._synced.set()

    def apply(self, event_type: str, obj: KubeObject) -> None:
        if event_type in ("ADDED", "MODIFIED"):
            entry = self._convert(obj)
            if entry is not None:
                self._nodes[entry.node] = entry
        elif event_type == "DELETED":
            try:
                self._nodes.pop(node_name(obj), None)
            except NodeAttestationError:
                log.warning("ignoring a DELETED NodeAttestation event without a name")

    def run(self, source: NodeTrustSource, stop: threading.Event, retry_seconds: float) -> None:
        """List, then watch, until ``stop`` is set; relist whenever the watch ends or fails.
        The watch may block until the server's timeout before ``stop`` is noticed."""
        while not stop.is_set():
            started = time.monotonic()
            try:
                objects, version = source.list()
                self.replace(objects)
                for event_type, obj in source.watch(version):
                    if stop.is_set():
                        return
                    if event_type == "ERROR":
                        log.info("NodeAttestation watch ended: %s", obj.get("message", obj))
                        break
                    self.apply(event_type, obj)
            except Exception:
                log.exception("NodeAttestation list/watch failed; retrying")
            # A watch that keeps ending at once must not turn into a busy relist loop.
            if time.monotonic() - started < retry_seconds:
                stop.wait(retry_seconds)

    def _convert(self, obj: KubeObject) -> NodeTrust | None:
        try:
            entry = node_trust(obj, self._keys)
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

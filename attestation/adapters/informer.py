"""The one list/watch/relist loop, and the verifier's informer built on it.

``list_watch`` lists a collection, hands the items over, then watches from the list's
resourceVersion and hands over each change; when the watch ends (the server's timeout, an
``ERROR`` event such as 410 Gone, a broken connection) it relists. Both the verifier's informers
and the webhook's trust view run it in a thread, because the Kubernetes client is synchronous;
what they do with the items differs, so the loop takes two callbacks.

``Informer`` keeps the objects in memory for the verifier's asyncio loop: the watch thread hands
each change over with ``call_soon_threadsafe``, so readers on the loop see a dict that only the
loop mutates.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from attestation.adapters.kube import KubeError
from attestation.core.kubeobject import KubeObject, WatchEvent

__all__ = ["Informer", "ListWatchSource", "list_watch", "name_key", "uid_key"]

log = logging.getLogger(__name__)


class ListWatchSource(Protocol):
    """One collection (``attestation.adapters.kube.Resource``, or data in tests).

    ``list`` returns every object and the list's resourceVersion; ``watch`` yields events from
    that version on, blocking, and returns when the server ends the watch. Both may raise on I/O
    errors; the loop retries.
    """

    def list(self) -> tuple[Sequence[KubeObject], str]: ...

    def watch(self, resource_version: str) -> Iterable[WatchEvent]: ...


def list_watch(
    source: ListWatchSource,
    stop: threading.Event,
    on_list: Callable[[Sequence[KubeObject]], object],
    on_event: Callable[[str, KubeObject], object],
    *,
    retry_seconds: float,
    name: str,
) -> None:
    """List, then watch, until ``stop`` is set; relist whenever the watch ends or fails.

    ``on_list`` gets every object after each (re)list, ``on_event`` each ``ADDED``, ``MODIFIED``
    or ``DELETED`` event; both run in the calling thread. A round that ends or fails within
    ``retry_seconds`` waits ``retry_seconds`` before relisting, so an API server that keeps ending
    watches at once (or is down) is not hammered. ``stop`` is noticed at once while waiting, but
    a watch blocked in the server only at its next event or its timeout.
    """
    while not stop.is_set():
        started = time.monotonic()
        try:
            items, version = source.list()
            on_list(items)
            for event_type, obj in source.watch(version):
                if stop.is_set():
                    return
                if event_type == "ERROR":
                    log.info("%s: watch ended: %s", name, obj.get("message", obj))
                    break
                if event_type != "BOOKMARK":
                    on_event(event_type, obj)
        except Exception as e:  # the API server may be restarting; keep trying
            # A bug in a callback keeps its traceback; the API server being away does not need one.
            trouble = isinstance(e, KubeError | OSError)
            log.warning("%s: list/watch failed: %s; retrying", name, e, exc_info=not trouble)
        if time.monotonic() - started < retry_seconds:
            stop.wait(retry_seconds)


def uid_key(obj: KubeObject) -> str:
    return str(obj.get("metadata", {}).get("uid", ""))


def name_key(obj: KubeObject) -> str:
    return str(obj.get("metadata", {}).get("name", ""))


class Informer:
    """Objects of one collection by ``key``, for the verifier's event loop. ``synced`` is set
    after the first list; ``on_change(key, object or None)`` runs on the loop for every change
    (after a relist, for every object)."""

    def __init__(
        self,
        name: str,
        source: ListWatchSource,
        loop: asyncio.AbstractEventLoop,
        *,
        key: Callable[[KubeObject], str] = name_key,
        on_change: Callable[[str, KubeObject | None], None] | None = None,
        backoff: float = 1.0,
    ) -> None:
        self.name = name
        self.objects: dict[str, KubeObject] = {}
        self.synced = asyncio.Event()
        self._source = source
        self._loop = loop
        self._key = key
        self._on_change = on_change
        self._backoff = backoff
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"informer:{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    # -- on the loop ---------------------------------------------------------------------------

    def _replace(self, items: Sequence[KubeObject]) -> None:
        fresh = {self._key(o): o for o in items}
        gone = [k for k in self.objects if k not in fresh]
        self.objects = fresh
        self.synced.set()
        if self._on_change:
            for k in gone:
                self._on_change(k, None)
            for k, o in fresh.items():
                self._on_change(k, o)

    def _apply(self, event_type: str, obj: KubeObject) -> None:
        k = self._key(obj)
        if event_type == "DELETED":
            self.objects.pop(k, None)
            if self._on_change:
                self._on_change(k, None)
        else:
            self.objects[k] = obj
            if self._on_change:
                self._on_change(k, obj)

    # -- in the thread -------------------------------------------------------------------------

    def _run(self) -> None:
        list_watch(
            self._source,
            self._stop,
            lambda items: self._loop.call_soon_threadsafe(self._replace, items),
            lambda event_type, obj: self._loop.call_soon_threadsafe(self._apply, event_type, obj),
            retry_seconds=self._backoff,
            name=f"informer {self.name}",
        )

"""A minimal informer: list, then watch, relist on 410 Gone or a broken watch; keep the objects
in memory and tell the event loop what changed.

The watch runs in a thread (the Kubernetes client is synchronous) and hands each change to the
loop with ``call_soon_threadsafe``; readers on the loop see a dict that only the loop mutates.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Protocol

from attestation.core.kubeobject import KubeObject

log = logging.getLogger(__name__)


class ListWatch(Protocol):
    def list(self) -> tuple[list[KubeObject], str]: ...

    def watch(self, resource_version: str) -> Iterable[tuple[str, KubeObject]]: ...


def uid_key(obj: KubeObject) -> str:
    return str(obj.get("metadata", {}).get("uid", ""))


def name_key(obj: KubeObject) -> str:
    return str(obj.get("metadata", {}).get("name", ""))


class Informer:
    def __init__(
        self,
        name: str,
        source: ListWatch,
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

    def _replace(self, items: list[KubeObject]) -> None:
        fresh = {self._key(o): o for o in items}
        gone = [k for k in self.objects if k not in fresh]
        self.objects = fresh
        self.synced.set()
        if self._on_change:
            for k in gone:
                self._on_change(k, None)
            for k, o in fresh.items():
                self._on_change(k, o)

    def _apply(self, kind: str, obj: KubeObject) -> None:
        k = self._key(obj)
        if kind == "DELETED":
            self.objects.pop(k, None)
            if self._on_change:
                self._on_change(k, None)
        else:
            self.objects[k] = obj
            if self._on_change:
                self._on_change(k, obj)

    # -- in the thread -------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                items, version = self._source.list()
                self._loop.call_soon_threadsafe(self._replace, items)
                for kind, obj in self._source.watch(version):
                    if self._stop.is_set():
                        return
                    if kind == "ERROR":
                        break  # 410 Gone and friends: relist
                    if kind == "BOOKMARK":
                        continue
                    self._loop.call_soon_threadsafe(self._apply, kind, obj)
            except Exception as e:  # the API server may be restarting; keep trying
                log.warning("informer %s: %s; retrying in %.1fs", self.name, e, self._backoff)
                self._stop.wait(self._backoff)
            except BaseException:
                return

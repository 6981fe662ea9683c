"""The webhook's view of each namespace's enforcement mode (``core.enforcement``).

Fed by ``attestation.adapters.informer.list_watch`` on Namespaces (``replace``/``apply`` from its
thread, as the trust view is), so admission reads the mode from memory. A namespace the watch has
not delivered yet (created a moment ago) is looked up once through ``lookup``; when that fails or
times out the cluster default applies — the watch delivers the namespace a moment later.

``legacy_warn`` holds the namespaces of the deprecated ``--audit-namespace`` flag: without a label
of their own they are in ``warn`` mode, which is what that flag did (warnings instead of denials).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import anyio

from attestation.core.enforcement import Enforcement, label_problem, namespace_mode
from attestation.core.kubeobject import KubeObject
from attestation.core.names import ENFORCEMENT_LABEL

__all__ = ["NamespaceLookup", "NamespaceModes"]

log = logging.getLogger(__name__)

#: name -> the Namespace object, or None when there is none. Blocking; raises on I/O errors.
NamespaceLookup = Callable[[str], KubeObject | None]


class NamespaceModes:
    """Namespace name -> its labels. Written by one watch thread, read by the event loop (each
    update is one dict assignment; a relist swaps the dict)."""

    def __init__(
        self,
        default: Enforcement,
        *,
        legacy_warn: frozenset[str] = frozenset(),
        lookup: NamespaceLookup | None = None,
        timeout_seconds: float = 2.0,
    ) -> None:
        self._default = default
        self._legacy_warn = legacy_warn
        self._lookup = lookup
        self._timeout = timeout_seconds
        self._labels: dict[str, Mapping[str, Any]] = {}
        self._synced = threading.Event()

    @property
    def synced(self) -> bool:
        return self._synced.is_set()

    def replace(self, objects: Iterable[KubeObject]) -> None:
        labels: dict[str, Mapping[str, Any]] = {}
        for obj in objects:
            entry = _entry(obj)
            if entry is not None:
                labels[entry[0]] = entry[1]
        self._labels = labels
        self._synced.set()

    def apply(self, event_type: str, obj: KubeObject) -> None:
        entry = _entry(obj)
        if entry is None:
            return
        name, labels = entry
        if event_type == "DELETED":
            self._labels.pop(name, None)
        elif event_type in ("ADDED", "MODIFIED"):
            before = self._labels.get(name)
            self._labels[name] = labels
            if before is None or before.get(ENFORCEMENT_LABEL) != labels.get(ENFORCEMENT_LABEL):
                self._log_mode(name, labels)

    def known(self, namespace: str) -> Enforcement | None:
        """The mode of a namespace the watch delivered, else None."""
        labels = self._labels.get(namespace)
        return None if labels is None else self._mode(namespace, labels)

    async def mode(self, namespace: str) -> Enforcement:
        """The namespace's mode: from memory, else from one lookup, else the default."""
        known = self.known(namespace)
        if known is not None or not namespace:
            return known or self._default
        if self._lookup is not None:
            try:
                with anyio.fail_after(self._timeout):
                    obj = await anyio.to_thread.run_sync(
                        self._lookup, namespace, abandon_on_cancel=True
                    )
            except Exception as e:  # the default is the answer; the log says why
                log.warning(
                    "namespace %s: lookup failed (%s); the default mode applies", namespace, e
                )
                obj = None
            entry = _entry(obj) if obj is not None else None
            if entry is not None:
                return self._mode(namespace, entry[1])
        return self._mode(namespace, {})

    def _mode(self, namespace: str, labels: Mapping[str, Any]) -> Enforcement:
        if ENFORCEMENT_LABEL not in labels and namespace in self._legacy_warn:
            return "warn"
        return namespace_mode(labels, self._default)

    def _log_mode(self, name: str, labels: Mapping[str, Any]) -> None:
        problem = label_problem(labels)
        if problem is not None:
            log.warning("namespace %s: %s (%s)", name, problem.message, problem.id)
        else:
            log.info("namespace %s: enforcement %s", name, self._mode(name, labels))


def _entry(obj: KubeObject) -> tuple[str, Mapping[str, Any]] | None:
    metadata = obj.get("metadata")
    if not isinstance(metadata, Mapping):
        return None
    name = metadata.get("name")
    labels = metadata.get("labels") or {}
    if not isinstance(name, str) or not isinstance(labels, Mapping):
        log.warning("ignoring a Namespace without a name or with malformed labels")
        return None
    return name, labels

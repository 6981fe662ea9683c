"""Pods grouped by the node they are bound to, kept current by an informer's callback.

A round asks for the protected pods on its node (and, without a static agent map, for its node's
agent pod). Scanning every pod in the cluster for that made each round O(pods), so a cluster's
attestation cost grew with nodes x pods; the index makes it O(pods on the node).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from attestation.core.kubeobject import KubeObject

__all__ = ["ByNode"]

T = TypeVar("T")


class ByNode(Generic[T]):
    """``update`` is the informer's ``on_change``; ``convert`` turns a pod into what is kept
    (None: not kept, e.g. not a protected pod)."""

    def __init__(self, convert: Callable[[KubeObject], T | None]) -> None:
        self._convert = convert
        self._groups: dict[str, dict[str, T]] = {}
        self._node_of: dict[str, str] = {}

    def update(self, key: str, obj: KubeObject | None) -> None:
        old = self._node_of.pop(key, None)
        if old is not None:
            group = self._groups[old]
            del group[key]
            if not group:
                del self._groups[old]
        if obj is None:
            return
        node = (obj.get("spec") or {}).get("nodeName")
        value = self._convert(obj)
        if not node or value is None:
            return
        self._groups.setdefault(node, {})[key] = value
        self._node_of[key] = node

    def on(self, node: str) -> dict[str, T]:
        """What is kept for ``node``, by informer key (a copy: the caller may keep it)."""
        return dict(self._groups.get(node, {}))

    def node_of(self, key: str) -> str | None:
        """The node the object ``key`` is kept under (None: not kept)."""
        return self._node_of.get(key)

    def has(self, node: str) -> bool:
        """Whether anything is kept for ``node``."""
        return node in self._groups

    def nodes(self) -> set[str]:
        return set(self._groups)

    def size(self) -> int:
        """How many objects are kept, over every node (empty groups are dropped)."""
        return len(self._node_of)

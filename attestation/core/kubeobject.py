"""A Kubernetes object as the API sends it: decoded JSON with the API's camelCase keys.

The one spelling of that type: the adapter (``attestation.adapters.kube``), the list/watch loop,
the verifier and the webhook all pass objects in this form. A module that cares about a shape
declares a TypedDict for it.
"""

from __future__ import annotations

from typing import Any

__all__ = ["KubeObject", "WatchEvent"]

KubeObject = dict[str, Any]

#: One event of a watch, ``(type, object)``: ``ADDED``, ``MODIFIED``, ``DELETED``, ``BOOKMARK``
#: (only a newer resourceVersion), or ``ERROR`` (e.g. 410 Gone; the object is a Status).
WatchEvent = tuple[str, KubeObject]

"""JSON merge patches (RFC 7386) between two documents: the smallest write that turns what was
written into what is to be written.

A verifier refreshing a node's verdict changes a handful of fields (``verifiedAt``,
``expiresAt``, ``sequence``, the quote digest, the signature) of a status it wrote itself; sending
those, under the resourceVersion it last wrote, stores exactly the new signed status. A document
holding a ``null`` cannot be reached by a merge patch (null deletes), so ``diff`` answers None for
it and the caller replaces the whole document instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["apply", "diff"]


def diff(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any] | None:
    """The merge patch taking ``before`` to ``after`` (``{}`` when equal), or None when no merge
    patch can (``after`` holds a null)."""
    if _has_null(after):
        return None
    patch: dict[str, Any] = {}
    for key, value in after.items():
        old = before.get(key, _MISSING)
        if isinstance(value, Mapping) and isinstance(old, Mapping):
            inner = diff(old, value)
            if inner is None:
                return None
            if inner:
                patch[key] = inner
        elif old is _MISSING or old != value or type(old) is not type(value):
            patch[key] = _plain(value)
    for key in before:
        if key not in after:
            patch[key] = None
    return patch


def apply(target: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """``patch`` applied to ``target`` as RFC 7386 says (what the API server does)."""
    out = dict(target)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, Mapping):
            base = out.get(key)
            out[key] = apply(base if isinstance(base, Mapping) else {}, value)
        else:
            out[key] = value
    return out


_MISSING = object()


def _has_null(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, Mapping):
        return any(_has_null(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_null(v) for v in value)
    return False


def _plain(value: Any) -> Any:
    """A mapping sent whole (no old one to merge into): as a plain dict."""
    return {k: _plain(v) for k, v in value.items()} if isinstance(value, Mapping) else value

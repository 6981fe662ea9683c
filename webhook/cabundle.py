"""The JSON patch that makes every webhook of a configuration trust the current CA bundle.

Pure: a webhook configuration as the API returned it and the bundle in, the patch out. Empty
when every entry already carries the bundle, so replicas that check every few minutes write
nothing and change no resourceVersion. Each ``add`` (which also replaces) is preceded by a
``test`` of that entry's name: if the list was reordered since it was read, the API server
refuses the patch instead of giving one webhook's CA to another entry, and the next check
starts over from a fresh read.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any, Literal, TypedDict

__all__ = ["CaBundleError", "PatchOp", "ca_bundle_in_place", "ca_bundle_patch"]


class PatchOp(TypedDict):
    """One RFC 6902 operation, as the API server takes it (application/json-patch+json)."""

    op: Literal["test", "add"]
    path: str
    value: str


class CaBundleError(ValueError):
    """A webhook configuration without the ``webhooks`` list or entry names."""


def ca_bundle_patch(configuration: Mapping[str, Any], bundle: bytes) -> list[PatchOp]:
    """Ops that set ``clientConfig.caBundle`` to ``bundle`` (PEM bytes) where it differs."""
    kind = configuration.get("kind", "webhook configuration")
    name = (configuration.get("metadata") or {}).get("name", "?")
    webhooks = configuration.get("webhooks")
    if not isinstance(webhooks, list):
        raise CaBundleError(f"{kind} {name}: no webhooks list")
    encoded = base64.b64encode(bundle).decode()
    ops: list[PatchOp] = []
    for i, hook in enumerate(webhooks):
        hook_name = hook.get("name") if isinstance(hook, Mapping) else None
        if not isinstance(hook_name, str):
            raise CaBundleError(f"{kind} {name}: webhooks[{i}] has no name")
        if _decoded(hook.get("clientConfig") or {}) == bundle:
            continue
        ops.append({"op": "test", "path": f"/webhooks/{i}/name", "value": hook_name})
        ops.append({"op": "add", "path": f"/webhooks/{i}/clientConfig/caBundle", "value": encoded})
    return ops


def ca_bundle_in_place(configuration: Mapping[str, Any], bundle: bytes) -> bool:
    return not ca_bundle_patch(configuration, bundle)


def _decoded(client_config: Mapping[str, Any]) -> bytes | None:
    """The API server returns caBundle as base64 of the PEM bytes; anything else differs."""
    value = client_config.get("caBundle")
    if not isinstance(value, str):
        return None
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error:
        return None

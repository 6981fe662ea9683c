"""Keylime's runtime policy JSON, taken as is (``meta``, ``digests`` with bare hex, ``excludes``,
``keyrings``, ``ima``, ``ima-buf``, ``verification-keys``), so existing policies carry over."""

from __future__ import annotations

from typing import Any, Final

from attestation.core.ima_signature import load_keylime_keys
from attestation.core.policy.fields import FieldReader, kind
from attestation.core.policy.model import RuntimePolicy, build_policy

__all__ = ["is_keylime", "keylime_policy"]

_KEYLIME_KEYS: Final = {
    "meta", "release", "digests", "excludes", "keyrings", "ima", "ima-buf", "verification-keys",
}  # fmt: skip


def is_keylime(top: dict[str, Any]) -> bool:
    return "digests" in top and "meta" in top


def keylime_policy(ctx: FieldReader, top: dict[str, Any]) -> RuntimePolicy:
    """The policy a Keylime document holds; named after its file, for network function
    ``keylime``. Keyrings join the ima-buf digests, as Keylime judges both the same way."""
    extra = set(top) - _KEYLIME_KEYS
    if extra:
        raise ctx.fail("document", f"unknown Keylime policy fields {sorted(extra)}")
    meta = ctx.obj(top["meta"], "meta")
    if not isinstance(meta.get("version"), int) or meta["version"] < 0:
        raise ctx.fail(
            "meta.version", f"must be a non-negative integer, not {meta.get('version')!r}"
        )
    digests = ctx.digest_map(top["digests"], "digests", prefixed=False)
    boot = digests.pop("boot_aggregate", frozenset())
    excludes = ctx.regexes(top.get("excludes", []), "excludes")
    buffers = ctx.digest_map(top.get("ima-buf", {}), "ima-buf", prefixed=False)
    for ring, values in ctx.digest_map(top.get("keyrings", {}), "keyrings", prefixed=False).items():
        buffers[ring] = buffers.get(ring, frozenset()) | values
    ima = ctx.obj(top.get("ima", {}), "ima")
    ignored = frozenset(
        ctx.text(v, f"ima.ignored_keyrings[{i}]")
        for i, v in enumerate(ctx.lst(ima.get("ignored_keyrings", []), "ima.ignored_keyrings"))
    )
    vkeys = top.get("verification-keys", "")
    if not isinstance(vkeys, str):
        raise ctx.fail("verification-keys", f"must be a string, not {kind(vkeys)}")
    try:
        keys = load_keylime_keys(vkeys) if vkeys else {}
    except ValueError as e:
        raise ctx.fail("verification-keys", str(e)) from e
    name = ctx.source.rsplit("/", 1)[-1]
    return build_policy(name, "keylime", digests, excludes, keys, boot, buffers, ignored)

"""Loading a policy document, YAML or JSON, ours or Keylime's (:mod:`.keylime`).

Ours: ``{"apiVersion": "trustgate.io/v1alpha1", "kind": "RuntimePolicy", "metadata": {"name":
...}, "spec": {"networkFunction": ..., "digests": {path: ["sha256:<hex>"]}, "excludes": [regex],
"keyrings": {name: [PEM public key]}, "bootAggregate": ["sha256:<hex>"], "keylime": {a Keylime
policy}, "parts": N}}``: the RuntimePolicy object's spec (``objects`` for several objects; a file
of several YAML documents loads the same way, as one policy).
"""

from __future__ import annotations

import json
from typing import Any, Final

import yaml

from attestation.core.ima_signature import PublicKey, load_pem_key
from attestation.core.names import RUNTIME_POLICY_API_VERSION, RUNTIME_POLICY_KIND
from attestation.core.policy.fields import FieldReader, kind
from attestation.core.policy.keylime import is_keylime, keylime_policy
from attestation.core.policy.model import (
    PolicyError,
    RuntimePolicy,
    build_policy,
    merge_policies,
)

__all__ = ["load_policy", "policy_from_document"]

_SPEC_KEYS: Final = {
    "networkFunction", "digests", "excludes", "keyrings", "bootAggregate", "keylime", "parts",
}  # fmt: skip


def load_policy(text: str | bytes, *, source: str) -> RuntimePolicy:
    """Parse and check a policy document (YAML or JSON; ours or Keylime's). ``source`` names it in
    errors (usually the file name)."""
    try:
        docs = list(yaml.safe_load_all(text))
    except yaml.YAMLError as e:
        raise PolicyError(f"policy {source}: not YAML or JSON: {e}") from e
    if len(docs) <= 1:
        return policy_from_document(docs[0] if docs else None, source=source)
    from attestation.core.policy.objects import resolve  # objects builds on this module

    resolution = resolve(d for d in docs if d is not None)
    problems = [f"{n}: {o.message}" for n, o in resolution.outcomes.items() if not o.loaded]
    if problems or len(resolution.policies) != 1:
        why = "; ".join(problems) or f"one network function per file, not {len(docs)} of them"
        raise PolicyError(f"policy {source}: {why}")
    (policy,) = resolution.policies.values()
    return policy


def policy_from_document(doc: object, *, source: str) -> RuntimePolicy:
    ctx = FieldReader(source)
    top = ctx.obj(doc, "document")
    if "apiVersion" in top or "kind" in top:
        return _ours(ctx, top)
    if is_keylime(top):
        return keylime_policy(ctx, top)
    raise ctx.fail(
        "document", f"neither apiVersion {RUNTIME_POLICY_API_VERSION} nor a Keylime runtime policy"
    )


def _ours(ctx: FieldReader, top: dict[str, Any]) -> RuntimePolicy:
    if top.get("apiVersion") != RUNTIME_POLICY_API_VERSION:
        raise ctx.fail(
            "apiVersion", f"must be {RUNTIME_POLICY_API_VERSION!r}, not {top.get('apiVersion')!r}"
        )
    if top.get("kind") != RUNTIME_POLICY_KIND:
        raise ctx.fail("kind", f"must be {RUNTIME_POLICY_KIND!r}, not {top.get('kind')!r}")
    extra = set(top) - {"apiVersion", "kind", "metadata", "spec"}
    if extra:
        raise ctx.fail("document", f"unknown fields {sorted(extra)}")
    name = ctx.text(ctx.obj(top.get("metadata"), "metadata").get("name"), "metadata.name")
    spec = ctx.obj(top.get("spec"), "spec")
    extra = set(spec) - _SPEC_KEYS
    if extra:
        raise ctx.fail("spec", f"unknown fields {sorted(extra)} (known: {sorted(_SPEC_KEYS)})")
    nf = ctx.text(spec.get("networkFunction"), "spec.networkFunction")
    parts = spec.get("parts", 1)
    if not isinstance(parts, int) or isinstance(parts, bool) or parts < 1:
        raise ctx.fail("spec.parts", f"must be a positive integer, not {kind(parts)}")
    digests = ctx.digest_map(spec.get("digests", {}), "spec.digests", prefixed=True)
    excludes = ctx.regexes(spec.get("excludes", []), "spec.excludes")
    keys = _keyrings(ctx, spec.get("keyrings", {}))
    boot = frozenset(
        ctx.digest(v, f"spec.bootAggregate[{i}]", prefixed=True)
        for i, v in enumerate(ctx.lst(spec.get("bootAggregate", []), "spec.bootAggregate"))
    )
    policy = build_policy(name, nf, digests, excludes, keys, boot, {}, frozenset())
    if "keylime" not in spec:
        return policy
    keylime = ctx.obj(spec["keylime"], "spec.keylime")  # Keylime's format, taken as is
    if not is_keylime(keylime):
        raise ctx.fail("spec.keylime", "not a Keylime runtime policy (it has meta and digests)")
    inner = keylime_policy(FieldReader(f"{ctx.source} spec.keylime"), keylime)
    return merge_policies(name, nf, [policy, inner])


def _keyrings(ctx: FieldReader, value: object) -> dict[int, PublicKey]:
    """``spec.keyrings``: PEM keys or certificates by keyring, keyed by their IMA key id."""
    keys: dict[int, PublicKey] = {}
    for ring, pems in ctx.obj(value, "spec.keyrings").items():
        where = f"spec.keyrings[{json.dumps(ring)}]"
        for i, pem in enumerate(ctx.lst(pems, where)):
            try:
                keyid, key = load_pem_key(ctx.text(pem, f"{where}[{i}]").encode())
            except ValueError as e:
                raise ctx.fail(f"{where}[{i}]", str(e)) from e
            keys[keyid] = key
    return keys

"""RuntimePolicy objects (``runtimepolicies.trustgate.io``) into policies: one network function's
policy may span several objects (an object is at most 1 MiB; a big image's digests are more).

Every object of one ``spec.networkFunction`` is one part; the policy is their union (digests per
path, excludes, keys, boot aggregates). ``spec.parts: N`` on every part says how many there are:
until all N are present (an apply of several objects arrives one by one) the set is incomplete,
and the verifier keeps judging by the network function's last loaded policy rather than by a
smaller one that would evict pods running a file listed in a part still to come. An invalid part
holds the whole set the same way. ``spec.keylime`` holds a Keylime runtime policy as is.

Pure: objects in, a :class:`Resolution` out; the verifier applies it and writes the conditions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

from attestation.core.names import RUNTIME_POLICY_API_VERSION, RUNTIME_POLICY_KIND
from attestation.core.policy.fields import FieldReader
from attestation.core.policy.load import policy_from_document
from attestation.core.policy.model import PolicyError, RuntimePolicy, merge_policies

__all__ = [
    "Outcome",
    "Resolution",
    "merge_policies",
    "object_policy",
    "resolve",
]

#: Condition reasons (``status.conditions[].reason``), stable: scripts and alerts match them.
LOADED: Final = "Loaded"
INVALID: Final = "Invalid"
VALID: Final = "Valid"
OTHER_PART_INVALID: Final = "OtherPartInvalid"
INCOMPLETE: Final = "Incomplete"
PARTS_DISAGREE: Final = "PartsDisagree"


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one object: loaded (as part of its network function's policy) or not,
    and why; ``entries`` is how many paths it lists (its printer column)."""

    loaded: bool
    reason: str
    message: str
    invalid: bool = False
    entries: int = 0


@dataclass(frozen=True, slots=True)
class Resolution:
    """``policies``: the merged policy of every network function whose parts are all present and
    valid. ``held``: network functions with objects but no loadable set (keep the last loaded
    policy). ``outcomes``: by object name."""

    policies: Mapping[str, RuntimePolicy]
    held: frozenset[str]
    outcomes: Mapping[str, Outcome]
    #: each object's parsed part by (uid, generation): hand it to the next ``resolve``, which
    #: then parses only what changed (a big policy takes a second to parse)
    parsed: Mapping[tuple[str, int], _Part] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True, slots=True)
class _Part:
    name: str
    network_function: str
    parts: int | None
    policy: RuntimePolicy | None
    error: str = ""


def _name(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata")
    return str(meta.get("name", "")) if isinstance(meta, Mapping) else ""


def object_policy(obj: Mapping[str, Any]) -> RuntimePolicy:
    """One RuntimePolicy object's own policy (our fields, and ``spec.keylime`` if given, as one
    union), for its network function in lower case. Raises PolicyError naming the object and the
    field; the API server's schema already refused most shapes, this checks what a schema
    cannot (digest sizes, regexes, keys). What the API server adds (status, uid, ...) is not
    part of the policy."""
    name = _name(obj) or "(unnamed)"
    source = f"RuntimePolicy {name}"
    ctx = FieldReader(source)
    spec = ctx.obj(obj.get("spec"), "spec")
    nf = ctx.text(spec.get("networkFunction"), "spec.networkFunction").lower()
    doc = {
        "apiVersion": RUNTIME_POLICY_API_VERSION,
        "kind": RUNTIME_POLICY_KIND,
        "metadata": {"name": name},
        "spec": {**spec, "networkFunction": nf},
    }
    return policy_from_document(doc, source=source)


def _part(obj: Mapping[str, Any]) -> _Part:
    name = _name(obj)
    raw = obj.get("spec")
    spec: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
    nf = str(spec.get("networkFunction") or "").lower()
    declared = spec.get("parts")
    parts = declared if isinstance(declared, int) and not isinstance(declared, bool) else None
    try:
        return _Part(name, nf, parts, object_policy(obj))
    except PolicyError as e:
        return _Part(name, nf, parts, None, str(e))


def _set_problem(members: Sequence[_Part]) -> tuple[str, str] | None:
    """Why the parts of one network function do not make a policy yet, or None."""
    bad = [m.name for m in members if m.policy is None]
    if bad:
        return OTHER_PART_INVALID, f"part(s) {', '.join(bad)} invalid; the last loaded policy stays"
    declared = {m.parts for m in members}
    if len(declared) > 1:
        said = ", ".join(f"{m.name}: {m.parts if m.parts else 'unset'}" for m in members)
        return PARTS_DISAGREE, f"the parts disagree on spec.parts ({said})"
    (want,) = declared
    if want is not None and len(members) != want:
        return INCOMPLETE, (
            f"{len(members)} of spec.parts={want} objects present; the last loaded policy stays"
        )
    return None


def _key(obj: Mapping[str, Any]) -> tuple[str, int]:
    meta = obj.get("metadata") or {}
    return str(meta.get("uid") or meta.get("name", "")), int(meta.get("generation") or 0)


def resolve(
    objects: Iterable[Mapping[str, Any]],
    parsed: Mapping[tuple[str, int], _Part] | None = None,
) -> Resolution:
    """Group the objects by network function, merge each complete and valid set, and say what
    became of every object. ``parsed``: the previous resolution's, reused for objects whose
    spec did not change since (same uid and generation)."""
    groups: dict[str, list[_Part]] = {}
    fresh: dict[tuple[str, int], _Part] = {}
    for obj in objects:
        key = _key(obj)
        known = (parsed or {}).get(key)
        part = known if known is not None and key[1] else _part(obj)
        fresh[key] = part
        groups.setdefault(part.network_function, []).append(part)
    policies: dict[str, RuntimePolicy] = {}
    held: set[str] = set()
    outcomes: dict[str, Outcome] = {}
    for nf, members in sorted(groups.items()):
        members.sort(key=lambda m: m.name)
        problem = _set_problem(members)
        if problem is None and nf:
            found = [m.policy for m in members if m.policy is not None]
            merged = merge_policies(members[0].name, nf, found)
            policies[nf] = merged
            total = len(merged.digests)
            names = ", ".join(m.name for m in members)
            why = f"network function {nf}: {total} paths from {len(members)} object(s) ({names})"
        else:
            held.add(nf)
        for m in members:
            entries = len(m.policy.digests) if m.policy else 0
            if m.policy is None:
                outcomes[m.name] = Outcome(False, INVALID, m.error, invalid=True)
            elif problem is not None:
                outcomes[m.name] = Outcome(False, problem[0], problem[1], entries=entries)
            else:
                outcomes[m.name] = Outcome(True, LOADED, why, entries=entries)
    return Resolution(
        MappingProxyType(policies),
        frozenset(held),
        MappingProxyType(outcomes),
        MappingProxyType(fresh),
    )

"""Which nodes the verifier attests: a label selector it can evaluate itself, and the rule that
keeps a node in attestation while anything depends on it.

Selection by label alone let a node leave attestation: the kubelet (and anyone who may edit
Nodes) can remove a label, the verifier's label-selected watch then forgot the node, and its NF
pods kept running with its label, taint and NodeAttestation frozen. So the selector only *adds*
nodes: a node hosting NF pods, or with a NodeAttestation of this verifier's, stays attested until
it has neither, and the shipped selector uses a label under ``node-restriction.kubernetes.io/``
that NodeRestriction forbids a kubelet to touch. Pure: the controller feeds it what it watches.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from attestation.core.names import NODE_RESTRICTION_PREFIX

__all__ = [
    "NodeFacts",
    "Requirement",
    "SelectorError",
    "attested",
    "matches",
    "parse_selector",
    "unrestricted_keys",
]

Operator = Literal["=", "!=", "in", "notin", "exists", "!"]


class SelectorError(ValueError):
    """A label selector that does not parse; the message names the part that is wrong."""


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    op: Operator
    values: frozenset[str] = frozenset()


_KEY = r"[A-Za-z0-9][-A-Za-z0-9_./]*"
_VALUE = r"[A-Za-z0-9_.-]*"
_EQUALITY = re.compile(rf"^({_KEY})\s*(==|=|!=)\s*({_VALUE})$")
_SET = re.compile(rf"^({_KEY})\s+(in|notin)\s*\(([^()]*)\)$")
_EXISTS = re.compile(rf"^(!?)\s*({_KEY})$")


def _split(selector: str) -> list[str]:
    """The selector's requirements: commas split them, except inside ``( ... )``."""
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for ch in selector:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
    parts.append("".join(current).strip())
    return parts


def parse_selector(selector: str) -> tuple[Requirement, ...]:
    """Kubernetes label-selector syntax (``k=v``, ``k==v``, ``k!=v``, ``k in (a,b)``,
    ``k notin (a)``, ``k``, ``!k``, comma-separated); empty selects every node."""
    if not selector.strip():
        return ()
    out: list[Requirement] = []
    for part in _split(selector):
        if m := _EQUALITY.match(part):
            op: Operator = "!=" if m[2] == "!=" else "="
            out.append(Requirement(m[1], op, frozenset({m[3]})))
        elif m := _SET.match(part):
            values = frozenset(v.strip() for v in m[3].split(",") if v.strip())
            if not all(re.fullmatch(_VALUE, v) for v in values):
                raise SelectorError(f"label selector {selector!r}: bad value in {part!r}")
            out.append(Requirement(m[1], "in" if m[2] == "in" else "notin", values))
        elif m := _EXISTS.match(part):
            out.append(Requirement(m[2], "!" if m[1] else "exists"))
        else:
            raise SelectorError(f"label selector {selector!r}: cannot read {part!r}")
    return tuple(out)


def matches(requirements: tuple[Requirement, ...], labels: Mapping[str, str]) -> bool:
    """Whether ``labels`` satisfy every requirement (as the API server decides it)."""
    for r in requirements:
        value = labels.get(r.key)
        if r.op in ("=", "in"):
            ok = value is not None and value in r.values
        elif r.op in ("!=", "notin"):
            ok = value is None or value not in r.values
        elif r.op == "exists":
            ok = value is not None
        else:
            ok = value is None
        if not ok:
            return False
    return True


def unrestricted_keys(requirements: tuple[Requirement, ...]) -> tuple[str, ...]:
    """The selector's label keys a kubelet may add, change or remove on its own Node (every key
    outside ``node-restriction.kubernetes.io/``): with them root on a node decides whether its
    node is selected. The other rules below keep a node that matters attested anyway."""
    return tuple(
        sorted({r.key for r in requirements if not r.key.startswith(NODE_RESTRICTION_PREFIX)})
    )


@dataclass(frozen=True, slots=True)
class NodeFacts:
    """What the verifier knows of one node name. ``attestation_key``: the keyId that signed its
    NodeAttestation ("" for one without a signature yet), None without a NodeAttestation."""

    selected: bool = False
    exists: bool = False
    hosts_nf_pods: bool = False
    attestation_key: str | None = None


def attested(facts: NodeFacts, own_key: str) -> bool:
    """Whether this verifier attests the node.

    - Selected: yes (the operator's label; the shipped one the kubelet cannot change).
    - A NodeAttestation signed by another key: no (another verifier's node: labs sharing a
      control plane, or one verifier per slice), unless selected.
    - Hosting NF pods: yes, whether or not the Node object exists (root cannot delete its Node
      to leave while its pods still run): unattested NF pods are what trustgate prevents.
    - A NodeAttestation of ours on an existing node: yes. It is the node's enrolment record;
      removing a label does not end attestation, deleting the NodeAttestation (an operator's
      act: no node or namespace admin may) or the Node does.
    """
    if facts.selected:
        return True
    ours = facts.attestation_key in (own_key, "")
    if facts.attestation_key is not None and not ours:
        return False
    if facts.hosts_nf_pods:
        return True
    return facts.exists and ours

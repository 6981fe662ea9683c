"""Staged rollout: how trustgate acts on a namespace's NF pods. Pure; the webhook, the verifier and
the CLI ask this one module, so mutation, validation and remediation never disagree.

A namespace chooses with the label ``trustgate.io/enforcement`` (like Pod Security Admission's
``pod-security.kubernetes.io/enforce``); without it the cluster default applies
(``--enforcement-default`` of the webhook and the verifier, ``enforce`` unless set):

=========  ====================================================================================
enforce    today's behaviour: NF pods are gated and pinned to attested nodes, bindings to
           untrusted nodes refused, divergent pods evicted
warn       nothing is gated, pinned, refused or evicted; admission returns what it would refuse
           as AdmissionReview ``warnings`` (kubectl prints them); the verifier annotates, sends
           Events and writes the PolicyReport
audit      as warn, but admission says it only in the API server's audit log
           (``auditAnnotations``), not to the client
=========  ====================================================================================

A value that is none of the three is read as ``enforce``: a typo never loosens anything
(``label_problem`` says what is wrong, for a log line or an Event).

Node-level actions affect every pod of a node, whatever its namespace: the untrusted taint
(NoSchedule) is set only when the cluster default is ``enforce`` (``taints_nodes``). The node's
``trustgate.io/attested`` label always follows the verdict: only pods pinned to it (enforce-mode
NF pods) read it, so an enforce namespace in an audit cluster keeps its protection.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, get_args

from attestation.core.names import ENFORCEMENT_LABEL
from attestation.core.types import Failure

__all__ = [
    "DEFAULT_ENFORCEMENT",
    "ENFORCEMENT_MODES",
    "Actions",
    "Enforcement",
    "actions",
    "label_problem",
    "mode_in",
    "namespace_mode",
    "parse_mode",
    "taints_nodes",
]

Enforcement = Literal["enforce", "warn", "audit"]
ENFORCEMENT_MODES: Final[tuple[Enforcement, ...]] = get_args(Enforcement)
#: What a cluster without ``--enforcement-default`` does: what trustgate always did.
DEFAULT_ENFORCEMENT: Final[Enforcement] = "enforce"


@dataclass(frozen=True, slots=True)
class Actions:
    """What trustgate does to an NF pod of a namespace in one mode."""

    #: The mutation adds the scheduling gate ``trustgate.io/attestation``.
    gate: bool
    #: The mutation adds the required node affinity on ``trustgate.io/attested=true``.
    pin: bool
    #: The validating webhook refuses (bindings to untrusted nodes, marks, identity changes).
    deny: bool
    #: What it would refuse goes back to the client as an AdmissionReview warning.
    warn: bool
    #: The verifier removes a divergent pod (evict, then delete per --remediation).
    evict: bool


_ACTIONS: Final[Mapping[Enforcement, Actions]] = {
    "enforce": Actions(gate=True, pin=True, deny=True, warn=False, evict=True),
    "warn": Actions(gate=False, pin=False, deny=False, warn=True, evict=False),
    "audit": Actions(gate=False, pin=False, deny=False, warn=False, evict=False),
}


def actions(mode: Enforcement) -> Actions:
    return _ACTIONS[mode]


def parse_mode(value: str) -> Enforcement | None:
    """``value`` as a mode (surrounding blanks and case ignored), None when it is none."""
    text = value.strip().lower()
    for mode in ENFORCEMENT_MODES:
        if text == mode:
            return mode
    return None


def namespace_mode(labels: Mapping[str, Any] | None, default: Enforcement) -> Enforcement:
    """The mode a namespace with ``labels`` is in: its label, ``default`` without one, and
    ``enforce`` for a label that names no mode."""
    value = (labels or {}).get(ENFORCEMENT_LABEL)
    if value is None:
        return default
    if not isinstance(value, str):
        return "enforce"
    return parse_mode(value) or "enforce"


def label_problem(labels: Mapping[str, Any] | None) -> Failure | None:
    """Why a namespace's enforcement label is not taken as written, or None."""
    value = (labels or {}).get(ENFORCEMENT_LABEL)
    if value is None or (isinstance(value, str) and parse_mode(value) is not None):
        return None
    return Failure(
        "enforcement.invalid_label",
        f"label {ENFORCEMENT_LABEL}={value!r} is not one of {', '.join(ENFORCEMENT_MODES)}: "
        "enforce applies",
    )


def mode_in(
    namespaces: Mapping[str, Mapping[str, Any]], default: Enforcement, namespace: str
) -> Enforcement:
    """The mode of ``namespace`` given the Namespace objects by name (a watch's cache); one not
    (yet) in it gets ``default``."""
    obj = namespaces.get(namespace)
    if obj is None:
        return default
    metadata = obj.get("metadata")
    labels = metadata.get("labels") if isinstance(metadata, Mapping) else None
    return namespace_mode(labels if isinstance(labels, Mapping) else None, default)


def taints_nodes(default: Enforcement) -> bool:
    """Whether an untrusted node gets the NoSchedule taint. A taint keeps *every* new pod off the
    node, so only a cluster whose default is ``enforce`` sets it: an audit or warn cluster must
    not stop scheduling because a host policy is still being tuned."""
    return default == "enforce"

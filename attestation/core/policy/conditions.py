"""A RuntimePolicy object's ``status``: the ``Loaded`` and ``Invalid`` conditions (with the
reason and a message naming what is wrong), the object's entry count and the generation judged.

Pure. A condition keeps its ``lastTransitionTime`` while its status stays, so writing the status
again for an unchanged outcome changes nothing: :func:`status_changed` then says so and the
verifier writes nothing (every replica computes the same status; none of them loops on the
others' writes).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from attestation.core.clock import format_time
from attestation.core.names import POLICY_INVALID_CONDITION, POLICY_LOADED_CONDITION
from attestation.core.policy.objects import VALID, Outcome

__all__ = ["policy_status", "status_changed"]

_MAX_MESSAGE = 1024


def _condition(
    type_: str, ok: bool, reason: str, message: str, generation: int, now: datetime,
    before: Mapping[str, Any] | None,
) -> dict[str, Any]:  # fmt: skip
    status = "True" if ok else "False"
    since = before.get("lastTransitionTime") if before and before.get("status") == status else None
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message[:_MAX_MESSAGE],
        "observedGeneration": generation,
        "lastTransitionTime": since or format_time(now),
    }


def policy_status(obj: Mapping[str, Any], outcome: Outcome, now: datetime) -> dict[str, Any]:
    """The ``status`` to write for ``obj`` given its ``outcome``."""
    meta = obj.get("metadata") or {}
    generation = int(meta.get("generation") or 0)
    old = {
        c.get("type"): c
        for c in ((obj.get("status") or {}).get("conditions") or [])
        if isinstance(c, Mapping)
    }
    invalid_message = outcome.message if outcome.invalid else "the object is well-formed"
    invalid_reason = outcome.reason if outcome.invalid else VALID
    return {
        "observedGeneration": generation,
        "entries": outcome.entries,
        "conditions": [
            _condition(
                POLICY_LOADED_CONDITION, outcome.loaded, outcome.reason, outcome.message,
                generation, now, old.get(POLICY_LOADED_CONDITION),
            ),
            _condition(
                POLICY_INVALID_CONDITION, outcome.invalid, invalid_reason, invalid_message,
                generation, now, old.get(POLICY_INVALID_CONDITION),
            ),
        ],
    }  # fmt: skip


def status_changed(obj: Mapping[str, Any], status: Mapping[str, Any]) -> bool:
    """Whether ``status`` differs from what ``obj`` already carries."""
    return dict(obj.get("status") or {}) != dict(status)

"""core.mergepatch: the patch between two documents, applied as RFC 7386 does, gives the second."""

from __future__ import annotations

from typing import Any

import pytest

from attestation.core.mergepatch import apply, diff

STATUS: dict[str, Any] = {
    "state": "Trusted",
    "verifiedAt": "2026-11-30T10:00:00Z",
    "sequence": 7,
    "pods": [{"uid": "a", "state": "trusted"}],
    "checkpoint": {"offset": 10, "pcr": "ab", "hostFailures": []},
    "signature": {"keyId": "k", "value": "s1"},
}

CASES = [
    ({**STATUS, "verifiedAt": "2026-11-30T10:00:10Z", "sequence": 8,
      "signature": {"keyId": "k", "value": "s2"}},
     {"verifiedAt": "2026-11-30T10:00:10Z", "sequence": 8, "signature": {"value": "s2"}}),
    ({k: v for k, v in STATUS.items() if k != "checkpoint"}, {"checkpoint": None}),
    ({**STATUS, "pods": []}, {"pods": []}),
    ({**STATUS, "checkpoint": {"offset": 11, "pcr": "ab"}},
     {"checkpoint": {"offset": 11, "hostFailures": None}}),
    ({**STATUS, "sequence": 7.0}, {"sequence": 7.0}),  # a type change is a change
    (STATUS, {}),
]  # fmt: skip


@pytest.mark.parametrize(("after", "patch"), CASES)
def test_the_patch_is_minimal_and_reaches_the_new_document(
    after: dict[str, Any], patch: dict[str, Any]
) -> None:
    assert diff(STATUS, after) == patch
    assert apply(STATUS, patch) == after


def test_a_document_holding_a_null_needs_a_replace() -> None:
    assert diff(STATUS, {**STATUS, "reason": None}) is None
    assert diff(STATUS, {**STATUS, "pods": [{"uid": None}]}) is None

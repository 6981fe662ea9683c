"""Push authentication, the token bucket and the verifier's push gate: pure, clock injected."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from attestation.core.pushauth import (
    Push,
    PushFormatError,
    check_push,
    decode_push,
    encode_push,
    push_key,
    push_mac,
)
from attestation.core.ratelimit import TokenBucket
from attestation.verifier.pushgate import Admission, PushGate

KEY_A = push_key(b"\x01" * 32)
KEY_B = push_key(b"\x02" * 32)


def _push(key: bytes, node: str, counter: int) -> Push:
    return decode_push(dict(encode_push(key, node, counter)))


def test_the_key_is_derived_not_the_secret_itself() -> None:
    assert push_key(b"\x01" * 32) == KEY_A
    assert KEY_A != b"\x01" * 32
    assert KEY_A != KEY_B
    with pytest.raises(ValueError, match="empty"):
        push_key(b"")


@pytest.mark.parametrize(
    ("key", "last", "push", "refused"),
    [
        (KEY_A, 0, _push(KEY_A, "a", 5), None),
        (KEY_A, 4, _push(KEY_A, "a", 5), None),
        (None, 0, _push(KEY_A, "a", 5), "push.not_enrolled"),
        (KEY_A, 0, _push(KEY_B, "a", 5), "push.bad_mac"),  # node B's key, for A
        (KEY_A, 0, Push("a", 6, push_mac(KEY_A, "a", 5)), "push.bad_mac"),  # counter changed
        (KEY_A, 0, Push("b", 5, push_mac(KEY_A, "a", 5)), "push.bad_mac"),  # node changed
        (KEY_A, 5, _push(KEY_A, "a", 5), "push.replayed"),
        (KEY_A, 9, _push(KEY_A, "a", 5), "push.replayed"),
    ],
)
def test_check_push(key: bytes | None, last: int, push: Push, refused: str | None) -> None:
    assert check_push(key, last, push) == refused


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([], "push:"),
        ({"counter": 1, "mac": ""}, "push.node"),
        ({"node": "", "counter": 1, "mac": ""}, "push.node"),
        ({"node": "a" * 254, "counter": 1, "mac": ""}, "push.node"),
        ({"node": "a", "mac": ""}, "push.counter"),
        ({"node": "a", "counter": True, "mac": ""}, "push.counter"),
        ({"node": "a", "counter": "1", "mac": ""}, "push.counter"),
        ({"node": "a", "counter": 0, "mac": ""}, "push.counter"),
        ({"node": "a", "counter": 2**64, "mac": ""}, "push.counter"),
        ({"node": "a", "counter": 1}, "push.mac"),
        ({"node": "a", "counter": 1, "mac": "!!"}, "push.mac"),
        ({"node": "a", "counter": 1, "mac": base64.b64encode(b"x" * 31).decode()}, "push.mac"),
        ({"node": "a", "counter": 1, "mac": "A" * 65}, "push.mac"),
    ],
)
def test_malformed_pushes_name_the_field(body: Any, field: str) -> None:
    with pytest.raises(PushFormatError, match=field.replace(".", r"\.")):
        decode_push(body)


def test_the_bucket_allows_a_burst_then_the_rate() -> None:
    bucket = TokenBucket.full(rate=2.0, burst=2.0, now=0.0)
    bucket, first = bucket.take(0.0)
    bucket, second = bucket.take(0.0)
    assert (first, second) == (0.0, 0.0)
    bucket, third = bucket.take(0.0)
    assert third == pytest.approx(0.5)  # reserved: earned in half a second
    bucket, fourth = bucket.take(1.0)  # refilled 2, minus the reservation, minus this one
    assert fourth == 0.0
    assert bucket.tokens == pytest.approx(0.0)
    bucket, _ = bucket.take(100.0)
    assert bucket.tokens == pytest.approx(1.0)  # never more than the burst
    with pytest.raises(ValueError, match="rate"):
        TokenBucket.full(rate=0.0, burst=1.0, now=0.0)


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_gate_wakes_a_burst_then_coalesces_into_one_deferred_wake() -> None:
    clock = _Clock()
    gate = PushGate(rate=1.0, burst=2.0, clock=clock)
    assert gate.admit(_push(KEY_A, "a", 1)) == Admission(refused="push.not_enrolled")
    gate.install("a", KEY_A)
    assert gate.admit(_push(KEY_B, "a", 1)) == Admission(refused="push.bad_mac")
    assert gate.admit(_push(KEY_A, "a", 1)) == Admission(wake=True)
    assert gate.admit(_push(KEY_A, "a", 1)) == Admission(refused="push.replayed")
    assert gate.admit(_push(KEY_A, "a", 2)) == Admission(wake=True)
    deferred = gate.admit(_push(KEY_A, "a", 3))
    assert deferred.delay == pytest.approx(1.0)
    assert not deferred.wake
    for counter in range(4, 100):  # a flood joins the pending wake
        assert gate.admit(_push(KEY_A, "a", counter)) == Admission()
    clock.now = 1.0
    gate.fired("a")
    later = gate.admit(_push(KEY_A, "a", 100))
    assert later.delay == pytest.approx(1.0)  # the fired wake spent the token it reserved


def test_a_new_enrollment_restarts_the_counter_but_keeps_the_bucket() -> None:
    clock = _Clock()
    gate = PushGate(rate=1.0, burst=1.0, clock=clock)
    gate.install("a", KEY_A)
    assert gate.admit(_push(KEY_A, "a", 50)) == Admission(wake=True)
    gate.install("a", KEY_B)  # re-enrolled: a new key
    assert gate.admit(_push(KEY_A, "a", 51)) == Admission(refused="push.bad_mac")
    again = gate.admit(_push(KEY_B, "a", 1))
    assert again.delay == pytest.approx(1.0)  # no fresh burst from a re-enrollment
    gate.forget("a")
    assert gate.tracked() == 0

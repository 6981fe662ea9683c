"""Quotes made by a real swtpm, checked by the pure verifier: each failure id triggered for real."""

from __future__ import annotations

import dataclasses
import os

import pytest

from attestation.agent.tpm import AkAlg, Tpm, TpmQuote
from attestation.core.quote import QuoteResult, verify_quote
from attestation.core.types import ClockInfo, HashAlg
from tests.support.swtpm import SwTpm, SwTpmFactory

pytestmark = pytest.mark.tpm

PCRS = (0, 1, 2, 3, 4, 5, 6, 7, 10)
BANKS = (HashAlg.SHA1, HashAlg.SHA256)
PcrMap = dict[HashAlg, dict[int, bytes]]


def _ids(result: QuoteResult) -> set[str]:
    return {f.id for f in result.failures}


def _quote(tpm: Tpm, nonce: bytes) -> TpmQuote:
    return tpm.quote(nonce, PCRS, BANKS)


@pytest.fixture
def tpm(swtpm: SwTpm) -> Tpm:
    t = Tpm(swtpm.tcti)
    t.create_ak("ecc")
    return t


@pytest.mark.parametrize("alg", ["ecc", "rsa"])
def test_quote_round_trip(swtpm: SwTpm, alg: AkAlg) -> None:
    tpm = Tpm(swtpm.tcti)
    tpm.create_ak(alg)
    swtpm.extend_pcr(10, {HashAlg.SHA1: b"\x11" * 20, HashAlg.SHA256: b"\x22" * 32})
    nonce = os.urandom(20)
    q = _quote(tpm, nonce)
    result = verify_quote(
        q.attest, q.signature, tpm.ak_public(), nonce, q.pcr_values,
        expected_pcrs={HashAlg.SHA256: PCRS},
    )  # fmt: skip
    assert result.ok, result.failures
    assert result.attest is not None
    assert result.attest.pcr_selection == tuple((b, PCRS) for b in BANKS)
    assert q.pcr_values[HashAlg.SHA256][10] != bytes(32)
    assert result.clock_info is not None
    assert result.clock_info.safe
    assert not result.rebooted


def test_pcrs_beyond_eight_are_read_in_chunks(tpm: Tpm) -> None:
    pcrs = tuple(range(24))
    q = tpm.quote(b"n", pcrs, (HashAlg.SHA256,))
    assert sorted(q.pcr_values[HashAlg.SHA256]) == list(pcrs)
    assert verify_quote(q.attest, q.signature, tpm.ak_public(), b"n", q.pcr_values).ok


def test_wrong_nonce(tpm: Tpm) -> None:
    q = _quote(tpm, b"nonce-sent-by-agent")
    result = verify_quote(q.attest, q.signature, tpm.ak_public(), b"nonce-we-sent", q.pcr_values)
    assert _ids(result) == {"quote.nonce_mismatch"}


def test_foreign_ak(tpm: Tpm, swtpm_factory: SwTpmFactory) -> None:
    other = Tpm(swtpm_factory().tcti)
    other.create_ak("ecc")
    q = _quote(tpm, b"n")
    result = verify_quote(q.attest, q.signature, other.ak_public(), b"n", q.pcr_values)
    assert _ids(result) == {"quote.signature_invalid"}


def test_tampered_attest_byte(tpm: Tpm) -> None:
    q = _quote(tpm, b"n")
    tampered = bytearray(q.attest)
    tampered[-1] ^= 1  # last byte of pcrDigest
    result = verify_quote(bytes(tampered), q.signature, tpm.ak_public(), b"n", q.pcr_values)
    assert _ids(result) == {"quote.signature_invalid", "quote.pcr_digest_mismatch"}


def test_tampered_magic_and_type(tpm: Tpm) -> None:
    q = _quote(tpm, b"n")
    bad_magic = b"\x00" + q.attest[1:]
    assert _ids(verify_quote(bad_magic, q.signature, tpm.ak_public(), b"n", q.pcr_values)) == {
        "quote.magic_invalid",
        "quote.signature_invalid",
    }
    bad_type = q.attest[:4] + b"\x80\x17" + q.attest[6:]
    result = verify_quote(bad_type, q.signature, tpm.ak_public(), b"n", q.pcr_values)
    assert _ids(result) == {"quote.type_invalid"}


def test_truncated_quote_is_malformed(tpm: Tpm) -> None:
    q = _quote(tpm, b"n")
    result = verify_quote(q.attest[:-3], q.signature, tpm.ak_public(), b"n", q.pcr_values)
    assert _ids(result) == {"quote.malformed"}
    assert "pcrDigest" in result.failures[0].message


def test_wrong_pcr_values(tpm: Tpm, swtpm: SwTpm) -> None:
    q = _quote(tpm, b"n")
    swtpm.extend_pcr(10, {HashAlg.SHA1: b"\x01" * 20, HashAlg.SHA256: b"\x02" * 32})
    now = swtpm.read_pcrs(PCRS, BANKS)  # values after the quote: what a lying agent would send
    result = verify_quote(q.attest, q.signature, tpm.ak_public(), b"n", now)
    assert _ids(result) == {"quote.pcr_digest_mismatch"}


def test_pcr_selection_mismatch(tpm: Tpm) -> None:
    q = tpm.quote(b"n", (0, 1, 2), (HashAlg.SHA256,))
    extra = {HashAlg.SHA256: {**q.pcr_values[HashAlg.SHA256], 10: bytes(32)}}
    result = verify_quote(q.attest, q.signature, tpm.ak_public(), b"n", extra)
    assert _ids(result) == {"quote.pcr_selection_mismatch"}
    asked = verify_quote(
        q.attest, q.signature, tpm.ak_public(), b"n", q.pcr_values,
        expected_pcrs={HashAlg.SHA256: (0, 1, 2, 10)},
    )  # fmt: skip
    assert _ids(asked) == {"quote.pcr_selection_mismatch"}
    missing = {HashAlg.SHA256: {0: bytes(32)}}
    assert "quote.pcr_selection_mismatch" in _ids(
        verify_quote(q.attest, q.signature, tpm.ak_public(), b"n", missing)
    )


def test_reboot_sets_rebooted_and_resets_pcrs(tpm: Tpm, swtpm: SwTpm) -> None:
    swtpm.extend_pcr(10, {HashAlg.SHA256: b"\x02" * 32})
    before = verify_quote(*_quote_args(tpm, b"1"))
    assert before.ok
    assert before.clock_info is not None
    swtpm.restart()
    after_tpm = Tpm(swtpm.tcti, ak=tpm.ak)
    after = verify_quote(*_quote_args(after_tpm, b"2"), before.clock_info)
    assert after.ok, after.failures
    assert after.rebooted
    assert after.clock_info is not None
    assert after.clock_info.reset_count > before.clock_info.reset_count


def test_power_loss_makes_the_clock_unsafe(tpm: Tpm, swtpm: SwTpm) -> None:
    first = verify_quote(*_quote_args(tpm, b"1"))
    swtpm.restart(orderly=False)
    result = verify_quote(*_quote_args(Tpm(swtpm.tcti, ak=tpm.ak), b"2"), first.clock_info)
    assert "quote.clock_unsafe" in _ids(result)
    assert result.rebooted


def _quote_args(tpm: Tpm, nonce: bytes) -> tuple[bytes, bytes, bytes, bytes, PcrMap]:
    q = _quote(tpm, nonce)
    return q.attest, q.signature, tpm.ak_public(), nonce, q.pcr_values


@pytest.mark.parametrize(
    ("change", "failure"),
    [
        ("clock", "quote.clock_rollback"),
        ("reset_count", "quote.reset_count_rollback"),
        ("restart_count", "quote.restart_count_rollback"),
    ],
)
def test_counters_going_back(tpm: Tpm, change: str, failure: str) -> None:
    args = _quote_args(tpm, b"n")
    now = verify_quote(*args).clock_info
    assert now is not None
    previous: ClockInfo = dataclasses.replace(now, **{change: getattr(now, change) + 10**6})
    result = verify_quote(*args, previous)
    assert _ids(result) == {failure}
    assert not result.rebooted

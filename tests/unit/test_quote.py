"""verify_quote on quotes recorded from a real swtpm (tests/unit/vectors/tpm)."""

from __future__ import annotations

import dataclasses

import pytest

from attestation.core.quote import QuoteResult, pcr_digest, verify_quote
from attestation.core.tpm_types import parse_attest
from attestation.core.types import ClockInfo, HashAlg
from tests.unit.tpm_vectors import RecordedQuote, ak_public, quotes

ECC, RSA, AFTER_REBOOT = quotes()


def _ids(result: QuoteResult) -> set[str]:
    return {f.id for f in result.failures}


def _verify(q: RecordedQuote, previous: ClockInfo | None = None, **changes: object) -> QuoteResult:
    q = dataclasses.replace(q, **changes)  # type: ignore[arg-type]
    return verify_quote(q.attest, q.signature, q.ak_public, q.nonce, q.pcr_values, previous)


@pytest.mark.parametrize("q", [ECC, RSA, AFTER_REBOOT], ids=["ecc", "rsa", "after-reboot"])
def test_recorded_quotes_verify(q: RecordedQuote) -> None:
    result = _verify(q)
    assert result.ok, result.failures
    assert result.attest is not None
    assert result.attest.extra_data == q.nonce
    assert result.firmware_version == result.attest.firmware_version
    assert [bank for bank, _ in result.attest.pcr_selection] == [HashAlg.SHA1, HashAlg.SHA256]


def test_reboot_is_reported_not_failed() -> None:
    before = _verify(ECC).clock_info
    after = _verify(AFTER_REBOOT, before)
    assert after.ok
    assert after.rebooted


@pytest.mark.parametrize(
    ("field", "delta", "expected", "rebooted"),
    [
        ("clock", -1, set(), False),  # previous was earlier: time moved on
        ("clock", +1, {"quote.clock_rollback"}, False),
        ("restart_count", +1, {"quote.restart_count_rollback"}, False),
        ("reset_count", -1, set(), True),  # a reboot since
        ("reset_count", +1, {"quote.reset_count_rollback"}, False),
    ],
)
def test_clock_against_previous(field: str, delta: int, expected: set[str], rebooted: bool) -> None:
    now = _verify(AFTER_REBOOT).clock_info
    assert now is not None
    value = getattr(now, field) + delta
    assert value >= 0
    previous = dataclasses.replace(now, **{field: value})
    result = _verify(AFTER_REBOOT, previous)
    assert _ids(result) == expected
    assert result.rebooted is rebooted


def test_unsafe_clock() -> None:
    attest = parse_attest(ECC.attest)
    offset = 4 + 2 + 2 + len(attest.qualified_signer) + 2 + len(attest.extra_data) + 8 + 4 + 4
    assert ECC.attest[offset] == 1
    unsafe = ECC.attest[:offset] + b"\x00" + ECC.attest[offset + 1 :]
    assert _ids(_verify(ECC, attest=unsafe)) == {"quote.clock_unsafe", "quote.signature_invalid"}


def test_wrong_nonce() -> None:
    assert _ids(_verify(ECC, nonce=b"other")) == {"quote.nonce_mismatch"}


def test_foreign_ak() -> None:
    assert _ids(_verify(RSA, ak_public=ak_public("ecc"))) == {"quote.signature_invalid"}
    assert _ids(_verify(ECC, ak_public=ak_public("rsa"))) == {"quote.signature_invalid"}


def test_signature_swapped_between_quotes() -> None:
    assert _ids(_verify(ECC, signature=AFTER_REBOOT.signature)) == {"quote.signature_invalid"}


def test_wrong_pcr_value() -> None:
    values = {bank: dict(v) for bank, v in ECC.pcr_values.items()}
    values[HashAlg.SHA256][10] = bytes(32)
    assert _ids(_verify(ECC, pcr_values=values)) == {"quote.pcr_digest_mismatch"}


def test_pcr_values_not_quoted_are_refused() -> None:
    values = {bank: dict(v) for bank, v in ECC.pcr_values.items()}
    values[HashAlg.SHA256][11] = bytes(32)
    assert _ids(_verify(ECC, pcr_values=values)) == {"quote.pcr_selection_mismatch"}
    values = {**ECC.pcr_values, HashAlg.SHA384: {0: bytes(48)}}
    assert _ids(_verify(ECC, pcr_values=values)) == {"quote.pcr_selection_mismatch"}


def test_missing_pcr_value() -> None:
    values = {bank: dict(v) for bank, v in ECC.pcr_values.items()}
    del values[HashAlg.SHA1][0]
    assert _ids(_verify(ECC, pcr_values=values)) == {"quote.pcr_selection_mismatch"}


def test_expected_pcrs_left_out() -> None:
    result = verify_quote(
        ECC.attest, ECC.signature, ECC.ak_public, ECC.nonce, ECC.pcr_values,
        expected_pcrs={HashAlg.SHA256: (10, 11)},
    )  # fmt: skip
    assert _ids(result) == {"quote.pcr_selection_mismatch"}
    assert "[11]" in result.failures[0].message


def test_magic_and_type() -> None:
    assert _ids(_verify(ECC, attest=b"\xff\x54\x43\x48" + ECC.attest[4:])) == {
        "quote.magic_invalid",
        "quote.signature_invalid",
    }
    assert _ids(_verify(ECC, attest=ECC.attest[:4] + b"\x80\x14" + ECC.attest[6:])) == {
        "quote.type_invalid"
    }


@pytest.mark.parametrize("cut", [0, 1, 5, 6, 30, -1])
def test_truncated_quote_is_malformed(cut: int) -> None:
    result = _verify(ECC, attest=ECC.attest[:cut])
    assert _ids(result) == {"quote.malformed"}
    assert result.attest is None
    assert "offset" in result.failures[0].message


def test_malformed_signature_and_ak() -> None:
    assert _ids(_verify(ECC, signature=ECC.signature + b"\0")) == {"quote.malformed"}
    assert _ids(_verify(ECC, ak_public=b"\x00\x23")) == {"quote.malformed"}


def test_pcr_digest_follows_selection_order() -> None:
    attest = parse_attest(ECC.attest)
    assert pcr_digest(HashAlg.SHA256, attest.pcr_selection, ECC.pcr_values) == attest.pcr_digest
    reversed_selection = tuple(reversed(attest.pcr_selection))
    assert pcr_digest(HashAlg.SHA256, reversed_selection, ECC.pcr_values) != attest.pcr_digest


def test_inputs_are_not_mutated() -> None:
    values = {bank: dict(v) for bank, v in ECC.pcr_values.items()}
    _verify(ECC, pcr_values=values)
    assert values == ECC.pcr_values

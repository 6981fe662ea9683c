"""The TPM structure parsers take untrusted bytes: they return a value or raise QuoteParseError."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from hypothesis import given, settings
from hypothesis import strategies as st

from attestation.core.quote import _ecdsa_der, verify_quote
from attestation.core.tpm_types import QuoteParseError, parse_attest, parse_public, parse_signature
from attestation.core.tpm_types.attest import _parse_attest_checked
from attestation.core.tpm_types.constants import (
    ALG_ECC,
    ALG_ECDSA,
    ALG_RSA,
    ALG_RSASSA,
    ECC_NIST_P256,
    ECC_NIST_P384,
)
from attestation.core.tpm_types.signature import _parse_signature_checked
from attestation.core.types import HashAlg
from tests.unit.tpm_vectors import ak_public, ek, quotes

ECC, RSA, _ = quotes()
PARSERS = [parse_attest, parse_signature, parse_public]
SAMPLES = [ECC.attest, ECC.signature, RSA.signature, ak_public("ecc"), ak_public("rsa")]


@pytest.mark.parametrize(
    ("name", "key_type", "bits", "curve", "scheme"),
    [
        ("ecc", ALG_ECC, 256, ECC_NIST_P256, ALG_ECDSA),
        ("rsa", ALG_RSA, 2048, 0, ALG_RSASSA),
    ],
)
def test_ak_public(name: str, key_type: int, bits: int, curve: int, scheme: int) -> None:
    public = parse_public(ak_public(name))
    assert (public.type, public.key_bits, public.curve, public.scheme) == (
        key_type, bits, curve, scheme,
    )  # fmt: skip
    assert public.scheme_hash is HashAlg.SHA256
    assert public.name == b"\x00\x0b" + hashlib.sha256(ak_public(name)).digest()
    public.public_key()


def test_ek_publics() -> None:
    rsa_ek = parse_public(ek("rsa")[1])
    assert (rsa_ek.type, rsa_ek.key_bits, rsa_ek.sym_bits) == (ALG_RSA, 2048, 128)
    ecc_ek = parse_public(ek("ecc")[1])
    assert (ecc_ek.curve, ecc_ek.name_alg, ecc_ek.sym_bits) == (ECC_NIST_P384, HashAlg.SHA384, 256)


def test_tpm2b_public_form_is_accepted() -> None:
    raw = ak_public("ecc")
    assert parse_public(len(raw).to_bytes(2, "big") + raw).raw == raw


@pytest.mark.parametrize(
    ("parser", "data", "where"),
    [
        (parse_attest, b"\xff\x54\x43\x47\x80\x18\x00\x05ab", "qualifiedSigner at offset 8"),
        (parse_attest, ECC.attest + b"\0", "trailing"),
        (parse_signature, b"\x00\x18\x00\x99", "unsupported hash"),
        (parse_signature, b"\x00\x05\x00\x0b", "sigAlg"),
        (parse_public, b"\x00\x08\x00\x0b\x00\x00\x00\x00", "type"),
        (parse_public, ak_public("ecc")[:-1], "unique.ecc.y"),
    ],
)
def test_errors_name_field_and_offset(parser: object, data: bytes, where: str) -> None:
    assert callable(parser)
    with pytest.raises(QuoteParseError, match=where):
        parser(data)


def test_invalid_ecc_point_is_a_parse_error() -> None:
    raw = bytearray(ak_public("ecc"))
    raw[-1] ^= 0xFF  # y no longer on the curve
    with pytest.raises(QuoteParseError, match="not a valid public key"):
        parse_public(bytes(raw)).public_key()


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=400))
def test_arbitrary_bytes_raise_only_quote_parse_error(data: bytes) -> None:
    for parser in PARSERS:
        with contextlib.suppress(QuoteParseError):
            parser(data)


@settings(max_examples=300, deadline=None)
@given(
    sample=st.sampled_from(SAMPLES),
    position=st.integers(min_value=0, max_value=399),
    value=st.integers(min_value=0, max_value=255),
    cut=st.integers(min_value=0, max_value=400),
)
def test_mutated_real_structures(sample: bytes, position: int, value: int, cut: int) -> None:
    data = bytearray(sample)
    data[position % len(data)] = value
    mutated = bytes(data[: max(cut, 1)])
    for parser in PARSERS:
        try:
            parsed = parser(mutated)
        except QuoteParseError:
            continue
        if parser is parse_public:
            with contextlib.suppress(QuoteParseError):
                parse_public(mutated).public_key()
        assert parsed is not None


@settings(max_examples=300, deadline=None)
@given(r=st.binary(max_size=66), s=st.binary(max_size=66))
def test_ecdsa_der_matches_cryptography(r: bytes, s: bytes) -> None:
    expected = encode_dss_signature(int.from_bytes(r, "big"), int.from_bytes(s, "big"))
    assert _ecdsa_der(r, s) == expected


@pytest.mark.parametrize("size", [67, 300])
def test_oversized_ecdsa_values_are_invalid_not_errors(size: int) -> None:
    r = b"\x01" * size
    signature = b"\x00\x18\x00\x0b" + len(r).to_bytes(2, "big") + r + b"\x00\x01\x01"
    result = verify_quote(ECC.attest, signature, ECC.ak_public, ECC.nonce, ECC.pcr_values)
    assert {f.id for f in result.failures} == {"quote.signature_invalid"}


@settings(max_examples=200, deadline=None)
@given(attest=st.binary(max_size=200), signature=st.binary(max_size=100))
def test_verify_quote_never_raises(attest: bytes, signature: bytes) -> None:
    result = verify_quote(attest, signature, ECC.ak_public, ECC.nonce, ECC.pcr_values)
    assert not result.ok


def _outcome(parser: Callable[[bytes], object], data: bytes) -> object:
    try:
        return parser(data)
    except QuoteParseError:
        return QuoteParseError


@settings(max_examples=300, deadline=None)
@given(
    sample=st.sampled_from([ECC.attest, ECC.signature, RSA.signature]),
    position=st.integers(min_value=0, max_value=399),
    value=st.integers(min_value=0, max_value=255),
    cut=st.integers(min_value=1, max_value=400),
)
def test_fast_paths_agree_with_checked_parsers(
    sample: bytes, position: int, value: int, cut: int
) -> None:
    """The straight-line parsers accept exactly what the field-by-field readers accept."""
    data = bytearray(sample)
    data[position % len(data)] = value
    mutated = bytes(data[:cut])
    fast, checked = (
        (parse_attest, _parse_attest_checked)
        if sample is ECC.attest
        else (parse_signature, _parse_signature_checked)
    )
    assert _outcome(fast, mutated) == _outcome(checked, mutated)

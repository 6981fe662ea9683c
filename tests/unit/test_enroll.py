"""Enrollment on EK certificates, CA bundles and AKs recorded from real swtpms."""

from __future__ import annotations

import hashlib
import hmac
import struct
from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from hypothesis import given, settings
from hypothesis import strategies as st

from attestation.core import enroll
from attestation.core.types import Failure, HashAlg
from tests.unit.tpm_vectors import ak_public, bundle, ek, recorded_at

NOW = recorded_at() + timedelta(days=1)


def _der(name: str) -> bytes:
    pem, _ = ek(name)
    return x509.load_pem_x509_certificate(pem.encode()).public_bytes(serialization.Encoding.DER)


def _ids(failures: tuple[Failure, ...]) -> list[str]:
    return [f.id for f in failures]


@pytest.mark.parametrize("name", ["rsa", "ecc"])
def test_ek_chain_ok(name: str) -> None:
    assert enroll.verify_ek(_der(name), ek(name)[1], bundle(), NOW) == ()


def test_foreign_ek_is_untrusted_here_and_trusted_by_its_own_ca() -> None:
    der, public = _der("foreign_rsa"), ek("foreign_rsa")[1]
    assert _ids(enroll.verify_ek(der, public, bundle(), NOW)) == ["enroll.ek_chain_untrusted"]
    assert enroll.verify_ek(der, public, bundle("other-ca-bundle.pem"), NOW) == ()


def test_ek_key_mismatch() -> None:
    failures = enroll.verify_ek(_der("rsa"), ek("foreign_rsa")[1], bundle(), NOW)
    assert _ids(failures) == ["enroll.ek_key_mismatch"]
    assert _ids(enroll.verify_ek(_der("rsa"), ek("ecc")[1], bundle(), NOW)) == [
        "enroll.ek_key_mismatch"
    ]


def test_ek_cert_not_yet_valid() -> None:
    failures = enroll.verify_ek(_der("rsa"), ek("rsa")[1], bundle(), NOW - timedelta(days=30))
    assert set(_ids(failures)) == {"enroll.ek_cert_expired"}
    assert "not at" in failures[0].message


def _split_bundle() -> tuple[bytes, bytes]:
    root, intermediate = x509.load_pem_x509_certificates(bundle())
    pem = serialization.Encoding.PEM
    return root.public_bytes(pem), intermediate.public_bytes(pem)


def test_bundle_cert_is_an_anchor_but_root_alone_is_not_enough() -> None:
    root, intermediate = _split_bundle()
    der, public = _der("rsa"), ek("rsa")[1]
    assert enroll.verify_ek(der, public, intermediate, NOW) == ()
    assert _ids(enroll.verify_ek(der, public, root, NOW)) == ["enroll.ek_chain_untrusted"]


def test_a_non_ca_cannot_issue() -> None:
    """The EK certificate itself (not a CA) in the bundle must not make another EK trusted."""
    rsa_pem, _ = ek("rsa")
    failures = enroll.verify_ek(_der("rsa"), ek("rsa")[1], rsa_pem.encode(), NOW)
    assert _ids(failures) == ["enroll.ek_chain_untrusted"]


@pytest.mark.parametrize("name", ["ecc", "rsa"])
def test_recorded_aks_are_fit(name: str) -> None:
    assert enroll.check_ak(ak_public(name)) == ()
    assert enroll.ak_name(ak_public(name)) == b"\x00\x0b" + hashlib.sha256(ak_public(name)).digest()


@pytest.mark.parametrize(
    ("clear", "problem"),
    [
        (0x00000002, "fixedTPM"),
        (0x00000010, "fixedParent"),
        (0x00010000, "restricted"),
        (0x00040000, "sign"),
    ],
)
def test_ak_attributes(clear: int, problem: str) -> None:
    raw = bytearray(ak_public("ecc"))
    attrs = int.from_bytes(raw[4:8], "big") & ~clear
    raw[4:8] = attrs.to_bytes(4, "big")
    failures = enroll.check_ak(bytes(raw))
    assert _ids(failures) == ["enroll.ak_attributes_invalid"]
    assert problem in failures[0].message


def test_ek_is_not_an_ak() -> None:
    failures = enroll.check_ak(ek("rsa")[1])
    assert "decryption key" in failures[0].message


@pytest.mark.parametrize("name", ["rsa", "ecc"])
def test_make_credential_wire_form(name: str) -> None:
    ek_public = ek(name)[1]
    cred = enroll.make_credential(ek_public, enroll.ak_name(ak_public("ecc")), b"s" * 32)
    blob, secret = cred.credential_blob, cred.encrypted_secret
    assert int.from_bytes(blob[:2], "big") == len(blob) - 2
    digest_size = 32 if name == "rsa" else 48
    assert int.from_bytes(blob[2:4], "big") == digest_size  # integrityHMAC
    assert len(blob) == 2 + 2 + digest_size + 2 + 32  # encIdentity: TPM2B_DIGEST(secret)
    assert int.from_bytes(secret[:2], "big") == len(secret) - 2
    again = enroll.make_credential(ek_public, enroll.ak_name(ak_public("ecc")), b"s" * 32)
    assert again.encrypted_secret != secret  # a fresh seed each time


def test_make_credential_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="secret must be"):
        enroll.make_credential(ek("rsa")[1], b"\x00\x0b" + bytes(32), b"s" * 33)
    with pytest.raises(enroll.EnrollParseError, match="symmetric"):
        enroll.make_credential(ak_public("ecc"), b"\x00\x0b" + bytes(32), b"s")
    with pytest.raises(enroll.EnrollParseError, match="EK public"):
        enroll.make_credential(b"\x00", b"", b"s")


def test_kdfa_known_answer() -> None:
    """KDFa with one block equals one HMAC over counter || label || 0 || contexts || bits."""
    expected = hmac.new(
        b"k", struct.pack(">I", 1) + b"STORAGE\0" + b"u" + b"v" + struct.pack(">I", 128), "sha256"
    ).digest()[:16]
    assert enroll.kdfa(HashAlg.SHA256, b"k", b"STORAGE", b"u", b"v", 128) == expected
    assert len(enroll.kdfa(HashAlg.SHA256, b"k", b"X", b"", b"", 512)) == 64


def test_check_activation() -> None:
    assert enroll.check_activation(b"secret", b"secret") == ()
    assert _ids(enroll.check_activation(b"secret", b"secreT")) == ["enroll.activation_failed"]


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=300))
def test_arbitrary_certificate_bytes(data: bytes) -> None:
    with pytest.raises(enroll.EnrollParseError):
        enroll.verify_ek(data, ek("rsa")[1], bundle(), NOW)


# -- binding a node to its EK ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["rsa", "ecc", "foreign_rsa"])
def test_ek_digest_is_the_certified_keys_spki_digest(name: str) -> None:
    """What an operator computes from the EK certificate is what the node is bound to."""
    cert = x509.load_pem_x509_certificate(ek(name)[0].encode())
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert enroll.ek_digest(ek(name)[1]) == hashlib.sha256(spki).hexdigest()


def test_ek_digests_differ_per_tpm() -> None:
    assert len({enroll.ek_digest(ek(n)[1]) for n in ("rsa", "ecc", "foreign_rsa")}) == 3


A, B, C = "a" * 64, "b" * 64, "c" * 64


@pytest.mark.parametrize(
    ("digest", "pinned", "approved", "pins", "pin", "failure", "same_ek"),
    [
        (A, "", "", {}, A, None, False),  # first enrollment: bound to this EK
        (A, A, "", {"n": A}, A, None, True),  # the bound EK, a new AK: TPM state kept
        (B, A, "", {"n": A}, A, "enroll.ek_changed", False),  # another TPM: refused, pin kept
        (B, A, C, {"n": A}, A, "enroll.ek_changed", False),  # approval of another EK: no use
        (B, A, B, {"n": A}, B, None, False),  # the operator approved exactly B: re-bound
        (A, "", "", {"m": A}, "", "enroll.ek_reused", False),  # m's TPM claims to be n
        (A, "", A, {"m": A}, A, None, False),  # approved: a renamed node, say
        (A, A, "", {"n": A, "m": A}, A, None, True),  # bound before m was approved: stays
    ],
)
def test_bind_ek(
    digest: str,
    pinned: str,
    approved: str,
    pins: dict[str, str],
    pin: str,
    failure: str | None,
    same_ek: bool,
) -> None:
    binding = enroll.bind_ek("n", digest, pinned, approved, pins)
    assert (binding.pin, binding.same_ek) == (pin, same_ek)
    assert _ids(binding.failures) == ([failure] if failure else [])
    if failure:  # the refusal names the EK to check and the command that approves it
        assert f"trustgate node approve n --ek {digest}" in binding.failures[0].message

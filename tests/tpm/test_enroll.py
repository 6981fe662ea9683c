"""Enrollment against real swtpm EKs: certificate chains from the private local CA, and software
MakeCredential activated by the TPM itself."""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from attestation.agent.tpm import AkAlg, EkAlg, Tpm, TpmError
from attestation.core import enroll
from tests.support.swtpm import LocalCa, SwTpm, SwTpmFactory

pytestmark = pytest.mark.tpm


@pytest.mark.parametrize("ek_alg", ["rsa", "ecc"])
def test_ek_chain_ok(swtpm: SwTpm, ek_alg: EkAlg) -> None:
    tpm = Tpm(swtpm.tcti, ek_alg=ek_alg)
    failures = enroll.verify_ek(
        tpm.ek_certificate(), tpm.ek_public(), swtpm.ca_bundle.read_bytes(), datetime.now(UTC)
    )
    assert failures == ()


def test_ek_from_unknown_ca(
    swtpm_factory: SwTpmFactory, swtpm_ca: LocalCa, swtpm_other_ca: LocalCa
) -> None:
    foreign = Tpm(swtpm_factory(ca=swtpm_other_ca).tcti)
    trusted_bundle = swtpm_ca.ca_bundle.read_bytes()
    failures = enroll.verify_ek(
        foreign.ek_certificate(), foreign.ek_public(), trusted_bundle, datetime.now(UTC)
    )
    assert [f.id for f in failures] == ["enroll.ek_chain_untrusted"]


def test_ek_cert_of_another_tpm(swtpm_factory: SwTpmFactory, swtpm_ca: LocalCa) -> None:
    one, two = Tpm(swtpm_factory().tcti), Tpm(swtpm_factory().tcti)
    bundle = swtpm_ca.ca_bundle.read_bytes()
    failures = enroll.verify_ek(one.ek_certificate(), two.ek_public(), bundle, datetime.now(UTC))
    assert [f.id for f in failures] == ["enroll.ek_key_mismatch"]


def test_ek_cert_not_yet_valid(swtpm: SwTpm) -> None:
    """swtpm's certificates run to 9999-12-31, so only the start of the window can be crossed."""
    tpm = Tpm(swtpm.tcti)
    cert, public, bundle = tpm.ek_certificate(), tpm.ek_public(), swtpm.ca_bundle.read_bytes()
    last_year = datetime.now(UTC) - timedelta(days=365)
    ids = {f.id for f in enroll.verify_ek(cert, public, bundle, last_year)}
    assert ids == {"enroll.ek_cert_expired"}


@pytest.mark.parametrize(("ek_alg", "ak_alg"), [("rsa", "ecc"), ("rsa", "rsa"), ("ecc", "ecc")])
def test_credential_activation(swtpm: SwTpm, ek_alg: EkAlg, ak_alg: AkAlg) -> None:
    tpm = Tpm(swtpm.tcti, ek_alg=ek_alg)
    ak = tpm.create_ak(ak_alg)
    assert enroll.check_ak(ak.public) == ()
    secret = os.urandom(32)
    cred = enroll.make_credential(tpm.ek_public(), enroll.ak_name(ak.public), secret)
    returned = tpm.activate_credential(cred.credential_blob, cred.encrypted_secret)
    assert enroll.check_activation(secret, returned) == ()


def test_credential_for_another_ak_is_refused(swtpm: SwTpm) -> None:
    tpm = Tpm(swtpm.tcti)
    tpm.create_ak("ecc")
    other_ak = Tpm(swtpm.tcti).create_ak("ecc")
    secret = os.urandom(32)
    cred = enroll.make_credential(tpm.ek_public(), enroll.ak_name(other_ak.public), secret)
    with pytest.raises(TpmError, match="integrity check failed"):
        tpm.activate_credential(cred.credential_blob, cred.encrypted_secret)
    ids = [f.id for f in enroll.check_activation(secret, b"")]
    assert ids == ["enroll.activation_failed"]


def test_credential_for_another_ek_is_refused(swtpm_factory: SwTpmFactory) -> None:
    tpm, other = Tpm(swtpm_factory().tcti), Tpm(swtpm_factory().tcti)
    ak = tpm.create_ak("ecc")
    cred = enroll.make_credential(other.ek_public(), enroll.ak_name(ak.public), b"s" * 32)
    with pytest.raises(TpmError):
        tpm.activate_credential(cred.credential_blob, cred.encrypted_secret)


def test_ek_is_not_an_ak(swtpm: SwTpm) -> None:
    ids = [f.id for f in enroll.check_ak(Tpm(swtpm.tcti).ek_public())]
    assert ids == ["enroll.ak_attributes_invalid"]


@pytest.mark.parametrize("ek_alg", ["rsa", "ecc"])
def test_ek_digest_is_what_an_operator_computes_from_the_certificate(
    swtpm: SwTpm, ek_alg: EkAlg
) -> None:
    """The digest a node is bound to (``status.ekDigest``) is the SHA-256 of the certified key's
    SubjectPublicKeyInfo, so an operator can check an approval against the EK certificate; it
    stays the same for a new AK of the same TPM."""
    tpm = Tpm(swtpm.tcti, ek_alg=ek_alg)
    cert = x509.load_der_x509_certificate(tpm.ek_certificate())
    spki = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    assert enroll.ek_digest(tpm.ek_public()) == hashlib.sha256(spki).hexdigest()
    tpm.create_ak()
    assert enroll.ek_digest(Tpm(swtpm.tcti, ek_alg=ek_alg).ek_public()) == enroll.ek_digest(
        tpm.ek_public()
    )

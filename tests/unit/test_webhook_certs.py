"""The webhook's own PKI on data, at injected times: what it issues (checked by cryptography's
RFC 5280 path builder and by an OpenSSL TLS handshake in memory), and when it renews what."""

from __future__ import annotations

import contextlib
import ipaddress
import ssl
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store

from webhook.certpolicy import CertPolicy
from webhook.certs import (
    CertError,
    TlsMaterial,
    create,
    reissue,
    renew,
    renewal_due,
)
from webhook.issuer import issue, new_ca
from webhook.tlssecret import TlsSecretError, material_from_secret, secret_for

T0 = datetime(2030, 1, 1, tzinfo=UTC)
DNS = "trustgate-webhook.trustgate-system.svc"
POLICY = CertPolicy(dns_names=(DNS, f"{DNS}.cluster.local"), ip_addresses=("127.0.0.1",))
DAY = timedelta(days=1)


@pytest.fixture(scope="module")
def material() -> TlsMaterial:
    return create(POLICY, T0)


def _verify(material: TlsMaterial, name: x509.GeneralName, at: datetime) -> list[x509.Certificate]:
    store = Store(material.ca_certs)
    verifier = PolicyBuilder().store(store).time(at).build_server_verifier(name)  # type: ignore[arg-type]
    return verifier.verify(material.serving_cert, [])


def _issuer(material: TlsMaterial) -> x509.Name:
    return material.serving_cert.issuer


# -- what gets issued ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        x509.DNSName(DNS),
        x509.DNSName(f"{DNS}.cluster.local"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ],
    ids=str,
)
def test_chain_verifies_for_every_san(material: TlsMaterial, name: x509.GeneralName) -> None:
    chain = _verify(material, name, T0 + DAY)
    assert chain[-1] == material.ca_certs[0]


def test_chain_does_not_verify_for_other_names(material: TlsMaterial) -> None:
    with pytest.raises(x509.verification.VerificationError):
        _verify(material, x509.DNSName("trustgate-webhook.other.svc"), T0 + DAY)


def test_serving_certificate_is_a_server_leaf(material: TlsMaterial) -> None:
    cert = material.serving_cert
    ext = cert.extensions
    assert ext.get_extension_for_class(x509.BasicConstraints).value.ca is False
    usage = ext.get_extension_for_class(x509.KeyUsage)
    assert usage.critical
    assert usage.value.digital_signature
    assert not usage.value.key_cert_sign
    assert list(ext.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH
    ]
    sans = ext.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.DNSName)) == {DNS, f"{DNS}.cluster.local"}
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert cert.not_valid_after_utc == T0 + POLICY.serving_validity
    assert cert.not_valid_before_utc < T0  # backdated for clock skew


def test_ca_signs_certificates_only(material: TlsMaterial) -> None:
    (ca,) = material.ca_certs
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value.ca
    assert constraints.value.path_length == 0
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign
    assert usage.crl_sign
    assert ca.not_valid_after_utc == T0 + POLICY.ca_validity


def test_webhook_certificates_carry_exactly_these_extensions(material: TlsMaterial) -> None:
    """What the webhook issues, pinned: the shared issuer (``issue``, which the lab uses too)
    must not change the webhook's own certificates."""

    def extensions(cert: x509.Certificate) -> list[tuple[x509.ObjectIdentifier, bool]]:
        return [(e.oid, e.critical) for e in cert.extensions]

    assert extensions(material.ca_certs[0]) == [
        (ExtensionOID.BASIC_CONSTRAINTS, True),
        (ExtensionOID.KEY_USAGE, True),
        (ExtensionOID.SUBJECT_KEY_IDENTIFIER, False),
        (ExtensionOID.AUTHORITY_KEY_IDENTIFIER, False),
    ]
    assert extensions(material.serving_cert) == [
        (ExtensionOID.BASIC_CONSTRAINTS, True),
        (ExtensionOID.KEY_USAGE, True),
        (ExtensionOID.EXTENDED_KEY_USAGE, False),
        (ExtensionOID.SUBJECT_ALTERNATIVE_NAME, False),
        (ExtensionOID.SUBJECT_KEY_IDENTIFIER, False),
        (ExtensionOID.AUTHORITY_KEY_IDENTIFIER, False),
    ]
    ca = material.ca_certs[0]
    assert ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == (
        "trustgate-webhook-ca"
    )
    assert ca.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)[0].value == (
        f"{ca.serial_number:x}"
    )
    assert material.serving_cert.subject == x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, DNS)]
    )


def test_issue_makes_a_client_certificate_with_groups() -> None:
    """As the lab's API server admin: O=system:masters, client auth only, no names."""
    ca = new_ca("lab-ca", validity=DAY, now=T0)
    admin = issue(
        ca,
        common_name="lab-admin",
        organizations=("system:masters",),
        server=False,
        client=True,
        validity=DAY,
        now=T0,
    )
    cert = admin.cert
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == (
        "system:masters"
    )
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH
    ]
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME)
    cert.verify_directly_issued_by(ca.cert)
    assert admin.key.public_key() == cert.public_key()
    assert x509.load_pem_x509_certificate(admin.cert_pem) == cert


def test_issue_never_outlives_its_ca() -> None:
    ca = new_ca("short-lived", validity=DAY, now=T0)
    leaf = issue(ca, common_name="x", dns_names=("x",), validity=10 * DAY, now=T0)
    assert leaf.cert.not_valid_after_utc == ca.cert.not_valid_after_utc == T0 + DAY


def test_openssl_client_completes_a_handshake_with_the_bundle(tmp_path: Path) -> None:
    """What the API server does: trust caBundle, check the Service's DNS name, handshake (at
    the real time: OpenSSL checks validity against the system clock)."""
    material = create(POLICY, datetime.now(UTC))
    (tmp_path / "tls.crt").write_bytes(material.cert)
    (tmp_path / "tls.key").write_bytes(material.key)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    client_ctx = ssl.create_default_context(cadata=material.ca_bundle.decode())
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=DNS)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):  # a TLS 1.3 handshake takes two flights each way
        for end in (client, server):
            with contextlib.suppress(ssl.SSLWantReadError):
                end.do_handshake()
        s_in.write(c_out.read())
        c_in.write(s_out.read())
    client.do_handshake()
    peer = client.getpeercert(binary_form=True)
    assert peer == material.serving_cert.public_bytes(Encoding.DER)


# -- when to renew what ----------------------------------------------------------------------------

SERVING_DUE = T0 + POLICY.serving_validity - POLICY.serving_renew_before
CA_DUE = T0 + POLICY.ca_validity - POLICY.ca_renew_before


@pytest.mark.parametrize(
    ("at", "due"),
    [
        (T0, None),
        (SERVING_DUE - timedelta(seconds=1), None),
        (SERVING_DUE, "serving certificate expires"),
        (T0 + POLICY.serving_validity + DAY, "serving certificate expires"),
        (T0 - DAY, "serving certificate is not valid yet"),
        (CA_DUE, "CA expires"),
    ],
)
def test_renewal_due(material: TlsMaterial, at: datetime, due: str | None) -> None:
    reason = renewal_due(material, POLICY, at)
    assert (reason is None) if due is None else (reason or "").startswith(due)


def test_nothing_due_means_no_renewal(material: TlsMaterial) -> None:
    assert renew(material, POLICY, T0 + DAY) is None


def test_serving_renewal_keeps_the_ca(material: TlsMaterial) -> None:
    renewal = renew(material, POLICY, SERVING_DUE)
    assert renewal is not None
    new = renewal.material
    assert new.ca_bundle == material.ca_bundle
    assert new.ca_key == material.ca_key
    assert new.cert != material.cert
    assert new.key != material.key
    assert new.serving_cert.not_valid_after_utc == SERVING_DUE + POLICY.serving_validity
    _verify(new, x509.DNSName(DNS), SERVING_DUE)
    assert renewal_due(new, POLICY, SERVING_DUE) is None


def test_changed_names_reissue_the_serving_certificate(material: TlsMaterial) -> None:
    policy = replace(POLICY, ip_addresses=())
    assert renewal_due(material, policy, T0) == (
        "serving certificate names differ from the configured ones"
    )
    renewal = renew(material, policy, T0)
    assert renewal is not None
    assert renewal.material.ca_bundle == material.ca_bundle
    sans = renewal.material.serving_cert.extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    assert sans.value.get_values_for_type(x509.IPAddress) == []


def test_ca_rotation_adds_the_new_ca_beside_the_old_and_keeps_serving(
    material: TlsMaterial,
) -> None:
    """Step one of a CA rotation: both CAs in the bundle, the serving certificate untouched (it
    still verifies), so the API server trusts the new CA before anything is signed by it."""
    at = CA_DUE
    # The serving certificate was renewed on schedule up to here; start from one fresh at CA_DUE.
    fresh = renew(material, replace(POLICY, ip_addresses=("127.0.0.2",)), at - DAY)
    assert fresh is not None
    current = renew(fresh.material, POLICY, at - DAY)
    assert current is not None
    assert current.material.ca_bundle == material.ca_bundle
    rotated = renew(current.material, POLICY, at)
    assert rotated is not None
    assert rotated.reason.startswith("CA expires")
    new = rotated.material
    old_ca, new_ca = material.ca_certs[0], new.ca_certs[0]
    assert new.ca_certs == [new_ca, old_ca]
    assert new_ca != old_ca
    assert new.ca_key != material.ca_key
    assert new.cert == current.material.cert  # still issued by the old CA, still trusted
    assert _issuer(new) == old_ca.subject
    _verify(new, x509.DNSName(DNS), at)
    assert renewal_due(new, POLICY, at) is None

    # Step two, at the serving certificate's next renewal: issued by the new CA; the old CA
    # stays in the bundle (replicas may still serve the previous certificate) ...
    serving_due = at - DAY + POLICY.serving_validity - POLICY.serving_renew_before
    step2 = renew(new, POLICY, serving_due)
    assert step2 is not None
    assert _issuer(step2.material) == new_ca.subject
    assert step2.material.ca_certs == [new_ca, old_ca]
    _verify(step2.material, x509.DNSName(DNS), serving_due)

    # ... until it expires: the next write drops it.
    after_old = old_ca.not_valid_after_utc + DAY
    later = renew(step2.material, POLICY, after_old)
    assert later is not None
    assert later.material.ca_certs == [new_ca]
    _verify(later.material, x509.DNSName(DNS), after_old)


def test_unusable_material_is_replaced_whole(material: TlsMaterial) -> None:
    other = create(POLICY, T0)
    swapped = replace(material, key=other.key)
    with pytest.raises(CertError, match="serving key does not belong"):
        renewal_due(swapped, POLICY, T0)
    renewal = renew(swapped, POLICY, T0)
    assert renewal is not None
    assert renewal.reason.startswith("stored TLS material unusable")
    assert renewal.material.ca_bundle not in (material.ca_bundle, other.ca_bundle)
    garbage = replace(material, ca_bundle=b"not pem")
    with pytest.raises(CertError, match="CA bundle"):
        renewal_due(garbage, POLICY, T0)


def test_expired_ca_is_replaced(material: TlsMaterial) -> None:
    at = T0 + POLICY.ca_validity + DAY
    renewal = renew(material, POLICY, at)
    assert renewal is not None
    assert len(renewal.material.ca_certs) == 1
    _verify(renewal.material, x509.DNSName(DNS), at)


def test_no_material_creates_it() -> None:
    renewal = renew(None, POLICY, T0)
    assert renewal is not None
    assert renewal_due(renewal.material, POLICY, T0) is None


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"dns_names": (), "ip_addresses": ()}, "at least one"),
        ({"ip_addresses": ("not-an-ip",)}, "does not appear to be an IPv4 or IPv6"),
        ({"serving_renew_before": timedelta(days=90)}, "serving_renew_before"),
        ({"serving_renew_before": timedelta(0)}, "serving_renew_before"),
        ({"ca_renew_before": timedelta(days=60)}, "old CA must outlive"),
        ({"ca_renew_before": timedelta(days=4000)}, "below ca_validity"),
    ],
)
def test_policy_refuses_unsafe_lifetimes(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        replace(POLICY, **changes)  # type: ignore[arg-type]


# -- the Secret's wire form ------------------------------------------------------------------------


def test_secret_round_trip_keeps_metadata_and_never_mutates(material: TlsMaterial) -> None:
    body = secret_for(material, "trustgate-system", "trustgate-webhook-tls")
    assert body["type"] == "kubernetes.io/tls"
    assert sorted(body["data"]) == ["ca.crt", "ca.key", "tls.crt", "tls.key"]
    assert material_from_secret(body) == material

    stored = {**body, "metadata": {**body["metadata"], "resourceVersion": "42", "uid": "u"}}
    renewed = renew(material, POLICY, SERVING_DUE)
    assert renewed is not None
    update = secret_for(
        renewed.material, "trustgate-system", "trustgate-webhook-tls", current=stored
    )
    assert update["metadata"]["resourceVersion"] == "42"
    assert material_from_secret(update) == renewed.material
    assert material_from_secret(stored) == material


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, r"data\['ca.crt'\] is missing"),
        ({"ca.crt": "!!", "ca.key": "YQ==", "tls.crt": "YQ==", "tls.key": "YQ=="}, "not base64"),
    ],
)
def test_secret_without_the_entries_is_refused(data: dict[str, str], message: str) -> None:
    with pytest.raises(TlsSecretError, match=message):
        material_from_secret({"metadata": {"name": "s"}, "data": data})


def test_reissue_keeps_the_ca_and_follows_the_policy(material: TlsMaterial) -> None:
    short = replace(POLICY, serving_validity=timedelta(days=2), serving_renew_before=DAY)
    seeded = reissue(material, short, T0)
    assert seeded.ca_bundle == material.ca_bundle
    assert seeded.cert != material.cert
    assert seeded.serving_cert.not_valid_after_utc == T0 + 2 * DAY
    assert renewal_due(seeded, POLICY, T0) == (  # due under the normal 30-day window
        f"serving certificate expires {(T0 + 2 * DAY).isoformat()}"
    )

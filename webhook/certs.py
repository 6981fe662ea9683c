"""The webhook's own PKI: a CA, a serving certificate it signs, and when to renew which.

Pure apart from key generation's randomness: every function takes ``now`` and returns new values.
The webhook replicas keep one :class:`TlsMaterial` in a Secret (``webhook.tlssecret``) and the
API server trusts :attr:`TlsMaterial.ca_bundle` through each webhook's ``caBundle``.

Renewal happens in two independent steps so that no request ever meets a certificate the API
server does not trust yet:

- the CA is replaced ``ca_renew_before`` its expiry; the new CA joins the bundle *beside* the
  old one (which stays until it expires), but the serving certificate is left alone;
- the serving certificate is reissued, from the newest CA, ``serving_renew_before`` its expiry.

By the time a serving certificate from the new CA exists, the bundle with both CAs has long been
in every webhook configuration: ``CertPolicy`` insists that ``ca_renew_before`` exceeds the
serving validity, so the old CA also outlives every certificate it signed.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: Named defaults: a CA for ten years, replaced a year ahead; serving certificates for 90 days,
#: renewed with 30 days left (a replica that misses a few hourly checks still renews in time).
CA_VALIDITY = timedelta(days=3650)
CA_RENEW_BEFORE = timedelta(days=365)
SERVING_VALIDITY = timedelta(days=90)
SERVING_RENEW_BEFORE = timedelta(days=30)
#: Certificates start a little in the past: the API server's clock may lag the webhook's.
BACKDATE = timedelta(minutes=5)

CA_COMMON_NAME = "trustgate-webhook-ca"

__all__ = [
    "BACKDATE",
    "CA_COMMON_NAME",
    "CA_RENEW_BEFORE",
    "CA_VALIDITY",
    "SERVING_RENEW_BEFORE",
    "SERVING_VALIDITY",
    "CertError",
    "CertPolicy",
    "Issued",
    "Renewal",
    "TlsMaterial",
    "create",
    "issue",
    "new_ca",
    "reissue",
    "renew",
    "renewal_due",
]


class CertError(ValueError):
    """PEM material that does not parse or does not fit together (key vs certificate)."""


@dataclass(frozen=True, slots=True)
class CertPolicy:
    """What the serving certificate must name and how long things live."""

    dns_names: tuple[str, ...]
    ip_addresses: tuple[str, ...] = ()
    ca_validity: timedelta = CA_VALIDITY
    ca_renew_before: timedelta = CA_RENEW_BEFORE
    serving_validity: timedelta = SERVING_VALIDITY
    serving_renew_before: timedelta = SERVING_RENEW_BEFORE

    def __post_init__(self) -> None:
        if not self.dns_names and not self.ip_addresses:
            raise ValueError("the serving certificate needs at least one DNS name or IP address")
        for ip in self.ip_addresses:
            ipaddress.ip_address(ip)  # ValueError names the bad address
        if not timedelta(0) < self.serving_renew_before < self.serving_validity:
            raise ValueError("serving_renew_before must be positive and below serving_validity")
        if not self.serving_validity < self.ca_renew_before < self.ca_validity:
            raise ValueError(
                "ca_renew_before must exceed serving_validity (the old CA must outlive the "
                "certificates it signed) and stay below ca_validity"
            )


@dataclass(frozen=True, slots=True)
class TlsMaterial:
    """PEM bytes as they are stored. ``ca_bundle`` holds the current CA first, then older CAs
    that are still valid; ``ca_key`` is the current CA's key."""

    ca_bundle: bytes
    ca_key: bytes
    cert: bytes
    key: bytes

    @property
    def ca_certs(self) -> list[x509.Certificate]:
        return _load_certs(self.ca_bundle, "CA bundle")

    @property
    def serving_cert(self) -> x509.Certificate:
        return _load_certs(self.cert, "serving certificate")[0]


@dataclass(frozen=True, slots=True)
class Renewal:
    """What ``renew`` changed and why (for the log)."""

    material: TlsMaterial
    reason: str


@dataclass(frozen=True, slots=True)
class Issued:
    """A certificate and the private key it certifies (a CA's, or a leaf's)."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def cert_pem(self) -> bytes:
        return _pem(self.cert)

    @property
    def key_pem(self) -> bytes:
        return _key_pem(self.key)


def create(policy: CertPolicy, now: datetime) -> TlsMaterial:
    """A fresh CA and a serving certificate from it."""
    ca = _webhook_ca(policy, now)
    serving = _serving(ca, policy, now)
    return TlsMaterial(ca.cert_pem, ca.key_pem, serving.cert_pem, serving.key_pem)


def reissue(material: TlsMaterial, policy: CertPolicy, now: datetime) -> TlsMaterial:
    """A new serving certificate from the current CA, bundle unchanged, whether due or not (an
    operator's forced renewal; tests seed a certificate that is about to expire)."""
    ca = Issued(material.ca_certs[0], _load_key(material.ca_key, "CA key"))
    serving = _serving(ca, policy, now)
    return TlsMaterial(material.ca_bundle, material.ca_key, serving.cert_pem, serving.key_pem)


def renewal_due(material: TlsMaterial, policy: CertPolicy, now: datetime) -> str | None:
    """Why ``material`` must change at ``now``, or None. Raises :class:`CertError` when it does
    not parse or fit together (the caller then starts over with ``create``)."""
    _check(material)
    ca = material.ca_certs[0]
    if _ca_due(ca, policy, now):
        return f"CA expires {ca.not_valid_after_utc.isoformat()}"
    cert = material.serving_cert
    if cert.not_valid_after_utc - now <= policy.serving_renew_before:
        return f"serving certificate expires {cert.not_valid_after_utc.isoformat()}"
    if cert.not_valid_before_utc > now:
        return "serving certificate is not valid yet"
    if _names(cert) != _wanted_names(policy):
        return "serving certificate names differ from the configured ones"
    if _issuer_in(cert, _valid(material.ca_certs, now)) is None:
        return "serving certificate's issuer is not in the CA bundle"
    return None


def renew(material: TlsMaterial | None, policy: CertPolicy, now: datetime) -> Renewal | None:
    """The material to store instead of ``material`` at ``now``, or None when nothing is due.

    Missing, unreadable or inconsistent material is replaced whole; otherwise the CA and the
    serving certificate are renewed as the module docstring explains."""
    if material is None:
        return Renewal(create(policy, now), "no TLS material yet")
    try:
        reason = renewal_due(material, policy, now)
    except CertError as e:
        return Renewal(create(policy, now), f"stored TLS material unusable ({e})")
    if reason is None:
        return None
    cas = _valid(material.ca_certs, now)
    ca_key = _load_key(material.ca_key, "CA key")
    if not cas or cas[0] != material.ca_certs[0] or _ca_due(cas[0], policy, now):
        fresh = _webhook_ca(policy, now)
        cas, ca_key = [fresh.cert, *cas], fresh.key
    cert_pem, key_pem = material.cert, material.key
    if _serving_due(material.serving_cert, cas, policy, now):
        serving = _serving(Issued(cas[0], ca_key), policy, now)
        cert_pem, key_pem = serving.cert_pem, serving.key_pem
    bundle = b"".join(_pem(c) for c in cas)
    return Renewal(TlsMaterial(bundle, _key_pem(ca_key), cert_pem, key_pem), reason)


# -- decisions ---------------------------------------------------------------------------------


def _ca_due(ca: x509.Certificate, policy: CertPolicy, now: datetime) -> bool:
    return ca.not_valid_after_utc - now <= policy.ca_renew_before


def _serving_due(
    cert: x509.Certificate, cas: list[x509.Certificate], policy: CertPolicy, now: datetime
) -> bool:
    return (
        cert.not_valid_after_utc - now <= policy.serving_renew_before
        or cert.not_valid_before_utc > now
        or _names(cert) != _wanted_names(policy)
        or _issuer_in(cert, cas) is None
    )


def _valid(cas: list[x509.Certificate], now: datetime) -> list[x509.Certificate]:
    """The CAs not expired yet, order kept: an expired CA leaves the bundle at the next write."""
    return [c for c in cas if c.not_valid_after_utc > now]


def _issuer_in(cert: x509.Certificate, cas: list[x509.Certificate]) -> x509.Certificate | None:
    for ca in cas:
        if ca.subject != cert.issuer:
            continue
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return ca
    return None


def _check(material: TlsMaterial) -> None:
    """Keys belong to their certificates: a half-written or hand-edited Secret is caught here."""
    cas = material.ca_certs
    if not cas:
        raise CertError("the CA bundle holds no certificate")
    ca_key = _load_key(material.ca_key, "CA key")
    if ca_key.public_key() != cas[0].public_key():
        raise CertError("the CA key does not belong to the bundle's first CA")
    key = _load_key(material.key, "serving key")
    if key.public_key() != material.serving_cert.public_key():
        raise CertError("the serving key does not belong to the serving certificate")


def _wanted_names(policy: CertPolicy) -> frozenset[x509.GeneralName]:
    return _general_names(policy.dns_names, policy.ip_addresses)


def _general_names(
    dns_names: Sequence[str], ip_addresses: Sequence[str]
) -> frozenset[x509.GeneralName]:
    names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns_names]
    names += [x509.IPAddress(ipaddress.ip_address(i)) for i in ip_addresses]
    return frozenset(names)


def _names(cert: x509.Certificate) -> frozenset[x509.GeneralName]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return frozenset()
    return frozenset(san)


# -- building ----------------------------------------------------------------------------------


def new_ca(common_name: str, *, validity: timedelta, now: datetime) -> Issued:
    """A CA that signs leaf certificates only (path length 0), valid from ``now`` (backdated)
    for ``validity``. The serial is also in its name: successive CAs of one name stay apart
    (the issuer match in a bundle)."""
    key = ec.generate_private_key(ec.SECP256R1())
    serial = x509.random_serial_number()
    name = x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        x509.NameAttribute(NameOID.SERIAL_NUMBER, f"{serial:x}"),
    ])  # fmt: skip
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), False)
        .sign(key, hashes.SHA256())
    )
    return Issued(cert, key)


def issue(
    ca: Issued,
    *,
    common_name: str,
    organizations: Sequence[str] = (),
    dns_names: Sequence[str] = (),
    ip_addresses: Sequence[str] = (),
    server: bool = True,
    client: bool = False,
    validity: timedelta,
    now: datetime,
) -> Issued:
    """A leaf certificate from ``ca``: a TLS server's (names as subject alternative names), a
    client's (``organizations`` become its groups at a Kubernetes API server), or both. Valid
    from ``now`` (backdated) for ``validity``, never past the CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    # Never outlive the issuer: a chain with an expired CA fails even if the leaf is valid.
    not_after = min(now + validity, ca.cert.not_valid_after_utc)
    subject = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    subject += [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    usages = [ExtendedKeyUsageOID.SERVER_AUTH] if server else []
    usages += [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
    ca_ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(subject))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    )
    names = _general_names(dns_names, ip_addresses)
    if names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(sorted(names, key=str)), critical=False
        )
    cert = (
        builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), False
        )
        .sign(ca.key, hashes.SHA256())
    )
    return Issued(cert, key)


def _webhook_ca(policy: CertPolicy, now: datetime) -> Issued:
    return new_ca(CA_COMMON_NAME, validity=policy.ca_validity, now=now)


def _serving(ca: Issued, policy: CertPolicy, now: datetime) -> Issued:
    return issue(
        ca,
        common_name=(policy.dns_names or policy.ip_addresses)[0],
        dns_names=policy.dns_names,
        ip_addresses=policy.ip_addresses,
        validity=policy.serving_validity,
        now=now,
    )


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    # ECDSA keys sign; key_encipherment is for RSA key transport and has no meaning here.
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


# -- PEM -----------------------------------------------------------------------------------------


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _load_certs(pem: bytes, what: str) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError as e:
        raise CertError(f"{what}: not PEM certificates ({e})") from e
    return certs


def _load_key(pem: bytes, what: str) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as e:
        raise CertError(f"{what}: not an unencrypted PEM private key ({e})") from e
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertError(f"{what}: expected an EC key, got {type(key).__name__}")
    return key

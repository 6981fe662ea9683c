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

from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from webhook.certpolicy import CertPolicy
from webhook.issuer import Issued, cert_to_pem, general_names, issue, key_to_pem, new_ca

CA_COMMON_NAME = "trustgate-webhook-ca"

__all__ = [
    "CA_COMMON_NAME",
    "CertError",
    "Renewal",
    "TlsMaterial",
    "create",
    "reissue",
    "renew",
    "renewal_due",
]


class CertError(ValueError):
    """PEM material that does not parse or does not fit together (key vs certificate)."""


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
    bundle = b"".join(cert_to_pem(c) for c in cas)
    return Renewal(TlsMaterial(bundle, key_to_pem(ca_key), cert_pem, key_pem), reason)


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
    return general_names(policy.dns_names, policy.ip_addresses)


def _names(cert: x509.Certificate) -> frozenset[x509.GeneralName]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return frozenset()
    return frozenset(san)


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


# -- PEM -----------------------------------------------------------------------------------------


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

"""One certificate issuer for trustgate: a CA and the leaf certificates it signs (TLS servers,
Kubernetes API clients). Pure apart from key generation's randomness: each call takes ``now``.

The webhook's own PKI (``webhook.certs``) issues through it, and so does the lab's
(``attestation.lab.pki``: the control plane's serving and client certificates): one profile,
ECDSA P-256 with SHA-256, tested once.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["BACKDATE", "Issued", "cert_to_pem", "general_names", "issue", "key_to_pem", "new_ca"]

#: Certificates start a little in the past: the API server's clock may lag the issuer's.
BACKDATE = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class Issued:
    """A certificate and the private key it certifies (a CA's, or a leaf's)."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def cert_pem(self) -> bytes:
        return cert_to_pem(self.cert)

    @property
    def key_pem(self) -> bytes:
        return key_to_pem(self.key)


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
    names = general_names(dns_names, ip_addresses)
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


def general_names(
    dns_names: Sequence[str], ip_addresses: Sequence[str]
) -> frozenset[x509.GeneralName]:
    names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns_names]
    names += [x509.IPAddress(ipaddress.ip_address(i)) for i in ip_addresses]
    return frozenset(names)


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


def cert_to_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_to_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )

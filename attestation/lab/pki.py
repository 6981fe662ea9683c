"""A throwaway PKI for the lab (the control plane, the agents' TLS, test webhooks): the webhook's
own issuer (``webhook.certs``), with every certificate and key written to PEM files."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from webhook.issuer import Issued, issue, new_ca

__all__ = ["CertFiles", "CertificateAuthority"]

#: Long enough for any lab run, short enough that a leaked lab key is soon worthless.
_VALIDITY = dt.timedelta(days=2)


@dataclass(frozen=True)
class CertFiles:
    cert: Path
    key: Path


@dataclass(frozen=True)
class CertificateAuthority:
    issued: Issued
    files: CertFiles

    @classmethod
    def create(cls, directory: Path, common_name: str = "trustgate-lab-ca") -> CertificateAuthority:
        """A new CA, written to ``directory``/ca.crt and ca.key."""
        ca = new_ca(common_name, validity=_VALIDITY, now=dt.datetime.now(dt.UTC))
        return cls(ca, _write(directory, "ca", ca))

    def issue(
        self,
        directory: Path,
        stem: str,
        common_name: str,
        *,
        organizations: tuple[str, ...] = (),
        dns_names: tuple[str, ...] = (),
        ip_addresses: tuple[str, ...] = (),
        server: bool = False,
        client: bool = False,
    ) -> CertFiles:
        """A leaf certificate, written to ``directory``/``stem``.crt and .key."""
        leaf = issue(
            self.issued,
            common_name=common_name,
            organizations=organizations,
            dns_names=dns_names,
            ip_addresses=ip_addresses,
            server=server,
            client=client,
            validity=_VALIDITY,
            now=dt.datetime.now(dt.UTC),
        )
        return _write(directory, stem, leaf)


def _write(directory: Path, stem: str, issued: Issued) -> CertFiles:
    directory.mkdir(parents=True, exist_ok=True)
    files = CertFiles(cert=directory / f"{stem}.crt", key=directory / f"{stem}.key")
    files.cert.write_bytes(issued.cert_pem)
    files.key.write_bytes(issued.key_pem)
    files.key.chmod(0o600)
    return files

"""What the webhook's own certificates must name and how long they live.

Apart from the rest of its PKI (``webhook.certs``, ``webhook.issuer``) so that reading the
defaults (``trustgate webhook --help``) does not load the X.509 stack.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import timedelta

__all__ = [
    "CA_RENEW_BEFORE",
    "CA_VALIDITY",
    "SERVING_RENEW_BEFORE",
    "SERVING_VALIDITY",
    "CertPolicy",
]

#: Named defaults: a CA for ten years, replaced a year ahead; serving certificates for 90 days,
#: renewed with 30 days left (a replica that misses a few hourly checks still renews in time).
CA_VALIDITY = timedelta(days=3650)
CA_RENEW_BEFORE = timedelta(days=365)
SERVING_VALIDITY = timedelta(days=90)
SERVING_RENEW_BEFORE = timedelta(days=30)


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

"""``trustgate_webhook_certificate_expiry_timestamp_seconds``: when the certificate the webhook
serves stops being valid (Unix time), read from its file at each scrape.

Read at scrape time, not recorded at load, so that whoever renews it (the webhook's own
``--self-signed-tls`` renewals or cert-manager rewriting the mounted Secret) shows at once. The
alert TrustgateWebhookCertificateExpiry (manifests/monitoring/prometheusrule.yaml) fires when it
comes within a week: renewal happens long before that, so it means renewal is failing, and an
expired serving certificate makes the API server refuse every NF pod (failurePolicy Fail).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["CERTIFICATE_EXPIRY_METRIC", "ServedCertificate"]

CERTIFICATE_EXPIRY_METRIC = "trustgate_webhook_certificate_expiry_timestamp_seconds"
_HELP = "When the serving certificate the webhook presents expires (Unix time)."


class ServedCertificate(Collector):
    """The expiry of the first certificate in ``path`` (the leaf; a chain may follow). No sample
    while there is no path or the file is missing or not PEM: absent, not a made-up time."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path

    def not_after(self) -> float | None:
        if self.path is None:
            return None
        try:
            certificates = x509.load_pem_x509_certificates(self.path.read_bytes())
        except (OSError, ValueError):
            return None
        return certificates[0].not_valid_after_utc.timestamp()

    def describe(self) -> Iterable[Metric]:
        return [GaugeMetricFamily(CERTIFICATE_EXPIRY_METRIC, _HELP)]

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(CERTIFICATE_EXPIRY_METRIC, _HELP)
        not_after = self.not_after()
        if not_after is not None:
            family.add_metric([], not_after)
        return [family]

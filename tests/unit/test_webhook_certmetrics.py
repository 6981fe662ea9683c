"""The webhook exports when the certificate it serves expires (the PrometheusRule's
TrustgateWebhookCertificateExpiry reads it): read from the file at each scrape, so a renewal shows
at the next one; absent, never invented, while the file is missing or unreadable."""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.unit.test_webhook_app import SETTINGS, make_app, running
from webhook.certmetrics import CERTIFICATE_EXPIRY_METRIC
from webhook.certpolicy import CertPolicy
from webhook.certs import create, reissue
from webhook.metrics import Metrics

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
POLICY = CertPolicy(("trustgate-webhook.trustgate-system.svc",))


def _samples(metrics: Metrics | str) -> list[float]:
    text = metrics if isinstance(metrics, str) else metrics.exposition().decode()
    pattern = rf"^{CERTIFICATE_EXPIRY_METRIC} (\S+)$"
    return [float(v) for v in re.findall(pattern, text, re.MULTILINE)]


def test_the_served_certificates_expiry_is_exported_and_follows_a_renewal(tmp_path: Path) -> None:
    material = create(POLICY, NOW)
    cert_file = tmp_path / "tls.crt"
    cert_file.write_bytes(material.cert)
    metrics = Metrics(certificate_file=cert_file)
    assert _samples(metrics) == [material.serving_cert.not_valid_after_utc.timestamp()]

    renewed = reissue(material, POLICY, NOW + timedelta(days=30))
    cert_file.write_bytes(renewed.cert + material.ca_bundle)  # a chain: the leaf comes first
    later = renewed.serving_cert.not_valid_after_utc.timestamp()
    assert later > material.serving_cert.not_valid_after_utc.timestamp()
    assert _samples(metrics) == [later]


def test_no_file_no_sample_but_the_metric_is_described(tmp_path: Path) -> None:
    metrics = Metrics()
    text = metrics.exposition().decode()
    assert f"# TYPE {CERTIFICATE_EXPIRY_METRIC} gauge" in text
    assert _samples(metrics) == []
    for content in (None, b"not a certificate"):
        path = tmp_path / "tls.crt"
        if content is not None:
            path.write_bytes(content)
        metrics.certificate.path = path
        assert _samples(metrics) == []


def test_the_app_exports_the_certificate_it_was_started_with(tmp_path: Path) -> None:
    """``--tls-cert`` (cert-manager's or the operator's certificate): the app's /metrics reads it.
    (The self-managed certificate's file is handed over the same way: tests/cluster/
    test_webhook_tls.py runs that server.)"""
    material = create(POLICY, NOW)
    cert_file = tmp_path / "tls.crt"
    cert_file.write_bytes(material.cert)
    settings = dataclasses.replace(SETTINGS, tls_cert_file=str(cert_file))
    with running(make_app(settings=settings)) as client:
        text = client.get("/metrics").text
    assert _samples(text) == [material.serving_cert.not_valid_after_utc.timestamp()]

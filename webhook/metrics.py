"""Prometheus metrics of one webhook app, in the app's own registry (no process globals, so two
apps in one test process do not collide)."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from attestation.adapters.processmetrics import register_process_metrics
from webhook.certmetrics import ServedCertificate

__all__ = ["LATENCY_BUCKETS", "Metrics"]

#: Admission has a 5 s budget at most; the interesting range is well under 10 ms.
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5, 5.0)


class Metrics:
    def __init__(self, certificate_file: Path | None = None) -> None:
        """``certificate_file``: the serving certificate's PEM file, whose expiry is exported
        (``webhook.certmetrics``); it can also be set later, as ``certificate.path``."""
        self.registry = CollectorRegistry(auto_describe=True)
        register_process_metrics(self.registry, "webhook")
        self.certificate = ServedCertificate(certificate_file)
        self.registry.register(self.certificate)
        self.requests = Counter(
            "trustgate_webhook_requests",
            "Admission requests by endpoint and decision (allowed, denied, patched, warned, "
            "errored, bad_request, too_large, unsupported_media_type).",
            ["endpoint", "decision"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "trustgate_webhook_request_seconds",
            "Time from receiving a request to having its answer, by endpoint.",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

    def observe(self, endpoint: str, decision: str, seconds: float) -> None:
        self.requests.labels(endpoint, decision).inc()
        self.latency.labels(endpoint).observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

"""Every component's /metrics carries the standard process and interpreter collectors and
``trustgate_build_info`` (issue 11): each keeps a private registry, which prometheus_client leaves
without them. tests/tpm/test_agent_metrics.py scrapes a running agent's."""

from __future__ import annotations

import os
import platform
from importlib.metadata import version
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from attestation.adapters.processmetrics import Component, build_labels, register_process_metrics
from attestation.core.names import BUILD_INFO_METRIC
from attestation.verifier.metrics import VerifierMetrics
from webhook.metrics import Metrics

STANDARD = (
    "process_resident_memory_bytes",
    "process_cpu_seconds_total",
    "process_open_fds",
    "process_start_time_seconds",
    "python_info",
    "python_gc_collections_total",
)


def _samples(exposition: bytes) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(exposition.decode()):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def _check(exposition: bytes, component: Component) -> None:
    samples = _samples(exposition)
    assert [name for name in STANDARD if name not in samples] == []
    labels = {"component": component, "version": version("trustgate")}
    assert samples[BUILD_INFO_METRIC] == [({**labels, "python": platform.python_version()}, 1.0)]
    # this process's own figures
    status = Path(f"/proc/{os.getpid()}/status").read_text()
    rss = next(int(line.split()[1]) * 1024 for line in status.splitlines() if "VmRSS" in line)
    assert abs(samples["process_resident_memory_bytes"][0][1] - rss) < 64 * 2**20


def test_webhook_metrics() -> None:
    _check(Metrics().exposition(), "webhook")


def test_verifier_metrics() -> None:
    _check(generate_latest(VerifierMetrics().registry), "verifier")


@pytest.mark.parametrize("component", ["agent", "verifier", "webhook"])
def test_register_process_metrics(component: Component) -> None:
    registry = CollectorRegistry()
    register_process_metrics(registry, component)
    _check(generate_latest(registry), component)


def test_two_components_in_one_process_do_not_collide() -> None:
    """Private registries: a test process (or the lab) builds many; none shares collectors."""
    first, second = Metrics(), Metrics()
    assert _samples(first.exposition()).keys() == _samples(second.exposition()).keys()


def test_build_labels_name_the_release_as_trustgate_version_prints_it() -> None:
    assert build_labels("agent") == {
        "component": "agent",
        "version": version("trustgate"),
        "python": platform.python_version(),
    }

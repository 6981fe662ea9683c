"""The optional monitoring (manifests/monitoring/, the chart's monitoring.* values): every alert
and every dashboard query parses with Prometheus' own PromQL parser (scripts/promql-check, built
by scripts/build-promql-check.sh) and names only metrics the verifier and the webhook really
export, taken from their registries, not from a list kept by hand; the alerts the operator needs
are there; the dashboard is valid JSON."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from attestation.verifier.metrics import VerifierMetrics
from webhook.metrics import Metrics as WebhookMetrics

REPO = Path(__file__).resolve().parents[2]
MONITORING = REPO / "manifests" / "monitoring"
PROMQL_CHECK = REPO / "scripts" / "promql-check"

#: Series Prometheus makes itself for every target, not exported by any code of ours.
PROMETHEUS_OWN = {"up"}
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("_sum", "_count", "_created"),
    "gauge": ("",),
    "info": ("_info",),
    "unknown": ("",),
}


def exported(registry: CollectorRegistry) -> set[str]:
    """The sample names a scrape of ``registry`` can show, labelled children or not yet."""
    names: set[str] = set()
    for family in registry.collect():
        names |= {family.name + suffix for suffix in _SUFFIXES[family.type]}
    return names


def promql_check() -> Path:
    """The binary scripts/build-promql-check.sh built from these sources."""
    sources = b"".join((PROMQL_CHECK / f).read_bytes() for f in ("go.mod", "go.sum", "main.go"))
    key = hashlib.sha256(sources).hexdigest()[:16]
    cache = Path(os.environ.get("TRUSTGATE_CACHE", Path.home() / ".cache" / "trustgate"))
    binary = cache / "promql-check" / key / "promql-check"
    if not binary.exists():
        pytest.fail(f"{binary} is missing: run `make setup` (scripts/build-promql-check.sh)")
    return binary


def parse(expressions: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Each expression -> {"metrics": [...]} or {"error": "..."} from Prometheus' parser."""
    lines = "".join(json.dumps(e) + "\n" for e in expressions)
    result = subprocess.run(
        [str(promql_check())], input=lines, capture_output=True, text=True, timeout=60,
        check=True,
    )  # fmt: skip
    answers = [json.loads(line) for line in result.stdout.splitlines()]
    return {a["expr"]: a for a in answers}


@pytest.fixture(scope="module")
def known() -> set[str]:
    return exported(VerifierMetrics().registry) | exported(WebhookMetrics().registry)


def _rules() -> list[dict[str, Any]]:
    rule = yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())
    return [r for group in rule["spec"]["groups"] for r in group["rules"]]


def _dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((MONITORING / "dashboard.json").read_text())
    return loaded


def test_the_parser_names_the_metrics_and_refuses_what_prometheus_would() -> None:
    answers = parse([
        'sum(increase(trustgate_attestations_total{result=~"a|b"}[5m])) > 0',
        "histogram_quantile(0.99, sum by (le) (rate(x_bucket[5m]))) / on (le) group_left y",
        "sum(rate(x_total[5m]) > ",
        "rates(x_total[5m])",
    ])  # fmt: skip
    metrics = [a.get("metrics") for a in answers.values()]
    assert metrics[:2] == [["trustgate_attestations_total"], ["x_bucket", "y"]]
    errors = [a.get("error", "") for a in answers.values()]
    assert "unclosed left parenthesis" in errors[2]
    assert 'unknown function with name "rates"' in errors[3]


def test_the_registries_export_what_the_readme_names(known: set[str]) -> None:
    assert {
        "trustgate_attestations_total", "trustgate_evidence_age_seconds",
        "trustgate_webhook_requests_total", "trustgate_webhook_request_seconds_bucket",
    } <= known  # fmt: skip
    assert "trustgate_attestations" not in known  # a counter is scraped as ..._total


@pytest.mark.parametrize("rule", _rules(), ids=lambda r: str(r["alert"]))
def test_every_alert_parses_and_names_only_exported_metrics(
    rule: dict[str, Any], known: set[str]
) -> None:
    answer = parse([rule["expr"]])[rule["expr"]]
    assert "error" not in answer, f"{rule['alert']}: {answer.get('error')}"
    unknown = set(answer["metrics"]) - known - PROMETHEUS_OWN
    assert not unknown, f"{rule['alert']}: no code exports {sorted(unknown)}"
    assert rule["labels"]["severity"] in {"critical", "warning", "info"}
    assert rule["annotations"]["summary"]
    assert rule["annotations"]["description"]


def test_the_alerts_an_operator_needs_are_there() -> None:
    names = {r["alert"] for r in _rules()}
    assert {
        "TrustgateNodeUntrusted", "TrustgateEvidenceStale", "TrustgateWebhookErrors",
        "TrustgateWebhookCertificateExpiry",
    } <= names  # fmt: skip


def test_the_dashboard_is_grafana_json_whose_queries_name_exported_metrics(
    known: set[str],
) -> None:
    dashboard = _dashboard()
    assert dashboard["uid"] == "trustgate"
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert "datasource" in variables
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    answers = parse(t["expr"] for p in panels for t in p["targets"])
    for panel in panels:
        assert panel["datasource"]["uid"] == "${datasource}"
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            answer = answers[target["expr"]]
            assert "error" not in answer, f"panel {panel['title']!r}: {answer.get('error')}"
            unknown = set(answer["metrics"]) - known
            assert not unknown, f"panel {panel['title']!r}: no code exports {sorted(unknown)}"

"""The optional monitoring (manifests/monitoring/, the chart's monitoring.* values): every alert
and every dashboard query names only metrics the verifier and the webhook really export, taken
from their registries, not from a list kept by hand; the alerts the operator needs are there;
the dashboard is valid JSON. (promtool is not built here: a few regular expressions take the
metric names out of each expression, and refuse any function they do not know.)"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from attestation.verifier.metrics import VerifierMetrics
from webhook.metrics import Metrics as WebhookMetrics

MONITORING = Path(__file__).resolve().parents[2] / "manifests" / "monitoring"

#: Series Prometheus makes itself for every target, not exported by any code of ours.
PROMETHEUS_OWN = {"up"}

#: The functions and aggregations the expressions may use (any other fails the extraction).
FUNCTIONS = {
    "abs", "absent", "avg", "ceil", "count", "delta", "floor", "histogram_quantile", "increase",
    "irate", "max", "min", "rate", "round", "sum", "time", "topk", "vector",
}  # fmt: skip
KEYWORDS = {
    "and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left",
    "group_right",
}  # fmt: skip
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


def metric_names(expression: str) -> set[str]:
    """The metric names a PromQL expression selects. Label matchers, ranges, grouping label
    lists and strings are dropped first; a word followed by "(" must be a known function."""
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', expression)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names: set[str] = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        word = match.group()
        if text[match.end() :].lstrip().startswith("("):
            if word not in FUNCTIONS:
                raise ValueError(f"{expression!r}: unknown function {word}")
        elif word not in KEYWORDS:
            names.add(word)
    return names


@pytest.fixture(scope="module")
def known() -> set[str]:
    return exported(VerifierMetrics().registry) | exported(WebhookMetrics().registry)


def _rules() -> list[dict[str, Any]]:
    rule = yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())
    return [r for group in rule["spec"]["groups"] for r in group["rules"]]


def _dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((MONITORING / "dashboard.json").read_text())
    return loaded


@pytest.mark.parametrize(
    ("expression", "names"),
    [
        ('sum(increase(trustgate_attestations_total{result=~"a|b"}[5m])) > 0',
         {"trustgate_attestations_total"}),
        ("max by (node) (trustgate_evidence_age_seconds) > 30", {"trustgate_evidence_age_seconds"}),
        ("histogram_quantile(0.99, sum by (le) (rate(x_bucket[5m]))) > 1", {"x_bucket"}),
        ("min(a_seconds) - time() < 7 * 86400", {"a_seconds"}),
        ('absent(up{job="trustgate-verifier"} == 1)', {"up"}),
        ("a / on (node) group_left b", {"a", "b"}),
    ],
)  # fmt: skip
def test_metric_names_are_taken_out_of_an_expression(expression: str, names: set[str]) -> None:
    assert metric_names(expression) == names


def test_an_unknown_function_is_refused_not_taken_for_a_metric() -> None:
    with pytest.raises(ValueError, match="unknown function rates"):
        metric_names("rates(trustgate_attestations_total[5m])")


def test_the_registries_export_what_the_readme_names(known: set[str]) -> None:
    assert {
        "trustgate_attestations_total", "trustgate_evidence_age_seconds",
        "trustgate_webhook_requests_total", "trustgate_webhook_request_seconds_bucket",
    } <= known  # fmt: skip
    assert "trustgate_attestations" not in known  # a counter is scraped as ..._total


@pytest.mark.parametrize("rule", _rules(), ids=lambda r: str(r["alert"]))
def test_every_alert_names_only_exported_metrics(rule: dict[str, Any], known: set[str]) -> None:
    unknown = metric_names(rule["expr"]) - known - PROMETHEUS_OWN
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
    for panel in panels:
        assert panel["datasource"]["uid"] == "${datasource}"
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            unknown = metric_names(target["expr"]) - known
            assert not unknown, f"panel {panel['title']!r}: no code exports {sorted(unknown)}"

"""The Helm chart and the release YAML are generated from manifests/ (scripts/gen_chart.py): the
files in the tree are what the generator gives now, and its substitutions touch only what they
must. ``helm lint``/``template``/``install`` themselves: tests/cluster/test_helm.py."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen = _load("gen_chart")


def _deployment(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "trustgate-verifier", "namespace": "trustgate-system"},
        "spec": {"replicas": 2, **spec},
    }


def test_the_chart_and_release_yaml_are_what_the_manifests_give() -> None:
    problems = gen.check(gen.generate())
    assert problems == [], "run `make chart`:\n" + "\n".join(problems)


def test_the_release_yaml_is_the_kustomize_base() -> None:
    base_text, base, monitoring = gen.render()
    release = (REPO / "release" / "trustgate.yaml").read_text()
    assert release.endswith(base_text)
    assert [d["kind"] for d in monitoring] == ["ConfigMap", "PrometheusRule", "ServiceMonitor",
                                               "ServiceMonitor"]  # fmt: skip
    assert not {(d["kind"], d["metadata"]["name"]) for d in monitoring} & {
        (d["kind"], d["metadata"]["name"]) for d in base
    }


@pytest.mark.parametrize(
    ("text", "escaped"),
    [
        ("legend: '{{node}}'", 'legend: \'{{ "{{" }}node{{ "}}" }}\''),
        ("{{ $labels.node }} {{ $value | humanize }}",
         '{{ "{{" }} $labels.node {{ "}}" }} {{ "{{" }} $value | humanize {{ "}}" }}'),
        ("no braces {here}", "no braces {here}"),
    ],
)  # fmt: skip
def test_prometheus_and_grafana_templates_are_escaped_for_helm(text: str, escaped: str) -> None:
    assert gen.escape_braces(text) == escaped


def test_the_namespace_is_substituted_as_a_word_and_the_node_label_is_not_taken_for_it() -> None:
    doc = _deployment(
        template={"spec": {
            "containers": [{"name": "c", "image": "trustgate:0.1.0", "env": [
                {"name": "URL", "value": "http://trustgate-verifier.trustgate-system.svc:8443"},
            ]}],
            "tolerations": [{"key": "node-restriction.kubernetes.io/trustgate-system"}],
            "nodeSelector": {"node-restriction.kubernetes.io/trustgate-5g-core": "true"},
        }},
    )  # fmt: skip
    text = gen.template_document(doc)
    assert "namespace: {{ .Values.namespace.name }}" in text
    assert "trustgate-verifier.{{ .Values.namespace.name }}.svc" in text
    assert "key: {{ .Values.nodeLabels.system }}" in text
    assert "{{ .Values.nodeLabels.core }}: 'true'" in text
    assert "trustgate-system" not in text.replace("{{ .Values.namespace.name }}", "")
    assert "replicas: {{ .Values.verifier.replicas }}" in text
    assert (
        'image: "{{ .Values.image.repository }}:'
        '{{ .Values.image.tag | default .Chart.AppVersion }}"'
    ) in text


def test_a_cel_expression_naming_the_service_account_follows_the_namespace() -> None:
    doc = {
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": "trustgate-x"},
        "spec": {"matchConditions": [{"expression": (
            "request.userInfo.username == "
            "'system:serviceaccount:trustgate-system:trustgate-verifier'"
        )}]},
    }  # fmt: skip
    text = gen.template_document(doc)
    assert "system:serviceaccount:{{ .Values.namespace.name }}:trustgate-verifier" in text


def test_an_image_the_chart_has_no_value_for_is_refused() -> None:
    doc = _deployment(template={"spec": {"containers": [{"name": "c", "image": "other:1"}]}})
    with pytest.raises(ValueError, match="other:1"):
        gen.template_document(doc)


def test_monitoring_objects_take_the_operators_labels() -> None:
    doc = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": "trustgate-verifier", "namespace": "trustgate-system",
                     "labels": {"app.kubernetes.io/part-of": "trustgate"}},
        "spec": {},
    }  # fmt: skip
    text = gen.template_document(doc)
    assert (
        "    app.kubernetes.io/part-of: trustgate\n"
        "    {{- with .Values.monitoring.labels }}\n"
        "    {{- toYaml . | nindent 4 }}\n"
        "    {{- end }}\n"
    ) in text


def test_check_names_a_hand_edit_and_a_file_the_generator_no_longer_makes(tmp_path: Path) -> None:
    files = {"charts/trustgate/values.yaml": "a: 1\n", "release/trustgate.yaml": "kind: X\n"}
    gen.write(files, tmp_path)
    assert gen.check(files, tmp_path) == []
    (tmp_path / "charts/trustgate/values.yaml").write_text("a: 2\n")
    (tmp_path / "charts/trustgate/templates").mkdir()
    (tmp_path / "charts/trustgate/templates/old.yaml").write_text("kind: Old\n")
    problems = gen.check(files, tmp_path)
    assert problems[0].startswith("charts/trustgate/templates/old.yaml: not generated")
    assert "-a: 2\n+a: 1\n" in problems[1]
    gen.write(files, tmp_path)
    assert not (tmp_path / "charts/trustgate/templates/old.yaml").exists()
    assert gen.check(files, tmp_path) == []


def test_values_schema_knows_every_default_value() -> None:
    chart = REPO / "charts" / "trustgate"
    values = yaml.safe_load((chart / "values.yaml").read_text())
    schema = yaml.safe_load((chart / "values.schema.json").read_text())

    def walk(value: Any, node: dict[str, Any], path: str) -> None:
        if isinstance(value, dict) and "properties" in node:
            for key, child in value.items():
                assert key in node["properties"], f"{path}{key}: not in values.schema.json"
                walk(child, node["properties"][key], f"{path}{key}.")

    walk(values, schema, "")
    assert values["namespace"] == {"name": "trustgate-system", "create": True}
    assert not any(values["monitoring"][s]["enabled"]
                   for s in ("serviceMonitor", "prometheusRule", "dashboard"))  # fmt: skip

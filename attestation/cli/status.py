"""``trustgate status``: the attested nodes, their verdicts and how old they are, and every NF
pod: where it runs, and why it waits or why trustgate evicted it.

Verdicts are checked as the webhook checks them: signed by the verifier's key (the ConfigMap
``trustgate-verifier-public-key`` unless ``--verifier-key`` names a file), bound to this cluster
and to their NodeAttestation. A verdict that fails the check shows as ``Invalid``, one past its
``expiresAt`` as ``Expired``: what the webhook would refuse is what the line says.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from attestation.cli.common import fail, operator_kube

__all__ = ["register", "run"]

#: Where the manifests publish the verifier's public key (manifests/webhook.yaml).
KEY_CONFIGMAP = "trustgate-verifier-public-key"
KEY_FIELD = "key.pub"


def register(sub: Any) -> None:
    p = sub.add_parser("status", help="attested nodes and NF pods: state, age, why a pod waits")
    p.add_argument(
        "--kubeconfig",
        type=Path,
        default=None,
        help="default: as kubectl: in a pod its ServiceAccount, else $KUBECONFIG or ~/.kube/config",
    )
    p.add_argument(
        "--namespace", default="trustgate-system",
        help="where trustgate runs (its public-key ConfigMap); default: %(default)s",
    )  # fmt: skip
    p.add_argument(
        "--verifier-key", type=Path, default=None, metavar="PEM",
        help="check verdicts with this public key instead of the namespace's ConfigMap",
    )  # fmt: skip
    p.add_argument(
        "-o", "--output", choices=["text", "json"], default="text",
        help="text (a table) or json (default: %(default)s)",
    )  # fmt: skip
    p.set_defaults(handler=run)


def _keys(kube: Any, args: argparse.Namespace) -> dict[str, Any]:
    from attestation.core.signing import load_public_key_pem, public_keys_by_id

    if args.verifier_key is not None:
        return public_keys_by_id([load_public_key_pem(args.verifier_key.read_bytes())])
    cm = kube.get(f"/api/v1/namespaces/{args.namespace}/configmaps/{KEY_CONFIGMAP}") or {}
    pem = (cm.get("data") or {}).get(KEY_FIELD)
    if not pem:
        raise ValueError(f"no {KEY_FIELD} in ConfigMap {args.namespace}/{KEY_CONFIGMAP} "
                         "(give --verifier-key)")  # fmt: skip
    return public_keys_by_id([load_public_key_pem(pem.encode())])


def run(args: argparse.Namespace) -> int:
    from attestation.adapters.kube import (
        KubeError,
        nodeattestation_path,
        read_cluster_id,
    )  # fmt: skip
    from attestation.core.clock import utcnow
    from attestation.core.names import NF_LABEL
    from attestation.core.nodeattestation import Binding, NodeAttestationError, node_trust
    from attestation.core.overview import EVICTION_REASONS, node_lines, pod_lines, render
    from attestation.core.signing import SigningError

    kube = operator_kube(args.kubeconfig)
    try:
        keys = _keys(kube, args)
        binding = Binding(read_cluster_id(kube))
        objects, _ = kube.list(nodeattestation_path())
        pods, _ = kube.list("/api/v1/pods", label_selector=NF_LABEL)
        events = []
        for reason in sorted(EVICTION_REASONS):
            events += kube.list("/api/v1/events", field_selector=f"reason={reason}")[0]
    except (KubeError, OSError, ValueError, SigningError) as e:
        return fail(f"status: {e}")
    finally:
        kube.close()
    trusts = []
    for obj in objects:
        try:
            trusts.append(node_trust(obj, keys, binding))
        except NodeAttestationError:
            continue  # no name: nothing to show it under
    nodes, nf_pods = node_lines(trusts, utcnow()), pod_lines(pods, events)
    if args.output == "json":
        json.dump({"nodes": [asdict(n) for n in nodes], "pods": [asdict(p) for p in nf_pods]},
                  sys.stdout, indent=2)  # fmt: skip
        print()
    else:
        sys.stdout.write(render(nodes, nf_pods))
    return 0

"""``trustgate node approve NODE --ek DIGEST``: an operator lets a node enroll with another TPM.

A node is bound to the EK it first enrolled with; a new EK (a replaced TPM or mainboard — or a
relay to another machine's TPM) and an EK another node is bound to are refused
(``enroll.ek_changed``, ``enroll.ek_reused``) until a cluster admin approves exactly that EK. The
approval is ``spec.approvedEkDigest`` of the node's NodeAttestation, which RBAC lets only cluster
admins write (not the verifier, not a node, not a namespace admin). Check the digest against the
machine's inventory first: the refusal names it, and so does the EK certificate.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from attestation.cli.common import UsageError, fail, operator_kube

__all__ = ["register", "run"]

_DIGEST = re.compile(r"[0-9a-f]{64}")


def register(sub: Any) -> None:
    p = sub.add_parser("node", help="operator actions on a node's attestation")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    approve = actions.add_parser(
        "approve",
        help="let NODE enroll with the TPM whose EK digest is given (after enroll.ek_changed "
        "or enroll.ek_reused)",
    )
    approve.add_argument("node", metavar="NODE", help="the node's name")
    approve.add_argument(
        "--ek", required=True, metavar="DIGEST",
        help="SHA-256 (hex) of the EK's SubjectPublicKeyInfo, as the refusal names it",
    )  # fmt: skip
    approve.add_argument(
        "--kubeconfig",
        type=Path,
        default=None,
        help="default: as kubectl: in a pod its ServiceAccount, else $KUBECONFIG or ~/.kube/config",
    )
    approve.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    digest = args.ek.strip().lower()
    if not _DIGEST.fullmatch(digest):
        raise UsageError(f"--ek {args.ek!r} is not a SHA-256 digest (64 hex digits)")
    from attestation.adapters.kube import (
        KubeError,
        nodeattestation_path,
    )
    from attestation.core.names import APPROVED_EK_FIELD

    kube = operator_kube(args.kubeconfig)
    try:
        kube.merge_patch(nodeattestation_path(args.node), {"spec": {APPROVED_EK_FIELD: digest}})
    except KubeError as e:
        if e.status == 404:
            return fail(f"node approve: node {args.node} has no NodeAttestation")
        return fail(f"node approve: {e}")
    finally:
        kube.close()
    print(f"node {args.node}: EK {digest} approved; the verifier binds it at its next enrollment")
    return 0

"""``trustgate verifier``: re-attest every node and publish signed verdicts."""

from __future__ import annotations

import argparse
import socket
from pathlib import Path
from typing import Any

from attestation.cli.common import env_default, fail, node_map, setup_logging


def register(sub: Any) -> None:
    p = sub.add_parser("verifier", help="re-attest every node and publish signed verdicts")
    p.add_argument("--kubeconfig", type=Path, help="default: in-cluster ServiceAccount")
    p.add_argument(
        "--agents",
        type=node_map,
        default={},
        help="explicit NODE=URL,... (default: discover the agent DaemonSet's pods)",
    )
    p.add_argument(
        "--node-selector", default="", help="label selector of the nodes to attest (default: all)"
    )
    p.add_argument(
        "--agent-port",
        type=int,
        default=9443,
        help="the agent DaemonSet's hostPort, when agents are discovered",
    )
    p.add_argument("--policies", type=Path, default=Path("/etc/trustgate/policies"))
    p.add_argument("--ek-ca", type=Path, default=Path("/etc/trustgate/ek-ca.pem"))
    p.add_argument("--signing-key", type=Path, default=Path("/etc/trustgate/signing/key.pem"))
    p.add_argument("--audit-log", type=Path, default=Path("/var/lib/trustgate/audit.jsonl"))
    p.add_argument("--interval", type=float, default=2.0)
    p.add_argument("--max-age", type=float, default=10.0)
    p.add_argument("--agent-timeout", type=float, default=3.0)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument(
        "--remediation",
        choices=["evict-only", "evict-then-delete", "annotate-only"],
        default="evict-then-delete",
    )
    p.add_argument("--eviction-deadline", type=float, default=30.0)
    p.add_argument("--untrusted-node-action", choices=["evict", "none"], default="evict")
    p.add_argument(
        "--unknown-grace",
        type=float,
        default=300.0,
        help="seconds a node may lack fresh evidence before its NF pods are evicted",
    )
    p.add_argument("--listen", default="0.0.0.0:8443", help="HOST:PORT of the push endpoint")
    p.add_argument("--tls-cert", type=Path)
    p.add_argument("--tls-key", type=Path)
    p.add_argument("--namespace", default=env_default("POD_NAMESPACE", "trustgate-system"))
    p.add_argument("--identity", default=env_default("POD_NAME") or socket.gethostname())
    p.add_argument("--no-leader-election", action="store_true")
    p.add_argument("--lease-duration", type=float, default=10.0)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import asyncio

    from attestation.core.policy import PolicyError
    from attestation.core.signing import SigningError
    from attestation.kube.client import Kube, load_api_client
    from attestation.verifier.auditlog import AuditChainBroken
    from attestation.verifier.main import run as run_verifier
    from attestation.verifier.settings import VerifierSettings

    setup_logging()
    host, _, port = args.listen.rpartition(":")
    if not host or not port.isdigit():
        return fail(f"verifier: --listen must be HOST:PORT, got {args.listen!r}")
    for what, path in (("--ek-ca", args.ek_ca), ("--signing-key", args.signing_key)):
        if not path.is_file():
            return fail(f"verifier: {what} {path} does not exist")
    settings = VerifierSettings(
        interval=args.interval, max_age=args.max_age, agent_timeout=args.agent_timeout,
        concurrency=args.concurrency, agents=args.agents, node_selector=args.node_selector,
        agent_port=args.agent_port,
        namespace=args.namespace,
        ek_ca_bundle=args.ek_ca, signing_key=args.signing_key, policies=args.policies,
        audit_log=args.audit_log, remediation=args.remediation,
        eviction_deadline=args.eviction_deadline,
        untrusted_node_action=args.untrusted_node_action, unknown_grace=args.unknown_grace,
        listen_host=host,
        listen_port=int(port), tls_cert=args.tls_cert, tls_key=args.tls_key,
        leader_election=not args.no_leader_election, lease_duration=args.lease_duration,
        identity=args.identity,
    )  # fmt: skip
    kube = Kube(load_api_client(args.kubeconfig))
    try:
        asyncio.run(run_verifier(settings, kube))
    except (PolicyError, SigningError, AuditChainBroken, OSError) as e:
        return fail(f"verifier: {e}")
    finally:
        kube.close()
    return 0

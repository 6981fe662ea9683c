"""``trustgate webhook``: the admission webhook that gates 5G core pods on attestation."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from attestation.commands.common import fail, setup_logging


def register(sub: Any) -> None:
    p = sub.add_parser("webhook", help="admission webhook that gates 5G core pods on attestation")
    p.add_argument("--kubeconfig", type=Path, help="default: in-cluster ServiceAccount")
    p.add_argument(
        "--verifier-key",
        type=Path,
        action="append",
        required=True,
        help="the verifier's Ed25519 public key (PEM); repeat during a key rotation",
    )
    p.add_argument(
        "--verifier-username",
        default="system:serviceaccount:trustgate-system:trustgate-verifier",
        help="the only identity allowed to lift gates and change trust labels",
    )
    p.add_argument(
        "--audit-namespace",
        action="append",
        default=[],
        help="namespace where denials become warnings (staged rollout); repeatable",
    )
    p.add_argument("--tls-cert", type=Path, required=True)
    p.add_argument("--tls-key", type=Path, required=True)
    p.add_argument("--host", default="0.0.0.0")  # noqa: S104
    p.add_argument("--port", type=int, default=8443)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from attestation.kube import Kube, Resource, load_api_client, nodeattestation_path
    from attestation.signing import SigningError
    from webhook.app import create_app, server_config
    from webhook.settings import WebhookSettings, verifier_keys_from_pem

    setup_logging()
    try:
        keys = verifier_keys_from_pem(p.read_bytes() for p in args.verifier_key)
    except (OSError, SigningError) as e:
        return fail(f"webhook: --verifier-key: {e}")
    for what, path in (("--tls-cert", args.tls_cert), ("--tls-key", args.tls_key)):
        if not path.is_file():
            return fail(f"webhook: {what} {path} does not exist")
    settings = WebhookSettings(
        verifier_keys=keys, verifier_username=args.verifier_username,
        audit_namespaces=frozenset(args.audit_namespace), host=args.host, port=args.port,
        tls_cert_file=str(args.tls_cert), tls_key_file=str(args.tls_key),
    )  # fmt: skip
    kube = Kube(load_api_client(args.kubeconfig))
    app = create_app(
        settings,
        trust_source=Resource(kube, nodeattestation_path()),
        pod_lookup=kube.get_pod,
    )
    config = server_config(app, settings)
    config.log_level = "warning"
    try:
        uvicorn.Server(config).run()
    finally:
        kube.close()
    return 0

"""``trustgate webhook``: the admission webhook that gates 5G core pods on attestation."""

from __future__ import annotations

import argparse
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

from attestation.cli.common import env_default, fail, setup_logging

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def duration(text: str) -> timedelta:
    """``90d``, ``720h``, ``10m``, ``30s``: argparse type."""
    match = _DURATION.match(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"expected a number and s|m|h|d (e.g. 90d), got {text!r}")
    return timedelta(**{_UNITS[match[2]]: float(match[1])})


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
    p.add_argument("--tls-cert", type=Path, help="serving certificate (operator-managed TLS)")
    p.add_argument("--tls-key", type=Path)
    p.add_argument("--host", default="0.0.0.0")  # noqa: S104
    p.add_argument("--port", type=int, default=8443)
    t = p.add_argument_group("self-managed TLS (instead of --tls-cert/--tls-key)")
    t.add_argument(
        "--self-signed-tls",
        action="store_true",
        help="keep an own CA and serving certificate in a Secret and the caBundle of the "
        "webhook configurations, renewing both",
    )
    t.add_argument("--tls-secret", default="trustgate-webhook-tls")
    t.add_argument(
        "--tls-namespace",
        default=env_default("POD_NAMESPACE", "trustgate-system"),
        help="the Secret's namespace, also the Service's (default: $POD_NAMESPACE)",
    )
    t.add_argument("--service-name", default="trustgate-webhook", help="for the DNS SANs")
    t.add_argument("--webhook-configuration", default="trustgate")
    t.add_argument("--tls-dns-san", action="append", default=[], help="extra DNS SAN; repeatable")
    t.add_argument("--tls-ip-san", action="append", default=[], help="IP SAN (lab); repeatable")
    t.add_argument("--tls-ca-validity", type=duration, default=timedelta(days=3650))
    t.add_argument("--tls-ca-renew-before", type=duration, default=timedelta(days=365))
    t.add_argument("--tls-validity", type=duration, default=timedelta(days=90))
    t.add_argument("--tls-renew-before", type=duration, default=timedelta(days=30))
    t.add_argument(
        "--tls-check-interval",
        type=duration,
        default=timedelta(minutes=10),
        help="re-read the Secret, renew if due, re-check the caBundles",
    )
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import shutil
    import tempfile

    import uvicorn

    from attestation.core.signing import SigningError
    from attestation.kube.client import (
        Kube,
        KubeError,
        NamedSecret,
        Resource,
        WebhookConfigurations,
        load_api_client,
        nodeattestation_path,
    )
    from webhook.app import create_app, server_config
    from webhook.certs import CertPolicy
    from webhook.settings import SelfTlsSettings, WebhookSettings, verifier_keys_from_pem
    from webhook.tls import SelfManagedTls, TlsError

    setup_logging()
    try:
        keys = verifier_keys_from_pem(p.read_bytes() for p in args.verifier_key)
    except (OSError, SigningError) as e:
        return fail(f"webhook: --verifier-key: {e}")
    self_tls: SelfTlsSettings | None = None
    if args.self_signed_tls:
        if args.tls_cert or args.tls_key:
            return fail("webhook: --self-signed-tls and --tls-cert/--tls-key exclude each other")
        service = f"{args.service_name}.{args.tls_namespace}.svc"
        try:
            policy = CertPolicy(
                dns_names=(service, f"{service}.cluster.local", *args.tls_dns_san),
                ip_addresses=tuple(args.tls_ip_san), ca_validity=args.tls_ca_validity,
                ca_renew_before=args.tls_ca_renew_before, serving_validity=args.tls_validity,
                serving_renew_before=args.tls_renew_before,
            )  # fmt: skip
        except ValueError as e:
            return fail(f"webhook: TLS: {e}")
        self_tls = SelfTlsSettings(
            policy, namespace=args.tls_namespace, secret_name=args.tls_secret,
            webhook_configuration=args.webhook_configuration,
            check_interval_seconds=args.tls_check_interval.total_seconds(),
        )  # fmt: skip
    else:
        for what, path in (("--tls-cert", args.tls_cert), ("--tls-key", args.tls_key)):
            if path is None:
                return fail(f"webhook: {what} is required (or --self-signed-tls)")
            if not path.is_file():
                return fail(f"webhook: {what} {path} does not exist")
    settings = WebhookSettings(
        verifier_keys=keys, verifier_username=args.verifier_username,
        audit_namespaces=frozenset(args.audit_namespace), host=args.host, port=args.port,
        tls_cert_file=str(args.tls_cert or ""), tls_key_file=str(args.tls_key or ""),
        self_tls=self_tls,
    )  # fmt: skip
    kube = Kube(load_api_client(args.kubeconfig))
    tls_dir: Path | None = None
    try:
        tls: SelfManagedTls | None = None
        if self_tls is not None:
            # Private (0700) and on the pod's tmpfs: the root file system is read-only.
            tls_dir = Path(tempfile.mkdtemp(prefix="trustgate-webhook-tls-"))
            tls = SelfManagedTls(
                self_tls,
                NamedSecret(kube, self_tls.namespace, self_tls.secret_name),
                WebhookConfigurations(kube, self_tls.webhook_configuration),
                tls_dir,
            )
            try:
                tls.prepare()
            except (KubeError, TlsError) as e:
                return fail(f"webhook: TLS Secret: {e}")
        app = create_app(
            settings,
            trust_source=Resource(kube, nodeattestation_path()),
            pod_lookup=kube.get_pod,
            tls=tls,
        )
        config = server_config(app, settings, tls=tls)
        server = uvicorn.Server(config)
        if tls is not None:
            tls.serving = lambda: server.started
        server.run()
    finally:
        kube.close()
        if tls_dir is not None:
            shutil.rmtree(tls_dir, ignore_errors=True)
    return 0

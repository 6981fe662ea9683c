"""``trustgate webhook``: the admission webhook that gates 5G core pods on attestation.

Flags set fields of :class:`WebhookSettings`, :class:`SelfTlsSettings` and :class:`CertPolicy`,
which hold the defaults; ``$POD_NAMESPACE`` stands in for ``--tls-namespace`` when it is not
given."""

from __future__ import annotations

import argparse
import logging
import os
import re
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from attestation.cli.common import (
    UsageError,
    add_logging_args,
    default_of,
    env_fallback,
    fail,
    given,
    setup_logging,
)
from attestation.core.enforcement import ENFORCEMENT_MODES
from attestation.core.names import ENFORCEMENT_LABEL
from webhook.certpolicy import CertPolicy
from webhook.settings import (
    DEFAULT_SERVICE_NAME,
    SelfTlsSettings,
    WebhookSettings,
)

if TYPE_CHECKING:
    from attestation.adapters.kube import Kube
    from webhook.tls import SelfManagedTls

__all__ = ["duration", "register", "run", "settings_from"]

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1}


def duration(text: str) -> timedelta:
    """``90d``, ``720h``, ``10m``, ``30s``: argparse type."""
    match = _DURATION.match(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"expected a number and s|m|h|d (e.g. 90d), got {text!r}")
    return timedelta(**{_UNITS[match[2]]: float(match[1])})


def _shown(value: timedelta) -> str:
    """A duration as :func:`duration` reads it, in the largest unit that divides it."""
    seconds = value.total_seconds()
    unit = next(u for u, size in _SECONDS.items() if seconds % size == 0 or u == "s")
    return f"{seconds / _SECONDS[unit]:g}{unit}"


def _d(cls: type[Any], name: str) -> str:
    """``default: ...`` of a settings field, for help texts."""
    value = default_of(cls, name)
    return f"default: {_shown(value) if isinstance(value, timedelta) else value}"


def register(sub: Any) -> None:
    # No settings flag has an argparse default: what is not given comes from the dataclasses.
    p = sub.add_parser(
        "webhook",
        help="admission webhook that gates 5G core pods on attestation",
        argument_default=argparse.SUPPRESS,
    )
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
        help="the only identity allowed to lift gates and change trust labels "
        f"({_d(WebhookSettings, 'verifier_username')})",
    )
    p.add_argument(
        "--cluster-id",
        help="the cluster verdicts must be signed for (default: the kube-system Namespace's uid)",
    )
    p.add_argument(
        "--max-verdict-validity",
        type=duration,
        help="refuse a verdict valid for longer (expiresAt - verifiedAt; "
        f"{_d(WebhookSettings, 'max_verdict_validity')})",
    )
    p.add_argument(
        "--enforcement-default",
        choices=ENFORCEMENT_MODES,
        help="the mode of a namespace without the trustgate.io/enforcement label: enforce "
        "(gate, pin, deny), warn (admission warnings only) or audit (audit-log annotations "
        f"only); docs/rollout.md ({_d(WebhookSettings, 'enforcement_default')})",
    )
    p.add_argument(
        "--audit-namespace",
        action="append",
        help="deprecated: label the namespace trustgate.io/enforcement=warn instead. A namespace "
        "in warn mode unless labelled; repeatable (default: none)",
    )
    p.add_argument(
        "--allow-ephemeral-containers",
        action="store_true",
        help="let `kubectl debug` add ephemeral containers to NF pods (default: refused); what "
        "they run is judged against the pod's runtime policy, which evicts the pod for a debug "
        "image it does not list",
    )
    p.add_argument("--tls-cert", type=Path, help="serving certificate (operator-managed TLS)")
    p.add_argument("--tls-key", type=Path, help="the certificate's key")
    p.add_argument(
        "--client-ca",
        type=Path,
        help="require a client certificate issued by this CA (PEM) in the TLS handshake: the "
        "API server's (docs/hardening.md); without it any caller may connect (default)",
    )
    p.add_argument("--host", help=_d(WebhookSettings, "host"))
    p.add_argument("--port", type=int, help=_d(WebhookSettings, "port"))
    _register_self_tls(p)
    add_logging_args(p)
    p.set_defaults(handler=run)


def _register_self_tls(p: argparse.ArgumentParser) -> None:
    t = p.add_argument_group("self-managed TLS (instead of --tls-cert/--tls-key)")
    t.add_argument(
        "--self-signed-tls",
        action="store_true",
        default=False,
        help="keep an own CA and serving certificate in a Secret and the caBundle of the "
        "webhook configurations, renewing both",
    )
    t.add_argument(
        "--tls-secret",
        dest="secret_name",
        metavar="TLS_SECRET",
        help=_d(SelfTlsSettings, "secret_name"),
    )
    t.add_argument(
        "--tls-namespace",
        dest="namespace",
        metavar="TLS_NAMESPACE",
        help="the Secret's namespace, also the Service's (default: $POD_NAMESPACE, else "
        f"{default_of(SelfTlsSettings, 'namespace')})",
    )
    t.add_argument("--service-name", help=f"for the DNS SANs (default: {DEFAULT_SERVICE_NAME})")
    t.add_argument("--webhook-configuration", help=_d(SelfTlsSettings, "webhook_configuration"))
    t.add_argument("--tls-dns-san", action="append", help="extra DNS SAN; repeatable")
    t.add_argument("--tls-ip-san", action="append", help="IP SAN (lab); repeatable")
    for flag, field in (
        ("--tls-ca-validity", "ca_validity"),
        ("--tls-ca-renew-before", "ca_renew_before"),
        ("--tls-validity", "serving_validity"),
        ("--tls-renew-before", "serving_renew_before"),
    ):
        t.add_argument(
            flag, dest=field, type=duration, metavar="DURATION", help=_d(CertPolicy, field)
        )
    t.add_argument(
        "--tls-check-interval",
        type=duration,
        metavar="DURATION",
        help="re-read the Secret, renew if due, re-check the caBundles (default: "
        f"{_shown(timedelta(seconds=default_of(SelfTlsSettings, 'check_interval_seconds')))})",
    )


def settings_from(args: argparse.Namespace, env: Mapping[str, str]) -> WebhookSettings:
    """The settings the options (and, where one is not given, the environment) ask for; reads
    the verifier's public keys."""
    from attestation.core.signing import SigningError, load_public_key_pem, public_keys_by_id

    try:
        keys = public_keys_by_id(load_public_key_pem(p.read_bytes()) for p in args.verifier_key)
    except (OSError, SigningError) as e:
        raise UsageError(f"--verifier-key: {e}") from e
    options = given(args, WebhookSettings)
    if hasattr(args, "audit_namespace"):
        logging.getLogger(__name__).warning(
            "--audit-namespace is deprecated: label the namespace %s=warn instead",
            ENFORCEMENT_LABEL,
        )
        options["audit_namespaces"] = frozenset(args.audit_namespace)
    client_ca = getattr(args, "client_ca", None)
    if client_ca is not None:
        if not client_ca.is_file():
            raise UsageError(f"--client-ca {client_ca} does not exist")
        options["client_ca_file"] = str(client_ca)
    if args.self_signed_tls:
        if hasattr(args, "tls_cert") or hasattr(args, "tls_key"):
            raise UsageError("--self-signed-tls and --tls-cert/--tls-key exclude each other")
        options["self_tls"] = _self_tls(args, env)
    else:
        for what, dest in (("--tls-cert", "tls_cert"), ("--tls-key", "tls_key")):
            path = getattr(args, dest, None)
            if path is None:
                raise UsageError(f"{what} is required (or --self-signed-tls)")
            if not path.is_file():
                raise UsageError(f"{what} {path} does not exist")
        options.update(tls_cert_file=str(args.tls_cert), tls_key_file=str(args.tls_key))
    return WebhookSettings(keys, **options)


def _self_tls(args: argparse.Namespace, env: Mapping[str, str]) -> SelfTlsSettings:
    options = given(args, SelfTlsSettings)
    env_fallback(options, env, namespace="POD_NAMESPACE")
    if hasattr(args, "tls_check_interval"):
        options["check_interval_seconds"] = args.tls_check_interval.total_seconds()
    namespace = options.get("namespace", default_of(SelfTlsSettings, "namespace"))
    service = f"{getattr(args, 'service_name', DEFAULT_SERVICE_NAME)}.{namespace}.svc"
    dns_names = (service, f"{service}.cluster.local", *getattr(args, "tls_dns_san", ()))
    try:
        policy = CertPolicy(
            dns_names,
            ip_addresses=tuple(getattr(args, "tls_ip_san", ())),
            **given(args, CertPolicy),
        )
    except ValueError as e:
        raise UsageError(f"TLS: {e}") from e
    return SelfTlsSettings(policy, **options)


def run(args: argparse.Namespace) -> int:
    setup_logging(args.log_level, args.log_format)
    settings = settings_from(args, os.environ)
    return _serve(settings, getattr(args, "kubeconfig", None))


def _serve(settings: WebhookSettings, kubeconfig: Path | None) -> int:
    """Prepare the self-managed certificate if there is one, then serve until stopped."""
    import shutil
    import tempfile

    from attestation.adapters.kube import Kube, KubeError, load_api_client
    from webhook.tls import TlsError

    kube = Kube(load_api_client(kubeconfig))
    tls_dir: Path | None = None
    try:
        if not settings.cluster_id:
            from dataclasses import replace

            from attestation.adapters.kube import read_cluster_id

            try:
                settings = replace(settings, cluster_id=read_cluster_id(kube))
            except KubeError as e:
                return fail(f"webhook: cluster id: {e}")
        tls: SelfManagedTls | None = None
        if settings.self_tls is not None:
            # Private (0700) and on the pod's tmpfs: the root file system is read-only.
            tls_dir = Path(tempfile.mkdtemp(prefix="trustgate-webhook-tls-"))
            tls = _self_managed_tls(settings.self_tls, kube, tls_dir)
            try:
                tls.prepare()
            except (KubeError, TlsError) as e:
                return fail(f"webhook: TLS Secret: {e}")
        _run_server(settings, kube, tls)
    finally:
        kube.close()
        if tls_dir is not None:
            shutil.rmtree(tls_dir, ignore_errors=True)
    return 0


def _self_managed_tls(self_tls: SelfTlsSettings, kube: Kube, directory: Path) -> SelfManagedTls:
    from attestation.adapters.kube import NamedSecret, WebhookConfigurations
    from webhook.tls import SelfManagedTls

    return SelfManagedTls(
        self_tls,
        NamedSecret(kube, self_tls.namespace, self_tls.secret_name),
        WebhookConfigurations(kube, self_tls.webhook_configuration),
        directory,
    )


def _run_server(settings: WebhookSettings, kube: Kube, tls: SelfManagedTls | None) -> None:
    import uvicorn

    from attestation.adapters.kube import Resource, nodeattestation_path
    from webhook.app import create_app, server_config

    app = create_app(
        settings,
        trust_source=Resource(kube, nodeattestation_path()),
        pod_lookup=kube.get_pod,
        tls=tls,
        namespace_source=Resource(kube, "/api/v1/namespaces"),
        namespace_lookup=lambda name: kube.get(f"/api/v1/namespaces/{name}"),
    )
    server = uvicorn.Server(server_config(app, settings, tls=tls))
    if tls is not None:
        tls.serving = lambda: server.started
    server.run()

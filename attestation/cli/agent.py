"""``trustgate agent``: serve this node's TPM quotes and IMA log.

Flags set fields of :class:`AgentSettings`, which holds the defaults; ``$NODE_NAME``,
``$TRUSTGATE_TCTI`` and ``$TRUSTGATE_NOTIFY_URL`` stand in for flags that are not given."""

from __future__ import annotations

import argparse
import functools
import os
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from attestation.agent.settings import AgentSettings
from attestation.cli.common import (
    UsageError,
    add_logging_args,
    default_of,
    env_fallback,
    given,
    setup_logging,
)
from attestation.core.evidence import MAX_PAGE_BYTES, MIN_PAGE_BYTES

__all__ = ["register", "run", "settings_from"]


#: The default of a settings field, for help texts.
_d = functools.partial(default_of, AgentSettings)


def register(sub: Any) -> None:
    # No flag has an argparse default: what is not given comes from AgentSettings.
    p = sub.add_parser(
        "agent",
        help="serve TPM quotes and IMA log entries of this node",
        argument_default=argparse.SUPPRESS,
    )
    p.add_argument(
        "--node",
        dest="node_name",
        metavar="NODE",
        help="this node's name (default: $NODE_NAME, set by the DaemonSet)",
    )
    p.add_argument(
        "--tcti",
        help=f"the TPM (default: $TRUSTGATE_TCTI, else {_d('tcti')})",
    )
    p.add_argument("--ek-alg", choices=["rsa", "ecc"], help=f"default: {_d('ek_alg')}")
    p.add_argument("--ima-log", type=Path, help=f"default: {_d('ima_log')}")
    p.add_argument(
        "--state-dir", type=Path, help=f"where the AK is kept (default: {_d('state_dir')})"
    )
    p.add_argument("--host", help=f"default: {_d('host')}")
    p.add_argument("--port", type=int, help=f"default: {_d('port')}")
    p.add_argument("--tls-cert", type=Path, help="serve TLS with this certificate (default: HTTP)")
    p.add_argument("--tls-key", type=Path, help="the certificate's key")
    p.add_argument(
        "--client-ca",
        type=Path,
        help="serve only callers presenting a certificate issued by this CA (the verifier's "
        "client certificate; needs --tls-cert). Default: anyone may call (a warning)",
    )
    p.add_argument(
        "--tpm-queue",
        type=int,
        help="requests that may wait for the TPM; more get a 503 at once "
        f"(default: {_d('tpm_queue')})",
    )
    p.add_argument(
        "--notify-url",
        help="the verifier's /v1/notify URL for push on log growth "
        "(default: $TRUSTGATE_NOTIFY_URL, else no push)",
    )
    p.add_argument(
        "--watch-interval",
        type=float,
        help=f"seconds between checks for log growth (default: {_d('watch_interval')})",
    )
    p.add_argument(
        "--page-bytes",
        type=int,
        help="most IMA log bytes one answer carries (whole entries; the verifier asks for the "
        f"next page): bounds the agent's memory (default: {_d('page_bytes')})",
    )
    p.add_argument(
        "--log-column-size",
        type=int,
        choices=[20, 32, 48, 64],
        help="template-hash column of the binary log, to frame whole entries "
        f"(default: {_d('log_column_size')}: binary_runtime_measurements)",
    )
    add_logging_args(p)
    p.set_defaults(handler=run)


def settings_from(args: argparse.Namespace, env: Mapping[str, str]) -> AgentSettings:
    """The settings the options (and, where one is not given, the environment) ask for."""
    options = given(args, AgentSettings)
    env_fallback(
        options,
        env,
        node_name="NODE_NAME",
        tcti="TRUSTGATE_TCTI",
        notify_url="TRUSTGATE_NOTIFY_URL",
    )
    if not options.get("node_name"):
        raise UsageError("--node (or $NODE_NAME) is required")
    if ("tls_cert" in options) != ("tls_key" in options):
        raise UsageError("--tls-cert and --tls-key go together")
    if "client_ca" in options and "tls_cert" not in options:
        raise UsageError("--client-ca needs --tls-cert and --tls-key (client certificates are TLS)")
    if options.get("tpm_queue", 1) < 0:
        raise UsageError("--tpm-queue must be 0 or more")
    page = options.get("page_bytes", MIN_PAGE_BYTES)
    if not MIN_PAGE_BYTES <= page <= MAX_PAGE_BYTES:
        raise UsageError(f"--page-bytes must be between {MIN_PAGE_BYTES} and {MAX_PAGE_BYTES}")
    return AgentSettings(**options)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    try:
        from attestation.agent.app import create_app
    except ModuleNotFoundError as e:
        if e.name is None or not e.name.startswith("tpm2_pytss"):
            raise
        raise UsageError(
            "the agent needs the TPM stack (tpm2-pytss), which this installation lacks: "
            "install trustgate[agent], or run the trustgate-agent image"
        ) from e

    setup_logging(args.log_level, args.log_format)
    settings = settings_from(args, os.environ)
    if settings.client_ca is not None and not settings.client_ca.is_file():
        raise UsageError(f"--client-ca {settings.client_ca} does not exist")
    # With a client CA the handshake itself refuses callers without its certificate: nothing
    # of theirs reaches HTTP parsing or the TPM.
    uvicorn.run(
        create_app(settings), host=settings.host, port=settings.port, log_level="warning",
        ssl_certfile=str(settings.tls_cert) if settings.tls_cert else None,
        ssl_keyfile=str(settings.tls_key) if settings.tls_key else None,
        ssl_ca_certs=str(settings.client_ca) if settings.client_ca else None,
        ssl_cert_reqs=ssl.CERT_REQUIRED if settings.client_ca else ssl.CERT_NONE,
    )  # fmt: skip
    return 0

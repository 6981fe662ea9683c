"""``trustgate agent``: serve this node's TPM quotes and IMA log."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from attestation.cli.common import env_default, setup_logging


def register(sub: Any) -> None:
    p = sub.add_parser("agent", help="serve TPM quotes and IMA log entries of this node")
    p.add_argument(
        "--node",
        default=env_default("NODE_NAME"),
        help="this node's name (default: $NODE_NAME, set by the DaemonSet)",
    )
    p.add_argument("--tcti", default=env_default("TRUSTGATE_TCTI", "device:/dev/tpmrm0"))
    p.add_argument("--ek-alg", choices=["rsa", "ecc"], default="rsa")
    p.add_argument(
        "--ima-log", type=Path, default=Path("/sys/kernel/security/ima/binary_runtime_measurements")
    )
    p.add_argument("--state-dir", type=Path, default=Path("/var/lib/trustgate-agent"))
    p.add_argument("--host", default="0.0.0.0")  # noqa: S104
    p.add_argument("--port", type=int, default=9443)
    p.add_argument("--tls-cert", type=Path)
    p.add_argument("--tls-key", type=Path)
    p.add_argument(
        "--notify-url",
        default=env_default("TRUSTGATE_NOTIFY_URL"),
        help="the verifier's /v1/notify URL for push on log growth",
    )
    p.add_argument("--watch-interval", type=float, default=0.05)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from attestation.agent.app import create_app
    from attestation.agent.settings import AgentSettings
    from attestation.cli.common import fail

    setup_logging()
    if not args.node:
        return fail("agent: --node (or $NODE_NAME) is required")
    if bool(args.tls_cert) != bool(args.tls_key):
        return fail("agent: --tls-cert and --tls-key go together")
    settings = AgentSettings(
        node_name=args.node, tcti=args.tcti, ek_alg=args.ek_alg, ima_log=args.ima_log,
        state_dir=args.state_dir, host=args.host, port=args.port, tls_cert=args.tls_cert,
        tls_key=args.tls_key, notify_url=args.notify_url, watch_interval=args.watch_interval,
    )  # fmt: skip
    uvicorn.run(
        create_app(settings), host=settings.host, port=settings.port, log_level="warning",
        ssl_certfile=str(settings.tls_cert) if settings.tls_cert else None,
        ssl_keyfile=str(settings.tls_key) if settings.tls_key else None,
    )  # fmt: skip
    return 0

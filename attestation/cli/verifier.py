"""``trustgate verifier``: re-attest every node and publish signed verdicts.

Flags set fields of :class:`VerifierSettings`, which holds the defaults; ``$POD_NAMESPACE`` and
``$POD_NAME`` (else the host name) stand in for ``--namespace`` and ``--identity`` when they are
not given. ``TRUSTGATE_PURE_PYTHON=1`` checks logs with the pure-Python reference instead of the
C extension."""

from __future__ import annotations

import argparse
import functools
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, get_args

from attestation.cli.common import (
    PURE_PYTHON_HELP,
    UsageError,
    add_logging_args,
    default_of,
    env_fallback,
    fail,
    given,
    native,
    node_map,
    setup_logging,
)
from attestation.core.nodeselection import SelectorError, parse_selector
from attestation.verifier.settings import (
    NonNfPods,
    RemediationMode,
    UntrustedNodeAction,
    VerifierSettings,
)

__all__ = ["register", "run", "settings_from"]


#: The default of a settings field, for help texts.
_d = functools.partial(default_of, VerifierSettings)


def register(sub: Any) -> None:
    # No flag has an argparse default: what is not given comes from VerifierSettings.
    p = sub.add_parser(
        "verifier",
        help="re-attest every node and publish signed verdicts",
        epilog=PURE_PYTHON_HELP,
        argument_default=argparse.SUPPRESS,
    )
    p.add_argument("--kubeconfig", type=Path, help="default: in-cluster ServiceAccount")
    _register_attestation(p)
    _register_audit(p)
    _register_remediation(p)
    _register_serving(p)
    add_logging_args(p)
    p.set_defaults(handler=run)


def _register_attestation(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("attestation")
    g.add_argument(
        "--agents",
        type=node_map,
        help="explicit NODE=URL,... (default: discover the agent DaemonSet's pods)",
    )
    g.add_argument(
        "--node-selector",
        help="label selector of the nodes to attest, on labels a kubelet cannot change "
        "(node-restriction.kubernetes.io/...); nodes hosting NF pods or with a NodeAttestation "
        "of this verifier are attested too (default: all nodes)",
    )
    g.add_argument(
        "--agent-port",
        type=int,
        help="the agent DaemonSet's hostPort, when agents are discovered "
        f"(default: {_d('agent_port')})",
    )
    g.add_argument(
        "--agent-client-cert",
        type=Path,
        help="client certificate presented to agents (issued by the CA of their --client-ca); "
        "default: none",
    )
    g.add_argument("--agent-client-key", type=Path, help="that certificate's key")
    g.add_argument(
        "--policies", type=Path, help=f"directory of runtime policies (default: {_d('policies')})"
    )
    g.add_argument(
        "--ek-ca",
        type=Path,
        dest="ek_ca_bundle",
        metavar="EK_CA",
        help=f"CAs of the TPMs' EK certificates, PEM (default: {_d('ek_ca_bundle')})",
    )
    g.add_argument(
        "--signing-key",
        type=Path,
        help=f"Ed25519 key that signs the verdicts (default: {_d('signing_key')})",
    )
    g.add_argument(
        "--interval",
        type=float,
        help=f"seconds between two pull rounds of a node (default: {_d('interval')})",
    )
    g.add_argument(
        "--max-age", type=float, help=f"seconds a verdict stays valid (default: {_d('max_age')})"
    )
    g.add_argument(
        "--cluster-id",
        help="the cluster every verdict is signed for (default: the kube-system Namespace's uid)",
    )
    g.add_argument(
        "--agent-timeout",
        type=float,
        help=f"seconds for one agent call (default: {_d('agent_timeout')})",
    )
    g.add_argument(
        "--concurrency", type=int, help=f"nodes attested at once (default: {_d('concurrency')})"
    )
    g.add_argument(
        "--non-nf-pods",
        choices=get_args(NonNfPods),
        help="measurements of pods that are not network functions: ignore (counted, never "
        "judged) or host-policy (judged against the host policy) "
        f"(default: {_d('non_nf_pods')})",
    )


def _register_audit(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("audit trail")
    g.add_argument(
        "--audit-log",
        type=Path,
        help="the audit trail; {identity} in it is replaced by --identity "
        f"(default: {_d('audit_log')})",
    )
    g.add_argument(
        "--audit-max-bytes",
        type=int,
        help=f"rotate the audit file before this size (default: {_d('audit_max_bytes')})",
    )
    g.add_argument(
        "--audit-checkpoint-interval",
        type=float,
        help="seconds between signed, published checkpoints of the audit trail "
        f"(default: {_d('audit_checkpoint_interval')})",
    )


def _register_remediation(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("remediation")
    g.add_argument(
        "--remediation", choices=get_args(RemediationMode), help=f"default: {_d('remediation')}"
    )
    g.add_argument(
        "--eviction-deadline",
        type=float,
        help="seconds of PodDisruptionBudget refusals before the pod is deleted "
        f"(default: {_d('eviction_deadline')})",
    )
    g.add_argument(
        "--eviction-grace",
        type=int,
        help="termination grace in seconds of every eviction, instead of the pod's own "
        f"(default: {_d('eviction_grace')})",
    )
    g.add_argument(
        "--untrusted-node-action",
        choices=get_args(UntrustedNodeAction),
        help=f"default: {_d('untrusted_node_action')}",
    )
    g.add_argument(
        "--unknown-grace",
        type=float,
        help="seconds a node may lack fresh evidence before its NF pods are evicted, with "
        f"--evict-on-unknown (default: {_d('unknown_grace')})",
    )
    # -- staged rollout (core.enforcement, docs/rollout.md) --
    g.add_argument(
        "--evict-on-unknown",
        action="store_true",
        help="evict an Unknown node's running NF pods after --unknown-grace (default: an agent "
        "or verifier outage alone never evicts; a failed verdict does)",
    )
    g.add_argument(
        "--enforcement-default",
        choices=("enforce", "warn", "audit"),
        help="the mode of a namespace without the trustgate.io/enforcement label; untrusted "
        f"nodes are tainted only under enforce (default: {_d('enforcement_default')})",
    )


def _register_serving(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("push endpoint and shards")
    g.add_argument(
        "--listen",
        help=f"HOST:PORT of the push endpoint (default: {_d('listen_host')}:{_d('listen_port')})",
    )
    g.add_argument("--tls-cert", type=Path, help="serve the push endpoint over TLS (default: HTTP)")
    g.add_argument("--tls-key", type=Path, help="the certificate's key")
    g.add_argument(
        "--push-rate",
        type=float,
        help="signed pushes that wake one node's round per second, --push-burst at once; more "
        f"are coalesced into one later wake (default: {_d('push_rate')}, {_d('push_burst')})",
    )
    g.add_argument("--push-burst", type=float, help="signed pushes that wake a node at once")
    g.add_argument(
        "--namespace",
        help=f"trustgate's own namespace (default: $POD_NAMESPACE, else {_d('namespace')})",
    )
    g.add_argument(
        "--identity",
        help="this replica's name in its shard Lease (default: $POD_NAME, else the host name)",
    )
    g.add_argument(
        "--no-sharding",
        "--no-leader-election",  # the name before sharding replaced the leader
        action="store_false",
        dest="sharding",
        help="run as the only replica, attesting every node (default: the live replicas share "
        "the nodes, docs/operations.md)",
    )
    g.add_argument(
        "--lease-duration",
        type=float,
        help="seconds after which a replica whose shard Lease stopped moving is written off and "
        f"its nodes taken over (default: {_d('lease_duration')})",
    )
    g.add_argument(
        "--advertise-url",
        help="where the other replicas forward pushes for this replica's nodes (default: "
        "http(s)://$POD_IP:PORT, else the --listen address)",
    )


def settings_from(args: argparse.Namespace, env: Mapping[str, str]) -> VerifierSettings:
    """The settings the options (and, where one is not given, the environment) ask for."""
    options = given(args, VerifierSettings)
    if hasattr(args, "listen"):
        host, _, port = args.listen.rpartition(":")
        if not host or not port.isdigit():
            raise UsageError(f"--listen must be HOST:PORT, got {args.listen!r}")
        options.update(listen_host=host, listen_port=int(port))
    if "node_selector" in options:
        try:
            parse_selector(options["node_selector"])
        except SelectorError as e:
            raise UsageError(f"--node-selector: {e}") from e
    if ("agent_client_cert" in options) != ("agent_client_key" in options):
        raise UsageError("--agent-client-cert and --agent-client-key go together")
    if options.get("push_rate", 1.0) <= 0 or options.get("push_burst", 1.0) < 1:
        raise UsageError("--push-rate must be above 0 and --push-burst at least 1")
    if options.get("eviction_grace", 0) < 0:
        raise UsageError(f"--eviction-grace must be 0 or more seconds, got {args.eviction_grace}")
    env_fallback(options, env, namespace="POD_NAMESPACE")
    if "advertise_url" not in options:
        options["advertise_url"] = _advertised(options, env)
    if "identity" not in options:
        import socket

        options["identity"] = env.get("POD_NAME") or socket.gethostname()
    if not native(env):
        options["native"] = False
    return VerifierSettings(**options)


def _advertised(options: Mapping[str, object], env: Mapping[str, str]) -> str:
    """This replica's push URL for its peers: the pod's IP (or the listen address, when that is
    one host) and the listen port."""
    defaults = VerifierSettings()
    port = options.get("listen_port", defaults.listen_port)
    host = env.get("POD_IP") or str(options.get("listen_host", defaults.listen_host))
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 - not a bind: an address nobody can reach
        return ""
    scheme = "https" if options.get("tls_cert") else "http"
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def run(args: argparse.Namespace) -> int:
    import asyncio

    from attestation.adapters.kube import Kube, load_api_client
    from attestation.core.policy import PolicyError
    from attestation.core.signing import SigningError
    from attestation.verifier.auditlog import AuditChainBroken, AuditLogBusy
    from attestation.verifier.main import run as run_verifier

    setup_logging(args.log_level, args.log_format)
    settings = settings_from(args, os.environ)
    for what, path in (("--ek-ca", settings.ek_ca_bundle), ("--signing-key", settings.signing_key)):
        if not path.is_file():
            return fail(f"verifier: {what} {path} does not exist")
    kube = Kube(load_api_client(getattr(args, "kubeconfig", None)))
    try:
        asyncio.run(run_verifier(settings, kube))
    except (PolicyError, SigningError, AuditChainBroken, AuditLogBusy, OSError) as e:
        return fail(f"verifier: {e}")
    finally:
        kube.close()
    return 0

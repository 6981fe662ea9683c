"""Run the verifier: load settings' files, start informers, the push endpoint, leader election,
and the per-node loops; stop cleanly on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

import uvicorn

from attestation.adapters.kube import Kube, read_cluster_id
from attestation.adapters.serving import EmbeddedServer
from attestation.core.clock import Clock, utcnow
from attestation.core.names import CORE_NODE_LABEL, NODE_RESTRICTION_PREFIX
from attestation.core.nodeselection import parse_selector, unrestricted_keys
from attestation.core.signing import load_private_key_pem
from attestation.verifier.audithead import close_audit, keep_checkpointing, open_audit
from attestation.verifier.controller import Verifier
from attestation.verifier.leader import LeaderElector
from attestation.verifier.metrics import VerifierMetrics
from attestation.verifier.policies import load_policy_dir, publish_policy_warnings
from attestation.verifier.publisher import Publisher
from attestation.verifier.pushgate import PushGate
from attestation.verifier.server import create_server_app
from attestation.verifier.settings import VerifierSettings

__all__ = ["run"]

log = logging.getLogger("trustgate.verifier")


def _server(
    settings: VerifierSettings,
    verifier: Verifier,
    metrics: VerifierMetrics,
    elector: LeaderElector | None,
    gate: PushGate,
) -> EmbeddedServer:
    """The push, health and metrics endpoint."""

    def ready() -> bool:
        # Only the leader is ready: the Service then sends agents' pushes to the replica that
        # acts on them, and a standby's pushes are not silently dropped.
        return verifier.nodes is not None and (elector is None or elector.is_leader.is_set())

    return EmbeddedServer(
        uvicorn.Config(
            create_server_app(verifier.push, metrics, ready, gate),
            host=settings.listen_host,
            port=settings.listen_port,
            log_level="warning",
            ssl_certfile=str(settings.tls_cert) if settings.tls_cert else None,
            ssl_keyfile=str(settings.tls_key) if settings.tls_key else None,
        )
    )


async def run(
    settings: VerifierSettings,
    kube: Kube,
    stop: asyncio.Event | None = None,
    *,
    clock: Clock = utcnow,
) -> None:
    """Run until ``stop`` is set (or SIGTERM/SIGINT). ``clock`` is the one every time decision
    reads: verdict expiry, status refresh, unknown-grace, lease expiry, audit and Event times."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)

    signing_key = load_private_key_pem(settings.signing_key.read_bytes())
    policies = load_policy_dir(settings.policies)
    ek_ca_bundle = settings.ek_ca_bundle.read_bytes()
    audit, heads = await asyncio.to_thread(open_audit, settings, kube, signing_key, clock)
    if audit.recovered_torn_tail:
        log.warning(
            "audit log %s: the last record was torn by a crash (%d bytes); kept and chained",
            settings.audit_log, audit.recovered_torn_tail,
        )  # fmt: skip
    metrics = VerifierMetrics()
    publish_policy_warnings(policies, metrics.policy_warnings)
    cluster_id = settings.cluster_id or await asyncio.to_thread(read_cluster_id, kube)
    publisher = Publisher(
        kube, settings, signing_key, audit, metrics, cluster_id=cluster_id, clock=clock
    )
    gate = PushGate(settings.push_rate, settings.push_burst)
    verifier = Verifier(
        settings, kube, publisher, policies, ek_ca_bundle, metrics, clock=clock, push_gate=gate
    )
    log.info(
        "verifier %s: %d policies (%s), host policy %s, interval %.1fs, max age %.1fs",
        settings.identity, len(policies.by_network_function),
        ", ".join(sorted(policies.by_network_function)) or "none",
        "loaded" if policies.host else "none", settings.interval, settings.max_age,
    )  # fmt: skip
    _warn_about_selector(settings.node_selector)
    await verifier.start()
    elector: LeaderElector | None = None
    if settings.leader_election:
        elector = LeaderElector(
            kube, settings.namespace, settings.lease_name, settings.identity,
            settings.lease_duration, clock=clock,
        )  # fmt: skip
        publisher.fence = elector  # every write re-checks the leadership

    server = _server(settings, verifier, metrics, elector, gate)
    tasks = [asyncio.create_task(server.serve(), name="verifier-server")]
    checkpoints = keep_checkpointing(audit, heads, settings.audit_checkpoint_interval, stop)
    tasks.append(asyncio.create_task(checkpoints, name="audit-checkpoints"))
    if elector is not None:
        tasks.append(asyncio.create_task(elector.run(stop), name="leader-election"))
        tasks.append(asyncio.create_task(_follow_leadership(elector, verifier, stop)))
    else:
        verifier.activate()
    try:
        await stop.wait()
    finally:
        server.should_exit = True
        await verifier.close()
        serving, others = tasks[0], tasks[1:]
        for t in others:
            t.cancel()
        await asyncio.gather(*others, return_exceptions=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(serving, 5)
        await asyncio.to_thread(close_audit, audit, heads)


def _warn_about_selector(selector: str) -> None:
    """A selector on labels the kubelet may change lets root on a node decide whether its node
    is selected (new nodes, the agent DaemonSet's placement). Nodes hosting NF pods or with a
    NodeAttestation stay attested regardless, so this is a warning, not a refusal."""
    keys = unrestricted_keys(parse_selector(selector))
    if keys:
        log.warning(
            "--node-selector %r uses labels a kubelet can change on its own Node (%s): use "
            "labels under %s (e.g. %s=true)",
            selector, ", ".join(keys), NODE_RESTRICTION_PREFIX, CORE_NODE_LABEL,
        )  # fmt: skip


async def _follow_leadership(
    elector: LeaderElector, verifier: Verifier, stop: asyncio.Event
) -> None:
    while not stop.is_set():
        await elector.is_leader.wait()
        await verifier.publisher.take_over()
        verifier.activate()
        await elector.lost.wait()
        verifier.deactivate()

"""Run the verifier: load settings' files, start informers, the push endpoint, the shard
membership and the per-node loops; stop cleanly on SIGTERM/SIGINT (the node loops first, then the
shard Lease is released, so the peers take the nodes over at once)."""

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
from attestation.verifier.metrics import VerifierMetrics
from attestation.verifier.policies import load_policy_dir, publish_policy_warnings
from attestation.verifier.policywatch import watch_policies
from attestation.verifier.publisher import Publisher
from attestation.verifier.pushgate import PushGate
from attestation.verifier.server import create_server_app
from attestation.verifier.settings import VerifierSettings
from attestation.verifier.shards import Shards

__all__ = ["run"]

log = logging.getLogger("trustgate.verifier")


def _server(
    settings: VerifierSettings, verifier: Verifier, metrics: VerifierMetrics, gate: PushGate
) -> EmbeddedServer:
    """The push, health and metrics endpoint."""
    shards = verifier.shards

    def ready() -> bool:
        # Every replica is ready once its watches have synced and it is a member: pushes
        # reaching it for another replica's node are forwarded there.
        return verifier.nodes is not None and (shards is None or shards.member())

    route = shards.owner_url if shards is not None else None
    app = create_server_app(verifier.push, metrics, ready, gate, route=route,
                            identity=settings.identity)  # fmt: skip
    return EmbeddedServer(
        uvicorn.Config(
            app,
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
    shards = None
    if settings.sharding:
        shards = Shards(
            kube, settings.namespace, settings.lease_name, settings.identity,
            settings.lease_duration, settings.advertise_url, clock=clock,
        )  # fmt: skip
        publisher.fence = shards  # every write re-checks that the node is still this replica's
    verifier = Verifier(
        settings, kube, publisher, policies, ek_ca_bundle, metrics, clock=clock, push_gate=gate,
        shards=shards,
    )  # fmt: skip
    log.info(
        "verifier %s: %d policies (%s), host policy %s, interval %.1fs, max age %.1fs, %s",
        settings.identity, len(policies.by_network_function),
        ", ".join(sorted(policies.by_network_function)) or "none",
        "loaded" if policies.host else "none", settings.interval, settings.max_age,
        f"sharded (lease {settings.lease_duration:g}s)" if shards else "alone",
    )  # fmt: skip
    _warn_about_selector(settings.node_selector)
    _warn_about_failover(settings)
    await verifier.start()
    server = _server(settings, verifier, metrics, gate)
    tasks = [asyncio.create_task(server.serve(), name="verifier-server")]
    checkpoints = keep_checkpointing(audit, heads, settings.audit_checkpoint_interval, stop)
    tasks.append(asyncio.create_task(checkpoints, name="audit-checkpoints"))
    # RuntimePolicy objects, live (policywatch.py): swaps verifier.policies; the directory seeds.
    gauge = metrics.policy_warnings
    tasks.append(watch_policies(kube, settings.namespace, verifier, gauge, stop, clock=clock))
    verifier.loops.activate()
    if shards is not None:
        tasks.append(asyncio.create_task(shards.run(stop, verifier.loops.reshard), name="shards"))
    try:
        await stop.wait()
    finally:
        server.should_exit = True
        serving, others = tasks[0], tasks[1:]
        for t in others:
            t.cancel()
        await asyncio.gather(*others, return_exceptions=True)
        await verifier.close()  # every node loop has stopped: nothing of ours is written after
        if shards is not None:
            await shards.leave()
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


def _warn_about_failover(settings: VerifierSettings) -> None:
    """A verdict is refreshed every max_age / 2; a killed replica's nodes are taken over within
    about lease_duration + interval. Past that the verdicts of its nodes expire first, and NF
    pods cannot be bound to them in between."""
    needed = 2 * (settings.lease_duration + settings.interval)
    if settings.sharding and settings.max_age < needed:
        log.warning(
            "--max-age %gs is below 2 x (--lease-duration + --interval) = %gs: when a replica "
            "dies, its nodes' verdicts can expire before another replica takes them over",
            settings.max_age, needed,
        )  # fmt: skip

"""The verifier loop: re-attest every node, publish what changed, remove divergent pods.

One asyncio task per node, woken by its pull interval or by a push from its agent; at most
``concurrency`` rounds run at once, and every agent call has a timeout, so a hung agent delays
only its own node. Rounds are pure (``attestation.core.verdict``); this module does the I/O around
them: the agent call, the Kubernetes writes (through ``Publisher``) and the remediation.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from prometheus_client import Gauge

from attestation.adapters.informer import Informer, uid_key
from attestation.adapters.kube import Kube, Resource, node_path, nodeattestation_path, pod_path
from attestation.core import enroll
from attestation.core.attribution import kubelet_uid
from attestation.core.checkpoint import checkpoint_of, resume
from attestation.core.clock import Clock, utcnow
from attestation.core.evidence import Evidence, EvidenceQuery, Identity
from attestation.core.fastpath import select
from attestation.core.kubeobject import KubeObject
from attestation.core.logcheck import CheckLog
from attestation.core.names import AGENT_SELECTOR, NF_LABEL, SCHEDULING_GATE
from attestation.core.types import Failure, NodeVerdict
from attestation.core.verdict import (
    AttestationState,
    PodInfo,
    PolicySet,
    RoundResult,
    attest_round,
    forget_pods,
)
from attestation.verifier.bynode import ByNode
from attestation.verifier.collector import AgentClient, CollectorError
from attestation.verifier.metrics import VerifierMetrics
from attestation.verifier.otherpods import NodePods, OtherPods
from attestation.verifier.paged import Judge, judge_pages
from attestation.verifier.publisher import Publisher
from attestation.verifier.scope import NodeScope
from attestation.verifier.settings import VerifierSettings

__all__ = ["NodeWorker", "Verifier", "pod_info"]

log = logging.getLogger(__name__)


@dataclass
class NodeWorker:
    name: str
    #: This node's evidence-age gauge (prometheus' labels() takes a lock and a lookup per call).
    evidence_age: Gauge
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    state: AttestationState | None = None
    ak_name: bytes = b""
    task: asyncio.Task[None] | None = None
    #: When the last verdict on fresh evidence was reached (None: not yet).
    last_verified: datetime | None = None
    #: Whether this process has judged a round of the node's log. The first round reads what was
    #: written while it did not watch pods (before it started, from zero or its checkpoint):
    #: there, a uid no pod has may be a pod deleted meanwhile, not one made up.
    watched: bool = False


def pod_info(pod: KubeObject) -> PodInfo | None:
    meta = pod.get("metadata") or {}
    nf = (meta.get("labels") or {}).get(NF_LABEL)
    if not nf or not meta.get("uid"):
        return None
    return PodInfo(
        meta["uid"], meta.get("namespace", ""), meta.get("name", ""), str(nf).lower(),
        cgroup_uid=kubelet_uid(pod) or "",
    )  # fmt: skip


def _host_ip(pod: KubeObject) -> str | None:
    return (pod.get("status") or {}).get("hostIP") or None


class Verifier:
    def __init__(
        self,
        settings: VerifierSettings,
        kube: Kube,
        publisher: Publisher,
        policies: PolicySet,
        ek_ca_bundle: bytes,
        metrics: VerifierMetrics,
        *,
        clock: Clock = utcnow,
    ) -> None:
        self.settings = settings
        self.kube = kube
        self.publisher = publisher
        self.policies = policies
        self.ek_ca_bundle = ek_ca_bundle
        self.metrics = metrics
        self._clock = clock
        self._check_log = select(settings.native)
        self.workers: dict[str, NodeWorker] = {}
        self.client = AgentClient(timeout=settings.agent_timeout)
        self._semaphore = asyncio.Semaphore(settings.concurrency)
        self._stop = asyncio.Event()
        self._active = asyncio.Event()  # leader (or no election)
        self._informers: list[Informer] = []
        self.nodes: Informer | None = None
        self.pods: Informer | None = None
        self.agent_pods: Informer | None = None
        self._gate_wake = asyncio.Event()
        self._nf_pods_by_node = ByNode(pod_info)
        #: Which nodes to attest (see nodeselection.attested); decided once the watches synced.
        self._scope = NodeScope(
            settings.node_selector, publisher.key_id, self._nf_pods_by_node.has,
            attest=self._start_node, release=self._release,
        )  # fmt: skip
        self._agent_ips_by_node = ByNode(_host_ip)
        #: The other pods of each node, and the recently deleted NF pods: counted, not judged.
        self._other_pods, self._gone_nf_pods = NodePods(), NodePods()
        #: One child per result, looked up once (see NodeWorker.evidence_age).
        self._results = {
            r: metrics.attestations.labels(r)
            for r in ("trusted", "untrusted", "enroll_failed", "no_evidence")
        }

    # -- start / stop ----------------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        # Every Node, not only the selected ones: a node leaves attestation by the rule in
        # nodeselection, never because a label was removed from under a label-selected watch.
        self.nodes = Informer(
            "nodes", Resource(self.kube, node_path()), loop, on_change=self._scope.node_changed
        )
        attestations = Informer(
            "nodeattestations",
            Resource(self.kube, nodeattestation_path()),
            loop,
            on_change=self._scope.attestation_changed,
        )
        self.pods = Informer(
            "nf-pods",
            Resource(self.kube, "/api/v1/pods", label_selector=NF_LABEL),
            loop,
            key=uid_key,
            on_change=self._nf_pod_changed,
        )
        self._informers = [self.nodes, attestations, self.pods]
        if self.settings.non_nf_pods == "ignore":  # else their entries are the host's
            update, source = self._other_pods.update, OtherPods(self.kube)
            self._informers.append(Informer("other", source, loop, key=uid_key, on_change=update))
        if not self.settings.agents:
            self.agent_pods = Informer(
                "agents",
                Resource(
                    self.kube, pod_path(self.settings.namespace), label_selector=AGENT_SELECTOR
                ),
                loop,
                on_change=self._agent_ips_by_node.update,
            )
            self._informers.append(self.agent_pods)
        for informer in self._informers:
            informer.start()
        await asyncio.gather(*(i.synced.wait() for i in self._informers))
        await self.publisher.load_existing()
        self._scope.start(self._nf_pods_by_node.nodes())
        for node in set(self.publisher.published) - set(self.workers):
            self.publisher.forget(node)  # NodeAttestations of nodes no longer attested
        self._gate_task = asyncio.create_task(self._ungate_loop(), name="ungate")

    def activate(self) -> None:
        """Start attesting (called on becoming the leader)."""
        self._active.set()
        for worker in self.workers.values():
            worker.wake.set()

    def deactivate(self) -> None:
        """Stop attesting and writing at once (leadership lost). Attestation state is dropped:
        a future leadership starts from the cluster's NodeAttestations and re-enrolls."""
        self._active.clear()
        for worker in self.workers.values():
            worker.state = None

    async def close(self) -> None:
        self._stop.set()
        for informer in self._informers:
            informer.stop()
        tasks = [w.task for w in self.workers.values() if w.task] + [self._gate_task]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.publisher.close()
        await self.client.aclose()

    def tracked(self) -> dict[str, int]:
        """How much the verifier keeps per node and per pod (a churn test's yardstick): each
        must return to its size once the nodes and pods it was kept for are gone. (The
        informers' caches and the scope mirror the API server's objects; not counted.)"""
        gauges = self.metrics.evidence_age.collect()
        return {
            "workers": len(self.workers),
            **self.publisher.tracked(),
            "evidence_age_gauges": sum(len(m.samples) for m in gauges),
            "nf_pods": self._nf_pods_by_node.size(),
            "agent_pods": self._agent_ips_by_node.size(),
        }

    def push(self, node: str) -> bool:
        """An agent says its log grew: attest that node now. False for an unknown node."""
        worker = self.workers.get(node)
        if worker is None:
            return False
        self.metrics.pushes.inc()
        worker.wake.set()
        return True

    def _nf_pod_changed(self, uid: str, pod: KubeObject | None) -> None:
        self._gone_nf_pods.update(uid, pod)
        before = self._nf_pods_by_node.node_of(uid)
        self._nf_pods_by_node.update(uid, pod)
        if pod is None:
            self.publisher.remediator.forget(uid)
        self._gate_wake.set()
        self._scope.pods_moved((before, self._nf_pods_by_node.node_of(uid)))

    # -- nodes -----------------------------------------------------------------------------------

    def _start_node(self, name: str) -> None:
        """The selection rule now takes ``name`` in (``NodeScope``): start its loop."""
        worker = NodeWorker(name, self.metrics.evidence_age.labels(name))
        self.workers[name] = worker
        worker.task = asyncio.create_task(self._node_loop(worker), name=f"node:{name}")

    def _release(self, name: str) -> None:
        """Stop attesting ``name`` and forget everything kept for it. A round under way is
        cancelled at its next await, so it cannot put back what was forgotten here."""
        worker = self.workers.pop(name)
        if worker.task:
            worker.task.cancel()
        self.publisher.forget(name)
        with contextlib.suppress(KeyError):
            self.metrics.evidence_age.remove(name)

    def agent_url(self, node: str) -> str | None:
        if self.settings.agents:
            return self.settings.agents.get(node)
        for host_ip in self._agent_ips_by_node.on(node).values():
            return f"https://{host_ip}:{self.settings.agent_port}"
        return None

    def pods_on(self, node: str) -> dict[str, PodInfo]:
        """The protected pods bound to ``node``, by uid."""
        return self._nf_pods_by_node.on(node)

    async def _node_loop(self, worker: NodeWorker) -> None:
        interval = self.settings.interval
        loop = asyncio.get_running_loop()
        while not self._stop.is_set():
            if not self._active.is_set():
                await self._active.wait()
            # Sleep until the interval passes or a push wakes the node. A timer handle, not
            # asyncio.wait_for, which wraps the wait in a task of its own every round.
            timer = loop.call_later(interval, worker.wake.set)
            try:
                await worker.wake.wait()
            finally:
                timer.cancel()
            worker.wake.clear()
            if not self._active.is_set():
                continue
            try:
                async with self._semaphore:
                    await self._round(worker)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug must not stop the node's attestation forever
                log.exception("round for node %s failed", worker.name)

    # -- one round -------------------------------------------------------------------------------

    async def _round(self, worker: NodeWorker) -> None:
        started = time.perf_counter()
        await self.publisher.pending(worker.name)
        url = self.agent_url(worker.name)
        if url is None:
            await self._no_evidence(worker, Failure("agent.missing", "no agent serves this node"))
            return
        if worker.state is None:
            try:
                if not await self._enroll(worker, url, keep=self._resume(worker.name)):
                    return
            except CollectorError as e:
                await self._no_evidence(worker, Failure(e.failure_id, str(e)))
                return
            await self._resumed(worker)
        attested = await self._attest(worker, url)
        if attested is None:
            return
        result, pods = attested
        # A bad signature may mean the agent restarted with a new AK: re-enroll (EK chain and
        # credential activation again) before calling it an attack.
        signature_bad = any(f.id == "quote.signature_invalid" for f in result.verdict.failures)
        if signature_bad and await self._ak_changed(worker, url):
            return  # re-enrolled (attested again at once), or why not was published
        worker.state = result.state
        self.publisher.checkpoints[worker.name] = checkpoint_of(result.state)
        self._results["trusted" if result.verdict.trusted else "untrusted"].inc()
        worker.last_verified = self._clock()
        worker.watched = True
        worker.evidence_age.set(0)
        await self.publisher.publish(worker.name, result.verdict, pods, worker.ak_name)
        self.metrics.round_seconds.observe(time.perf_counter() - started)

    async def _attest(
        self, worker: NodeWorker, url: str
    ) -> tuple[RoundResult, Mapping[str, PodInfo]] | None:
        """Fresh evidence judged, page by page (``paged``), with the pods it was judged for;
        None when the agent failed us (published as no evidence)."""
        for _ in range(2):  # a second pass only after a reboot, to read the new log from 0
            assert worker.state is not None
            nonce = os.urandom(32)
            query = EvidenceQuery(nonce=nonce, ima_offset=worker.state.ima_offset)
            pods = self.pods_on(worker.name)
            judge = self._judge(worker, nonce, pods)
            try:
                evidence = await self.client.evidence(url, query)
                start = forget_pods(worker.state, pods)
                result = await judge_pages(
                    self.client, url, start, evidence, judge, self._check_log
                )
            except CollectorError as e:
                await self._no_evidence(worker, Failure(e.failure_id, str(e)))
                return None
            if not result.rebooted:
                break
            worker.state = result.state
        return result, pods

    def _judge(self, worker: NodeWorker, nonce: bytes, pods: Mapping[str, PodInfo]) -> Judge:
        """``attest_round`` for this round of ``worker``'s node, timed (one observation per page).
        With ``--non-nf-pods ignore``, the first round counts unknown pod uids like non-NF pods'
        (see ``NodeWorker.watched``); root could hide there anyway, in a live non-NF pod."""
        node = worker.name
        unjudged = self._other_pods.known(node) | self._gone_nf_pods.gone(node)
        judge_unknown = worker.watched or self.settings.non_nf_pods != "ignore"

        def judge(state: AttestationState, page: Evidence, check: CheckLog) -> RoundResult:
            t0 = time.perf_counter()
            result = attest_round(
                node, state, page, nonce, self.policies, pods,
                log_column_size=self.settings.log_column_size, check_log=check,
                unjudged_pods=unjudged, judge_unknown_pods=judge_unknown,
            )  # fmt: skip
            self.metrics.duration.observe(time.perf_counter() - t0)
            return result

        return judge

    def _resume(self, node: str) -> AttestationState | None:
        """Where to pick ``node``'s log up after a restart, failover or re-enrollment: its last
        checkpoint (``core.checkpoint``), if this verifier signed one; ``_enroll`` keeps it only
        for the EK the node is bound to, and the first quote's clock decides the rest."""
        wire = self.publisher.checkpoints.get(node)
        return None if wire is None else resume(wire)

    async def _resumed(self, worker: NodeWorker) -> None:
        """Say in the audit trail where an enrollment picked the log up, when not at zero: a
        reader can tell a resumed node from one read again from the start."""
        if worker.state is not None and worker.state.ima_offset:
            replay = worker.state.replay
            await self.publisher.audit(
                {"kind": "resumed", "node": worker.name, "imaIndex": replay.next_index,
                 "imaOffset": replay.next_offset}
            )  # fmt: skip

    async def _enroll(
        self,
        worker: NodeWorker,
        url: str,
        *,
        identity: Identity | None = None,
        keep: AttestationState | None = None,
    ) -> bool:
        """Enroll the agent's AK: the EK chain, the AK's fitness, credential activation, then
        the node's binding to its EK (``enroll.bind_ek``). ``keep`` is what is known of the
        node's TPM from before (its clock, log position, findings): kept only when the EK is
        the one the node is bound to, so a clock rolled back across a re-enrollment is still
        caught. A failure is published (Untrusted) with its ``enroll.*`` id."""
        identity = identity or await self.client.identity(url)
        failures, ak_name = await self._prove(worker.name, url, identity)
        binding = None if failures else await self._bind(worker.name, identity.ek_public)
        if binding is None or binding.failures:
            failures += binding.failures if binding else ()
            verdict = NodeVerdict(node=worker.name, trusted=False, failures=tuple(failures))
            await self.publisher.publish(worker.name, verdict, self.pods_on(worker.name), ak_name)
            self._results["enroll_failed"].inc()
            return False
        kept = keep is not None and binding.same_ek
        worker.state = AttestationState(ak_public=identity.ak_public)
        if keep is not None and binding.same_ek:
            worker.state = dataclasses.replace(keep, ak_public=identity.ak_public)
        worker.ak_name = ak_name
        await self.publisher.audit(
            {"kind": "enrolled", "node": worker.name, "akName": ak_name.hex(),
             "ekDigest": binding.pin, "reenrolled": keep is not None, "tpmStateKept": kept}
        )  # fmt: skip
        return True

    async def _prove(self, node: str, url: str, identity: Identity) -> tuple[list[Failure], bytes]:
        """The agent's identity checks and the credential activation: (failures, AK name)."""
        failures: list[Failure] = []
        if identity.node != node:
            why = f"the agent says it is {identity.node!r}, not {node!r}"
            failures.append(Failure("enroll.node_mismatch", why))
        try:
            failures += enroll.verify_ek(
                identity.ek_certificate, identity.ek_public, self.ek_ca_bundle, self._clock()
            )
            failures += enroll.check_ak(identity.ak_public)
            ak_name = enroll.ak_name(identity.ak_public)
        except enroll.EnrollParseError as e:
            return [*failures, Failure("enroll.malformed", str(e))], b""
        if failures:
            return failures, ak_name
        secret = os.urandom(32)
        credential = enroll.make_credential(identity.ek_public, ak_name, secret)
        try:
            returned = await self.client.activate(
                url, credential.credential_blob, credential.encrypted_secret
            )
        except CollectorError as e:
            if e.failure_id != "agent.http_error":
                raise
            returned = b""
        return list(enroll.check_activation(secret, returned)), ak_name

    async def _bind(self, node: str, ek_public: bytes) -> enroll.EkBinding:
        """Bind ``node`` to the EK its TPM just proved, or say why not. The operator's approval
        is read only when the EK is not the bound one; from the decision to the new pin nothing
        is awaited, so two nodes enrolling one EK at once cannot both take it."""
        digest = enroll.ek_digest(ek_public)
        pins = self.publisher.ek_pins
        approved = "" if digest == pins.get(node) else await self.publisher.approved_ek(node)
        binding = enroll.bind_ek(node, digest, pins.get(node, ""), approved, pins)
        if not binding.failures:
            pins[node] = binding.pin
        return binding

    async def _ak_changed(self, worker: NodeWorker, url: str) -> bool:
        """After a bad quote signature: did the agent come back with another AK (a restart
        with a new key)? Then re-enroll it now (True): the node's TPM state is kept if its EK
        is the bound one, and a failure (another TPM: ``enroll.ek_changed``) is published.
        False: the same AK, or no identity: the bad signature is the verdict."""
        try:
            identity = await self.client.identity(url)
            changed = enroll.ak_name(identity.ak_public) != worker.ak_name
        except (CollectorError, enroll.EnrollParseError):
            return False
        if not changed:
            return False
        try:
            if await self._enroll(worker, url, identity=identity, keep=worker.state):
                worker.wake.set()  # attest with the new AK at once
        except CollectorError as e:
            await self._no_evidence(worker, Failure(e.failure_id, str(e)))
        return True

    async def _no_evidence(self, worker: NodeWorker, why: Failure) -> None:
        """No evidence this round. The last verdict stands until it expires; then the node is
        Unknown (untrusted): stale evidence is no evidence."""
        self._results["no_evidence"].inc()
        if worker.last_verified is not None:
            age = self._clock() - worker.last_verified
            worker.evidence_age.set(age.total_seconds())
        await self.publisher.no_evidence(worker.name, why, self.pods_on(worker.name))

    # -- scheduling gates ------------------------------------------------------------------------

    async def _ungate_loop(self) -> None:
        """Lift the scheduling gate of a pending NF pod once a node is trusted and a policy for
        its network function is loaded: until then the scheduler has nowhere safe to put it."""
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._gate_wake.wait(), 1.0)
            self._gate_wake.clear()
            if not self._active.is_set() or not self.publisher.any_trusted():
                continue
            assert self.pods is not None
            for pod in list(self.pods.objects.values()):
                gates = [
                    g.get("name") for g in (pod.get("spec") or {}).get("schedulingGates") or []
                ]
                info = pod_info(pod)
                if SCHEDULING_GATE not in gates or info is None:
                    continue
                if info.network_function not in self.policies.by_network_function:
                    continue
                await self.publisher.ungate(pod, gates.index(SCHEDULING_GATE))

"""The verifier loop: re-attest every node, publish what changed, remove divergent pods.

One asyncio task per node, woken by its pull interval or by a push from its agent; at most
``concurrency`` rounds run at once, and every agent call has a timeout, so a hung agent delays
only its own node. Rounds are pure (``attestation.core.verdict``); this module does the I/O around
them: the agent call, the Kubernetes writes (through ``Publisher``) and the remediation.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from collections.abc import Mapping

from attestation.adapters.informer import Informer, uid_key
from attestation.adapters.kube import Kube, Resource, node_path, nodeattestation_path, pod_path
from attestation.core.checkpoint import checkpoint_of
from attestation.core.clock import Clock, utcnow
from attestation.core.enforcement import Enforcement, mode_in
from attestation.core.evidence import Evidence, EvidenceQuery
from attestation.core.fastpath import select
from attestation.core.kubeobject import KubeObject
from attestation.core.logcheck import CheckLog
from attestation.core.names import AGENT_SELECTOR, NF_LABEL, PROTECTED_NAMESPACE_LABEL
from attestation.core.types import Failure
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
from attestation.verifier.enrollment import Enrolled, Enroller
from attestation.verifier.gating import Gates
from attestation.verifier.metrics import VerifierMetrics
from attestation.verifier.nodeloops import NodeLoops
from attestation.verifier.nodeworker import NodeWorker
from attestation.verifier.otherpods import NodePods, OtherPods, catch_up
from attestation.verifier.paged import Judge, judge_pages
from attestation.verifier.publisher import Publisher
from attestation.verifier.pushgate import PushGate
from attestation.verifier.scope import NodeScope
from attestation.verifier.settings import VerifierSettings
from attestation.verifier.shards import Shards

__all__ = ["Verifier"]

log = logging.getLogger(__name__)

#: How long a round waits for the watches to deliver pods the API server already lists.
_WATCH_CATCH_UP = 2.0


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
        push_gate: PushGate | None = None,
        shards: Shards | None = None,
    ) -> None:
        self.settings = settings
        self.kube = kube
        self.publisher = publisher
        self.policies = policies
        self.ek_ca_bundle = ek_ca_bundle
        self.metrics = metrics
        self._clock = clock
        self._check_log = select(settings.native)
        self.client = AgentClient.for_settings(settings)
        self._enroller = Enroller(self.client, publisher, ek_ca_bundle, clock, push_gate)
        #: This replica's share of the attested nodes, and their loops.
        self.loops = NodeLoops(self._round, settings.interval, publisher, metrics, shards,
                               push_gate, settings.concurrency)  # fmt: skip
        self.workers = self.loops.by_name
        self.shards = shards
        self._informers: list[Informer] = []
        self._gates: Gates | None = None
        self.nodes: Informer | None = None
        self.pods: Informer | None = None
        self.agent_pods: Informer | None = None
        self._nf_pods_by_node = ByNode(PodInfo.of)
        #: Which nodes to attest (see nodeselection.attested); decided once the watches synced.
        self._scope = NodeScope(
            settings.node_selector, publisher.key_id, self._nf_pods_by_node.has,
            attest=self.loops.want, release=self.loops.unwant,
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
        # Only the protected namespaces' NF pods are listed in a status (see Publisher.protected).
        namespaces = Informer("protected-namespaces", Resource(
            self.kube, "/api/v1/namespaces", label_selector=f"{PROTECTED_NAMESPACE_LABEL}=true"
        ), loop)  # fmt: skip
        never = {"kube-system", "kube-node-lease", self.settings.namespace}
        self.publisher.protected = lambda ns: ns in namespaces.objects and ns not in never
        # Staged rollout: each namespace's trustgate.io/enforcement label (core.enforcement).
        default = self.settings.enforcement_default

        def mode_of(namespace: str) -> Enforcement:
            return mode_in(namespaces.objects, default, namespace)

        self.publisher.remediator.mode_of = self.publisher.reports.mode_of = mode_of
        self._informers = [self.nodes, attestations, self.pods, namespaces]
        if self.settings.non_nf_pods == "ignore":  # else their entries are the host's
            update, source = self._other_pods.update, OtherPods(self.kube)
            self._informers.append(Informer("other", source, loop, key=uid_key, on_change=update))
        if not self.settings.agents:
            where = pod_path(self.settings.namespace)
            agents = Resource(self.kube, where, label_selector=AGENT_SELECTOR)
            self.agent_pods = Informer(
                "agents", agents, loop, on_change=self._agent_ips_by_node.update
            )
            self._informers.append(self.agent_pods)
        for informer in self._informers:
            informer.start()
        await asyncio.gather(*(i.synced.wait() for i in self._informers))
        await self.publisher.load_existing()
        self._scope.start(self._nf_pods_by_node.nodes())
        for node in set(self.publisher.published) - set(self.workers):
            self.publisher.forget(node)  # NodeAttestations of nodes no longer attested
        self._gates = Gates(lambda: self.pods.objects.values() if self.pods else (),
                            self.publisher, lambda: self.policies, self.loops.duties)  # fmt: skip
        self._gate_task = asyncio.create_task(self._gates.run(), name="ungate")

    async def close(self) -> None:
        if self._gates is not None:
            self._gates.stop()
        for informer in self._informers:
            informer.stop()
        self._gate_task.cancel()
        await self.loops.close()
        await asyncio.gather(self._gate_task, return_exceptions=True)
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
        if self._gates is not None:
            self._gates.wake()
        self._scope.pods_moved((before, self._nf_pods_by_node.node_of(uid)))

    # -- nodes -----------------------------------------------------------------------------------

    def agent_url(self, node: str) -> str | None:
        if self.settings.agents:
            return self.settings.agents.get(node)
        for host_ip in self._agent_ips_by_node.on(node).values():
            return f"https://{host_ip}:{self.settings.agent_port}"
        return None

    def pods_on(self, node: str) -> dict[str, PodInfo]:
        """The protected pods bound to ``node``, by uid."""
        return self._nf_pods_by_node.on(node)

    # -- one round -------------------------------------------------------------------------------

    async def _round(self, worker: NodeWorker) -> None:
        started = time.perf_counter()
        await self.publisher.pending(worker.name)
        url = self.agent_url(worker.name)
        if url is None:
            await self._no_evidence(worker, Failure("agent.missing", "no agent serves this node"))
            return
        if worker.state is None:
            on_node = functools.partial(self.pods_on, worker.name)
            try:
                enrolled = await self._enroller.start(worker.name, url, on_node)
            except CollectorError as e:
                await self._no_evidence(worker, Failure(e.failure_id, str(e)))
                return
            if not self._enrolled(worker, enrolled):
                return
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
        """Fresh evidence judged (``_attest_once``). A new host finding sticks until the node
        reboots, so it is confirmed first: a container can run before the verifier's watch
        delivers its pod, and its entries then look like a uid nobody has. When the API server
        lists pods on the node that the watches have not delivered, the round is judged again
        once they have (or after ``_WATCH_CATCH_UP``)."""
        before = worker.state
        # Taken before the round takes its own: never more than the round was judged with (the
        # watches may deliver a pod while the agent answers; the round has judged without it).
        seen = self._known_pods(worker.name)
        attested = await self._attest_once(worker, url)
        if attested is None or before is None:
            return attested
        new = set(attested[0].state.host_failures) - set(before.host_failures)
        if new and await self._watch_behind(worker.name, seen):
            attested = await self._attest_once(worker, url)
        return attested

    def _known_pods(self, node: str) -> frozenset[str]:
        """The cgroup uids of ``node``'s pods the watches have delivered: NF pods, other pods,
        recently deleted ones."""
        nf = {i.cgroup_uid or i.uid for i in self.pods_on(node).values()}
        return frozenset(nf) | self._other_pods.known(node) | self._gone_nf_pods.gone(node)

    async def _watch_behind(self, node: str, seen: frozenset[str]) -> bool:
        """Whether the API server lists pods on ``node`` (of those whose entries are not the
        host's) that a round judged without (``seen``); waits for the watches to deliver them
        (``otherpods.catch_up``)."""
        known = functools.partial(self._known_pods, node)
        nf_only = self.settings.non_nf_pods != "ignore"
        return await catch_up(self.kube, node, seen, known, nf_only=nf_only, within=_WATCH_CATCH_UP)

    async def _attest_once(
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

    def _enrolled(self, worker: NodeWorker, enrolled: Enrolled | None) -> bool:
        """Take an enrollment's outcome: False when it failed (the failure is published)."""
        if enrolled is None:
            self._results["enroll_failed"].inc()
            return False
        worker.state, worker.ak_name = enrolled.state, enrolled.ak_name
        return True

    async def _ak_changed(self, worker: NodeWorker, url: str) -> bool:
        """After a bad quote signature: did the agent come back with another AK (a restart
        with a new key)? Then re-enroll it now (True): the node's TPM state is kept if its EK
        is the bound one, and a failure (another TPM: ``enroll.ek_changed``) is published.
        False: the same AK, or no identity: the bad signature is the verdict."""
        identity = await self._enroller.new_identity(url, worker.ak_name)
        if identity is None:
            return False
        pods = functools.partial(self.pods_on, worker.name)
        try:
            enrolled = await self._enroller.enroll(
                worker.name, url, pods, identity=identity, keep=worker.state
            )
            if self._enrolled(worker, enrolled):
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

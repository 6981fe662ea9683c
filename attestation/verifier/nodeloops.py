"""This replica's node loops: the nodes the selection rule attests (``NodeScope``) that are this
replica's (``Shards``), each with its loop (``nodeworker``), started and stopped as either
answer changes.

A node given up is stopped and awaited before ``reshard`` returns, so the replica can then tell
its peers (its next Lease renewal) that no round of it is still running here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from attestation.verifier.metrics import VerifierMetrics
from attestation.verifier.nodeworker import NodeWorker, run_node
from attestation.verifier.publisher import Publisher
from attestation.verifier.pushgate import PushGate
from attestation.verifier.shards import CLUSTER_DUTIES, Shards

__all__ = ["NodeLoops"]

log = logging.getLogger(__name__)


class NodeLoops:
    def __init__(
        self,
        round_: Callable[[NodeWorker], Awaitable[None]],
        interval: float,
        publisher: Publisher,
        metrics: VerifierMetrics,
        shards: Shards | None,
        push_gate: PushGate | None,
        concurrency: int,
    ) -> None:
        self._round = round_
        self._interval = interval
        self._publisher = publisher
        self._metrics = metrics
        #: Which of the attested nodes are this replica's (None: all, one verifier alone).
        self.shards = shards
        self._push_gate = push_gate
        self._semaphore = asyncio.Semaphore(concurrency)
        self.by_name: dict[str, NodeWorker] = {}
        #: The nodes the selection rule attests; ``by_name`` holds this replica's share.
        self._wanted: set[str] = set()
        self.active = asyncio.Event()  # loops may run (set once started)
        self.stop = asyncio.Event()
        #: This replica does the cluster-wide work (lifting scheduling gates): one replica does.
        self.duties = asyncio.Event()

    def mine(self, node: str) -> bool:
        return self.shards is None or self.shards.mine(node)

    def activate(self) -> None:
        """Start attesting this replica's share of the nodes."""
        self.active.set()
        self._follow_duties()
        for worker in self.by_name.values():
            worker.wake.set()

    def want(self, name: str) -> None:
        """The selection rule now takes ``name`` in: attest it if it is this replica's."""
        self._wanted.add(name)
        if self.mine(name) and name not in self.by_name:
            self._start(name)

    def unwant(self, name: str) -> None:
        self._wanted.discard(name)
        if name in self.by_name:
            self._release(name)

    async def reshard(self) -> None:
        """The replicas' view changed (``Shards.run``): start the loops of the nodes that are
        now this replica's and stop those that are not — awaited. Taken nodes start from the
        NodeAttestations as the cluster has them (the previous owner's), attested at once."""
        self._follow_duties()
        leaving = [n for n in self.by_name if not self.mine(n)]
        stopped = [t for n in leaving if (t := self._release(n)) is not None]
        await asyncio.gather(*stopped, return_exceptions=True)
        taking = sorted(n for n in self._wanted if n not in self.by_name and self.mine(n))
        if taking:
            await self._publisher.take_over()
            for name in taking:
                if self.mine(name) and name in self._wanted and name not in self.by_name:
                    self._start(name)
        if leaving or taking:
            log.info("nodes: took %d, gave up %d, attesting %d", len(taking), len(leaving),
                     len(self.by_name))  # fmt: skip

    async def close(self) -> None:
        self.stop.set()
        tasks = [w.task for w in self.by_name.values() if w.task]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _follow_duties(self) -> None:
        if self.mine(CLUSTER_DUTIES):
            self.duties.set()
        else:
            self.duties.clear()

    def _start(self, name: str) -> None:
        worker = NodeWorker(name, self._metrics.evidence_age.labels(name))
        worker.wake.set()  # the first round at once: a node taken over must not wait
        self.by_name[name] = worker
        self._metrics.shard_nodes.set(len(self.by_name))
        loop = run_node(worker, self._round, self._interval, self.active, self.stop,
                        self._semaphore)  # fmt: skip
        worker.task = asyncio.create_task(loop, name=f"node:{name}")

    def _release(self, name: str) -> asyncio.Task[None] | None:
        """Stop attesting ``name`` and forget everything kept for it; the loop's task, to await.
        A round under way is cancelled at its next await, so it cannot put back what was
        forgotten here."""
        worker = self.by_name.pop(name)
        self._metrics.shard_nodes.set(len(self.by_name))
        if worker.task:
            worker.task.cancel()
        self._publisher.forget(name)
        if self._push_gate is not None:
            self._push_gate.forget(name)
        with contextlib.suppress(KeyError):
            self._metrics.evidence_age.remove(name)
        return worker.task

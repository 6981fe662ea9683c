"""Remove exactly the pod whose measurements diverge.

Eviction (policy/v1) respects PodDisruptionBudgets: a 429 is retried with backoff and, in
``evict-then-delete`` mode, escalated to a delete once ``eviction_deadline`` passes (a tampered
network function must not keep running because a budget is exhausted). ``annotate-only`` (audit
mode) records what would have happened and touches nothing. One task per pod at a time.

Per namespace, ``mode_of`` (``core.enforcement``, the namespace's ``trustgate.io/enforcement``
label) has the last word: a pod of a ``warn`` or ``audit`` namespace is never removed; what would
have happened is reported once (an Event, the audit trail) and asked again on later verdicts, so
a namespace switched to ``enforce`` gets its divergent pods removed then.

Every eviction asks for ``grace`` seconds of termination grace, not the pod's own
``terminationGracePeriodSeconds``: a tampered pod that asks for a year must not run for a year.
What has been done is remembered per pod uid until the pod is gone (``forget``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from attestation.adapters.kube import Kube, KubeError, pod_path
from attestation.core.enforcement import Enforcement, actions
from attestation.verifier.settings import RemediationMode

__all__ = ["Outcome", "PodTarget", "Remediator", "Report"]

log = logging.getLogger(__name__)

#: Backoff between refused evictions: 0.25 s doubling to 4 s.
_FIRST_BACKOFF = 0.25
_MAX_BACKOFF = 4.0


@dataclass(frozen=True, slots=True)
class PodTarget:
    namespace: str
    name: str
    uid: str
    reason: str
    #: The node whose verdict asked for it: the removal goes on only while that node is still
    #: this replica's (``Remediator.may_act``).
    node: str = ""


Outcome = str  # "evicted" | "deleted" | "gone" | "audit-only" | "failed"
Report = Callable[[PodTarget, Outcome, str], Awaitable[None]]


class Remediator:
    def __init__(
        self,
        kube: Kube,
        mode: RemediationMode,
        deadline: float,
        report: Report,
        *,
        grace: int,
    ) -> None:
        self._kube = kube
        self._mode = mode
        self._deadline = deadline
        self._report = report
        self._grace = grace
        self._in_flight: dict[str, asyncio.Task[None]] = {}
        self._executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="remediate")
        #: Pods already removed (or reported in audit mode): not asked again while they linger.
        self._done: set[str] = set()
        #: Pods deleted while their removal was under way: forgotten once it ends.
        self._gone: set[str] = set()
        #: The enforcement mode of a namespace; the controller sets it from its namespace watch.
        self.mode_of: Callable[[str], Enforcement] = lambda _namespace: "enforce"
        #: Pods of warn/audit namespaces whose would-be removal was reported (once per pod).
        self._spared: set[str] = set()
        #: Whether this replica still attests a node (its shard fence): an eviction retried
        #: after the node moved to another replica (or this one was paused past its lease) is
        #: dropped, not done; the node's owner asks again if its verdict says so.
        self.may_act: Callable[[str], bool] = lambda _node: True

    def request(self, target: PodTarget) -> None:
        """Start removing ``target`` unless that is already under way or done, or its namespace
        is not in ``enforce`` mode (then report once what would have happened)."""
        if target.uid in self._in_flight or target.uid in self._done:
            return
        mode = self.mode_of(target.namespace)
        if not actions(mode).evict:
            if target.uid not in self._spared:
                self._spared.add(target.uid)
                detail = f"namespace in {mode} mode, not evicted: {target.reason}"
                self._start(target, self._spare(target, detail))
            return
        self._start(target, self._remove(target))

    async def _spare(self, target: PodTarget, detail: str) -> None:
        await self._report(target, "audit-only", detail)

    def _start(self, target: PodTarget, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work, name=f"remediate:{target.name}")
        self._in_flight[target.uid] = task
        task.add_done_callback(lambda _t: self._finished(target.uid))

    def forget(self, uid: str) -> None:
        """The pod ``uid`` no longer exists: drop what is kept for it (uids are never reused)."""
        self._done.discard(uid)
        self._spared.discard(uid)
        if uid in self._in_flight:
            self._gone.add(uid)

    def tracked(self) -> int:
        """How many pods are remembered (done, under way, or spared by their namespace)."""
        return len(self._done) + len(self._in_flight) + len(self._gone) + len(self._spared)

    def _finished(self, uid: str) -> None:
        self._in_flight.pop(uid, None)
        if uid in self._gone:
            self._gone.discard(uid)
            self._done.discard(uid)
            self._spared.discard(uid)

    async def close(self) -> None:
        for task in list(self._in_flight.values()):
            task.cancel()
        await asyncio.gather(*self._in_flight.values(), return_exceptions=True)
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _remove(self, target: PodTarget) -> None:
        if self._mode == "annotate-only":
            self._done.add(target.uid)
            await self._report(target, "audit-only", "annotate-only mode: not evicted")
            return
        started = time.monotonic()
        backoff = _FIRST_BACKOFF
        while True:
            if not self.may_act(target.node):
                log.warning("pod %s/%s: node %s is no longer this replica's: not evicted here",
                            target.namespace, target.name, target.node)  # fmt: skip
                return
            try:
                await self._in_own_thread(
                    self._kube.evict, target.namespace, target.name, uid=target.uid,
                    grace_period_seconds=self._grace,
                )  # fmt: skip
            except KubeError as e:
                if e.status in (404, 409):  # gone, or a namesake with another uid
                    self._done.add(target.uid)
                    await self._report(target, "gone", "the pod no longer exists")
                    return
                if e.status != 429:
                    await self._report(target, "failed", str(e))
                    # not done: a later verdict asks again
                    return
                waited = time.monotonic() - started
                if self._mode == "evict-then-delete" and waited >= self._deadline:
                    await self._delete(target, f"eviction refused for {waited:.0f}s ({e})")
                    return
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF)
                continue
            self._done.add(target.uid)
            await self._report(target, "evicted", target.reason)
            return

    async def _in_own_thread(self, fn: Callable[..., object], *args: Any, **kw: Any) -> None:
        """Evictions get threads of their own: behind the default pool's queue of status,
        label and annotation writes they waited up to half a second (detect_bench p99)."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kw))

    async def _delete(self, target: PodTarget, why: str) -> None:
        body = {"preconditions": {"uid": target.uid}, "gracePeriodSeconds": 0}
        try:
            await self._in_own_thread(
                self._kube.delete, pod_path(target.namespace, target.name), body
            )
        except KubeError as e:
            await self._report(target, "failed", f"delete after refused eviction: {e}")
            return
        self._done.add(target.uid)
        await self._report(target, "deleted", why)

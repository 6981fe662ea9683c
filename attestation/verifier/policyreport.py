"""Write each namespace's PolicyReport (``core.policyreport``) from the verdicts this replica
publishes: the findings of ``audit`` and ``warn`` namespaces land where policy tooling looks, and
``enforce`` namespaces get the same record.

``observe`` is called with every verdict the publisher writes (no I/O: it only notes which
namespaces changed); a background task writes the changed namespaces' reports at most every
``interval`` seconds, and every namespace again each ``resync`` seconds (another replica may have
dropped this one's results while nodes moved between shards). Without the CRD (no Kyverno, and
``manifests/crds/policyreports.yaml`` not applied) it says so once and tries again every
``retry`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Any

from attestation.adapters.kube import Kube, KubeError
from attestation.core.clock import Clock, utcnow
from attestation.core.enforcement import Enforcement
from attestation.core.policyreport import (
    REPORT_NAME,
    PodResult,
    ResultWire,
    merge,
    report_body,
    result_wire,
    same_report,
)
from attestation.core.status import PodTrustView
from attestation.core.types import NodeVerdict
from attestation.core.verdict import PodInfo

__all__ = ["PolicyReports", "pod_result", "report_path"]

log = logging.getLogger(__name__)


def report_path(namespace: str, name: str = "") -> str:
    base = f"/apis/wgpolicyk8s.io/v1alpha2/namespaces/{namespace}/policyreports"
    return f"{base}/{name}" if name else base


def pod_result(
    node: str,
    info: PodInfo,
    view: PodTrustView,
    verdict: NodeVerdict,
    mode: Enforcement,
) -> PodResult:
    """A pod's result from its node's verdict: its own failures, or the node's when the node's
    state is what makes the pod not trusted."""
    pod = verdict.pod(info.uid)
    own = tuple(f.id for f in (pod.failures if pod else ()) if f.severity == "error")
    node_ids = tuple(f.id for f in verdict.failures if f.severity == "error")
    failures = own or (node_ids if view.state != "trusted" else ())
    return PodResult(
        info.namespace, info.name, info.uid, node, info.network_function, view.state,
        view.reason, failures, mode,
    )  # fmt: skip


class PolicyReports:
    def __init__(
        self,
        kube: Kube,
        *,
        clock: Clock = utcnow,
        interval: float = 2.0,
        resync: float = 60.0,
        retry: float = 10.0,
    ) -> None:
        self._kube = kube
        self._clock = clock
        self._interval = interval
        self._resync = resync
        self._retry = retry
        #: The enforcement mode of a namespace; the controller sets it from its namespace watch.
        self.mode_of: Callable[[str], Enforcement] = lambda _namespace: "enforce"
        #: node -> namespace -> uid -> this replica's newest result for the pod.
        self._mine: dict[str, dict[str, dict[str, ResultWire]]] = {}
        #: namespace -> nodes released since the last write (their results are to go).
        self._released: dict[str, set[str]] = {}
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        #: While the CRD is missing: when to try again (the event loop's time).
        self._missing_crd: float | None = None
        #: Whether the missing CRD was logged (once until a report is written again).
        self._said = False

    def tracked(self) -> int:
        return sum(len(by_ns) for by_ns in self._mine.values()) + len(self._released)

    def observe(
        self,
        node: str,
        pods: Mapping[str, PodInfo],
        views: Mapping[str, PodTrustView],
        verdict: NodeVerdict,
    ) -> None:
        """The results of ``node``'s pods from a verdict about to be published."""
        now = self._clock()
        fresh: dict[str, dict[str, ResultWire]] = {}
        for uid, info in pods.items():
            view = views.get(uid)
            if view is None:
                continue
            result = pod_result(node, info, view, verdict, self.mode_of(info.namespace))
            fresh.setdefault(info.namespace, {})[uid] = result_wire(result, now)
        before = self._mine.get(node, {})
        for namespace in before.keys() | fresh.keys():
            if _changed(before.get(namespace, {}), fresh.get(namespace, {})):
                self._dirty.add(namespace)
        for namespace in before.keys() - fresh.keys():
            self._released.setdefault(namespace, set()).add(node)
        self._mine[node] = fresh
        self._kick()

    def forget_node(self, node: str) -> None:
        """``node`` is no longer attested here: its results go from the reports."""
        for namespace in self._mine.pop(node, {}):
            self._released.setdefault(namespace, set()).add(node)
            self._dirty.add(namespace)
        self._kick()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _kick(self) -> None:
        if self._dirty:
            self._wake.set()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="policyreports")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        last_resync = loop.time()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._retry)
            self._wake.clear()
            if loop.time() - last_resync >= self._resync:
                last_resync = loop.time()
                self._dirty |= {ns for by_ns in self._mine.values() for ns in by_ns}
            if self._missing_crd is not None and loop.time() >= self._missing_crd:
                self._missing_crd = None
            for namespace in sorted(self._dirty):
                if self._missing_crd is None:
                    await self._write(namespace)
            await asyncio.sleep(self._interval)  # coalesce a burst of verdicts into one write

    async def _write(self, namespace: str) -> None:
        mine: dict[str, list[ResultWire]] = {
            node: list(by_ns.get(namespace, {}).values()) for node, by_ns in self._mine.items()
        }
        for node in self._released.get(namespace, ()):
            mine.setdefault(node, [])
        try:
            existing = await asyncio.to_thread(self._kube.get, report_path(namespace, REPORT_NAME))
            body = report_body(namespace, merge(_results(existing), mine), existing)
            if not same_report(existing, body):
                if existing is None:
                    await asyncio.to_thread(self._kube.create, report_path(namespace), body)
                else:
                    path = report_path(namespace, REPORT_NAME)
                    await asyncio.to_thread(self._kube.replace, path, body)
        except KubeError as e:
            self._refused(namespace, e)
            return
        self._dirty.discard(namespace)
        self._released.pop(namespace, None)
        self._said = False

    def _refused(self, namespace: str, error: KubeError) -> None:
        """A write refused: a conflict is retried next time; a missing CRD is said once."""
        if error.status == 404:
            said, self._missing_crd = self._said, asyncio.get_running_loop().time() + self._retry
            self._said = True
            if said:
                return
            log.warning(
                "PolicyReports not written: the wgpolicyk8s.io/v1alpha2 CRD is not installed "
                "(manifests/crds/policyreports.yaml, docs/rollout.md); trying again in %gs",
                self._retry,
            )
        elif error.status not in (404, 409):
            log.warning("namespace %s: PolicyReport not written: %s", namespace, error)


def _results(existing: Mapping[str, Any] | None) -> list[Mapping[str, Any]]:
    results = (existing or {}).get("results") or []
    return [r for r in results if isinstance(r, Mapping)] if isinstance(results, list) else []


def _changed(before: Mapping[str, ResultWire], after: Mapping[str, ResultWire]) -> bool:
    if before.keys() != after.keys():
        return True
    return any(_timeless(before[uid]) != _timeless(after[uid]) for uid in after)


def _timeless(result: ResultWire) -> dict[str, Any]:
    return {k: v for k, v in result.items() if k != "timestamp"}

"""Which pod uids each node has, by the uid their cgroup carries, and which it had a moment ago.

A round judges an entry whose cgroup names a pod uid that no pod bound to the node has against
the host policy (root made that cgroup). Two kinds of real pods are not that:

- pods that are not network functions: with ``VerifierSettings.non_nf_pods`` = ``ignore`` their
  measurements are counted, never judged. The verifier needs only their uid and node, so the
  watch keeps just those fields (a cluster has many more ordinary pods than NF pods);
- pods deleted a moment ago, NF or not: a pod's last execs can reach the verifier after the API
  object is gone (the next round, or the first after an agent outage). For ``LINGER`` seconds
  after its deletion a pod's uid is still counted, not judged: there is no pod left to act on,
  and the host must not answer for it. Root on the node can use that window too (a residual
  risk, as is moving a process into a live non-NF pod's cgroup).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Final

from attestation.adapters.kube import Kube, KubeError
from attestation.core.attribution import kubelet_uid
from attestation.core.kubeobject import KubeObject, WatchEvent
from attestation.core.names import MIRROR_ANNOTATION, NF_LABEL
from attestation.core.verdict import PodInfo

log = logging.getLogger(__name__)

__all__ = ["LINGER", "NodePods", "OtherPods", "catch_up"]

#: Seconds a deleted pod's uid stays known (an agent outage longer than this makes its last
#: entries the host's).
LINGER: Final = 600.0


def _slim(pod: KubeObject) -> KubeObject:
    meta = pod.get("metadata") or {}
    mirror = (meta.get("annotations") or {}).get(MIRROR_ANNOTATION)
    return {
        "metadata": {
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
            "annotations": {MIRROR_ANNOTATION: mirror} if mirror else {},
        },
        "spec": {"nodeName": (pod.get("spec") or {}).get("nodeName")},
    }


class OtherPods:
    """Every pod without the network-function label, slimmed to its uid, mirror annotation and
    node: a ``ListWatchSource`` for the verifier's informer."""

    SELECTOR = f"!{NF_LABEL}"

    def __init__(self, kube: Kube) -> None:
        self._kube = kube

    def list(self) -> tuple[list[KubeObject], str]:
        items, version = self._kube.list("/api/v1/pods", label_selector=self.SELECTOR)
        return [_slim(p) for p in items], version

    def watch(self, resource_version: str) -> Iterator[WatchEvent]:
        for kind, obj in self._kube.watch(
            "/api/v1/pods", resource_version, label_selector=self.SELECTOR
        ):
            yield kind, (obj if kind in ("ERROR", "BOOKMARK") else _slim(obj))


class NodePods:
    """Pods by node as their cgroups name them, fed by an informer's ``on_change``: the live
    ones, and those deleted less than ``linger`` seconds ago (``clock``: monotonic seconds)."""

    def __init__(
        self, *, linger: float = LINGER, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._linger = linger
        self._clock = clock
        self._live: dict[str, dict[str, str]] = {}  # node -> informer key -> cgroup uid
        self._node_of: dict[str, str] = {}
        self._gone: deque[tuple[float, str, str]] = deque()  # (when, node, cgroup uid)

    def update(self, key: str, obj: KubeObject | None) -> None:
        now = self._clock()
        self._prune(now)
        node = (obj.get("spec") or {}).get("nodeName") if obj is not None else None
        uid = kubelet_uid(obj) if obj is not None else None
        before = self._node_of.pop(key, None)
        if before is not None:
            old = self._live[before].pop(key)
            if not self._live[before]:
                del self._live[before]
            if (before, old) != (node, uid):
                self._gone.append((now, before, old))
        if node and uid:
            self._live.setdefault(node, {})[key] = uid
            self._node_of[key] = node

    def known(self, node: str) -> frozenset[str]:
        """The cgroup uids of ``node``'s pods, live or deleted less than ``linger`` ago."""
        self._prune(self._clock())
        recent = {uid for _, where, uid in self._gone if where == node}
        return frozenset(self._live.get(node, {}).values()) | recent

    def gone(self, node: str) -> frozenset[str]:
        """Only those deleted less than ``linger`` ago."""
        self._prune(self._clock())
        return frozenset(uid for _, where, uid in self._gone if where == node)

    def size(self) -> int:
        return len(self._node_of) + len(self._gone)

    def _prune(self, now: float) -> None:
        while self._gone and now - self._gone[0][0] > self._linger:
            self._gone.popleft()


async def catch_up(
    kube: Kube,
    node: str,
    seen: frozenset[str],
    known: Callable[[], frozenset[str]],
    *,
    nf_only: bool,
    within: float,
) -> bool:
    """Whether the API server lists pods bound to ``node`` (only NF pods with ``nf_only``) whose
    cgroup uids a round was judged without (``seen`` lacks them). Then wait up to ``within``
    seconds for the watches to deliver them (``known()``, live) and say True: judge again. False
    when nothing was missing or the list failed (the round's verdict stands)."""
    try:
        listed, _ = await asyncio.to_thread(
            kube.list, "/api/v1/pods", field_selector=f"spec.nodeName={node}"
        )
    except KubeError as e:
        log.warning("cannot list the pods on %s to confirm a host finding: %s", node, e)
        return False
    wanted = {kubelet_uid(p) or "" for p in listed if not nf_only or PodInfo.of(p) is not None} - {
        ""
    }
    if not wanted - seen:
        return False
    deadline = time.monotonic() + within
    while wanted - known() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    log.info("node %s: judging again with pods the watches had not delivered", node)
    return True

"""RuntimePolicy objects, live: watched (the project's one informer), merged per network function
(``core.policy.objects``), swapped into the verifier without a restart, and each object's
``Loaded``/``Invalid`` conditions written back to its status.

Only the verifier's own namespace is read: who may write a policy is who may write in the
namespace that holds the signing key, never a tenant with rights in its own namespace. The
``--policies`` directory stays as the seed: a network function with no object keeps the
directory's policy (the tests and the demo run on it); one with objects runs on theirs. An
invalid or incomplete set never replaces a loaded policy: the network function keeps the last
one loaded (or the seed's), and the objects say why in their conditions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Protocol

from prometheus_client import Gauge

from attestation.adapters.informer import Informer
from attestation.adapters.kube import Kube, KubeError, Resource
from attestation.core.clock import Clock, utcnow
from attestation.core.kubeobject import KubeObject
from attestation.core.names import GROUP, RUNTIME_POLICY_PLURAL, VERSION
from attestation.core.policy import RuntimePolicy
from attestation.core.policy.conditions import policy_status, status_changed
from attestation.core.policy.objects import Resolution, resolve
from attestation.core.verdict import PolicySet
from attestation.verifier.policies import HOST, publish_policy_warnings

__all__ = [
    "PolicyHolder",
    "PolicyWatch",
    "effective_policies",
    "policy_record",
    "runtime_policy_path",
    "watch_policies",
]

log = logging.getLogger("trustgate.verifier.policywatch")


def runtime_policy_path(namespace: str, name: str = "") -> str:
    base = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{RUNTIME_POLICY_PLURAL}"
    return f"{base}/{name}" if name else base


def effective_policies(seed: PolicySet, live: Mapping[str, RuntimePolicy]) -> PolicySet:
    """The seed's policies with every network function (and the host) that has live objects
    taken from them instead."""
    by_nf = {**seed.by_network_function, **{nf: p for nf, p in live.items() if nf != HOST}}
    return PolicySet(MappingProxyType(by_nf), live.get(HOST, seed.host))


class PolicyWatch:
    """Recomputes the policy set when an object changes (changes coalesce: a relist of many
    objects is one recomputation) and hands it to ``apply``."""

    def __init__(
        self,
        kube: Kube,
        namespace: str,
        seed: PolicySet,
        apply: Callable[[PolicySet], None],
        *,
        on_loaded: Callable[[PolicySet], object] = lambda _p: None,
        audit: Callable[[Mapping[str, Any]], Awaitable[None]] | None = None,
        clock: Clock = utcnow,
    ) -> None:
        self._kube = kube
        self._namespace = namespace
        self._seed = seed
        self._apply = apply
        self._on_loaded = on_loaded
        self._audit = audit
        self._clock = clock
        #: the last policy loaded from objects, by network function (kept while a set is held)
        self.live: dict[str, RuntimePolicy] = {}
        self._summary: tuple[tuple[str, int, str], ...] = ()
        self._wake = asyncio.Event()
        self._parsed: Mapping[tuple[str, int], Any] = {}
        self.informer: Informer | None = None

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        source = Resource(self._kube, runtime_policy_path(self._namespace))
        self.informer = Informer(
            "runtimepolicies", source, loop, on_change=lambda _k, _o: self._wake.set()
        )
        self.informer.start()

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop``: recompute after each batch of changes (bounded waits)."""
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), 1.0)
                if not self._wake.is_set():
                    continue
                self._wake.clear()
                try:
                    await self.recompute()
                except Exception:  # a bug must not stop the watch; the policies stay as they are
                    log.exception("RuntimePolicy objects not applied")
        finally:
            if self.informer is not None:
                self.informer.stop()

    async def recompute(self) -> Resolution:
        objects = list(self.informer.objects.values()) if self.informer else []
        # off the loop: a big policy takes a second to parse; unchanged objects are not reparsed
        resolution = await asyncio.to_thread(resolve, objects, self._parsed)
        self._parsed = resolution.parsed
        for nf in list(self.live):
            if nf not in resolution.policies and nf not in resolution.held:
                del self.live[nf]  # its objects are gone: back to the seed (or none)
        self.live.update(resolution.policies)
        policies = effective_policies(self._seed, self.live)
        self._apply(policies)
        summary = tuple(
            sorted(
                (name, int((o.get("metadata") or {}).get("generation") or 0), outcome.reason)
                for o in objects
                for name in [str((o.get("metadata") or {}).get("name", ""))]
                for outcome in [resolution.outcomes.get(name)]
                if outcome is not None
            )
        )
        if summary != self._summary:  # a spec changed (not only a status): say what runs now
            self._summary = summary
            self._log_change(policies, resolution)
            if self._audit is not None:
                await self._audit(policy_record(objects, resolution))
        for obj in objects:
            name = str((obj.get("metadata") or {}).get("name", ""))
            outcome = resolution.outcomes.get(name)
            if outcome is not None:
                await self._write_status(obj, policy_status(obj, outcome, self._clock()))
        return resolution

    def _log_change(self, policies: PolicySet, resolution: Resolution) -> None:
        self._on_loaded(policies)
        log.info(
            "runtime policies now: %s; host %s; held at the last loaded policy: %s",
            ", ".join(f"{nf} ({p.name})" for nf, p in sorted(policies.by_network_function.items()))
            or "none",
            policies.host.name if policies.host else "none",
            ", ".join(sorted(resolution.held)) or "none",
        )
        for name, outcome in sorted(resolution.outcomes.items()):
            if not outcome.loaded:
                log.warning("RuntimePolicy %s not loaded (%s): %s", name, outcome.reason,
                            outcome.message)  # fmt: skip

    async def _write_status(self, obj: KubeObject, status: dict[str, Any]) -> None:
        if not status_changed(obj, status):
            return
        name = str((obj.get("metadata") or {}).get("name", ""))
        path = runtime_policy_path(self._namespace, name) + "/status"
        try:
            await asyncio.to_thread(self._kube.merge_patch, path, {"status": status})
        except KubeError as e:
            if e.status != 404:  # deleted meanwhile: nothing to say
                log.warning("RuntimePolicy %s: status not written: %s", name, e)


class _Auditor(Protocol):
    async def audit(self, record: Mapping[str, Any]) -> None: ...


class PolicyHolder(Protocol):
    """What judges by the policies (the ``Verifier``): it reads ``policies`` at every use, and
    its publisher keeps the audit trail."""

    policies: PolicySet

    @property
    def publisher(self) -> _Auditor: ...


def policy_record(objects: Sequence[KubeObject], resolution: Resolution) -> dict[str, Any]:
    """The audit record of a change: which objects (at which generation) each network function
    now runs on, and which objects were not loaded and why."""
    generation = {
        str((o.get("metadata") or {}).get("name", "")): (o.get("metadata") or {}).get("generation")
        for o in objects
    }
    by_nf: dict[str, list[str]] = {}
    for obj in objects:
        spec = obj.get("spec") or {}
        name = str((obj.get("metadata") or {}).get("name", ""))
        outcome = resolution.outcomes.get(name)
        if outcome is not None and outcome.loaded:
            nf = str(spec.get("networkFunction", "")).lower()
            by_nf.setdefault(nf, []).append(f"{name}@{generation[name]}")
    return {
        "kind": "action",
        "action": "runtime-policies",
        "loaded": {nf: sorted(names) for nf, names in sorted(by_nf.items())},
        "notLoaded": {
            f"{n}@{generation.get(n)}": f"{o.reason}: {o.message}"
            for n, o in sorted(resolution.outcomes.items())
            if not o.loaded
        },
    }


def watch_policies(
    kube: Kube,
    namespace: str,
    verifier: PolicyHolder,
    gauge: Gauge,
    stop: asyncio.Event,
    *,
    clock: Clock = utcnow,
) -> asyncio.Task[None]:
    """Start watching RuntimePolicy objects for ``verifier`` (whose ``policies`` it swaps; the
    ones it was built with are the seed) until ``stop``; lint warnings go to ``gauge``."""

    def apply(policies: PolicySet) -> None:
        verifier.policies = policies  # one assignment on the loop: every reader sees old or new

    watch = PolicyWatch(
        kube, namespace, verifier.policies, apply,
        on_loaded=lambda p: publish_policy_warnings(p, gauge),
        audit=verifier.publisher.audit, clock=clock,
    )  # fmt: skip
    watch.start()
    return asyncio.create_task(watch.run(stop), name="runtime-policies")

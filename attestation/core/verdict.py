"""One attestation round of one node, pure: (what we knew, fresh evidence) -> (what we know now,
the verdict).

The steps follow the data: the quote proves PCR 10 (and 0-7) came from the enrolled TPM and is
fresh; replaying the new log entries against the quoted PCR 10 proves the entries are the ones
the kernel measured; each proven entry is attributed to its pod by its cgroup path and judged
against that pod's network-function policy (host entries against the host policy).

What sticks across rounds, and why:
- a pod's policy failures stay until the pod is gone: the pod ran something it should not have,
  and a later clean round does not undo that;
- host failures and a broken log (``ima.pcr_mismatch``) stay until the node reboots: the log is
  a hash chain, once it diverged nothing after can be trusted, and a reboot restarts it;
- quote failures and unreachable agents last one round: the verdict of the next good quote
  replaces them (the NodeAttestation's ``expiresAt`` covers the time in between).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from collections.abc import Callable, Mapping, Set
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from attestation.core.attribution import kubelet_uid
from attestation.core.evidence import Evidence
from attestation.core.fastpath import BEST
from attestation.core.ima import ImaParseError
from attestation.core.kubeobject import KubeObject
from attestation.core.logcheck import CheckLog, LogCheck
from attestation.core.names import NF_LABEL
from attestation.core.policy import RuntimePolicy
from attestation.core.quote import verify_quote
from attestation.core.replay import ReplayState, check_boot_aggregate
from attestation.core.types import (
    IMA_PCR,
    ClockInfo,
    Failure,
    HashAlg,
    NodeVerdict,
    PodRef,
    PodVerdict,
)

__all__ = [
    "MAX_KEPT_FAILURES",
    "AttestationState",
    "PodInfo",
    "PolicySet",
    "RoundResult",
    "attest_round",
    "forget_pods",
]

#: Failures kept per pod/host: enough to act on, bounded so a noisy pod cannot grow the state.
MAX_KEPT_FAILURES = 20


@dataclass(frozen=True, slots=True)
class PodInfo:
    """A protected pod as the verifier knows it from the API (uid is the key)."""

    uid: str
    namespace: str
    name: str
    network_function: str
    #: The uid its cgroup carries when that is not ``uid``: a static pod's, for its mirror pod.
    cgroup_uid: str = ""

    @classmethod
    def of(cls, pod: KubeObject) -> PodInfo | None:
        """What the verifier keeps of a pod from the API: None unless it names a network
        function (``trustgate.io/network-function``) and has a uid."""
        meta = pod.get("metadata") or {}
        nf = (meta.get("labels") or {}).get(NF_LABEL)
        if not nf or not meta.get("uid"):
            return None
        return cls(
            meta["uid"], meta.get("namespace", ""), meta.get("name", ""), str(nf).lower(),
            cgroup_uid=kubelet_uid(pod) or "",
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class PolicySet:
    """The loaded runtime policies: one per network function, and one for the host."""

    by_network_function: Mapping[str, RuntimePolicy] = field(
        default_factory=lambda: MappingProxyType({})
    )
    host: RuntimePolicy | None = None


@dataclass(frozen=True, slots=True)
class AttestationState:
    """What the verifier remembers about one node between rounds."""

    ak_public: bytes
    replay: ReplayState = field(default_factory=ReplayState.initial)
    clock: ClockInfo | None = None
    log_failure: Failure | None = None
    host_failures: tuple[Failure, ...] = ()
    pod_failures: Mapping[str, tuple[Failure, ...]] = field(
        default_factory=lambda: MappingProxyType({})
    )
    pod_measurements: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    warnings: int = 0

    @property
    def ima_offset(self) -> int:
        """Where the next evidence request starts reading the log."""
        return self.replay.next_offset


@dataclass(frozen=True, slots=True)
class RoundResult:
    state: AttestationState
    verdict: NodeVerdict
    #: The TPM rebooted since the last round: the log restarted, ask again from offset 0.
    rebooted: bool = False


def _errors(failures: tuple[Failure, ...]) -> tuple[Failure, ...]:
    return tuple(f for f in failures if f.severity == "error")


def _pod_verdicts(state: AttestationState, pods: Mapping[str, PodInfo]) -> tuple[PodVerdict, ...]:
    out = []
    for uid in sorted(pods):
        info = pods[uid]
        failures = state.pod_failures.get(uid, ())
        out.append(
            PodVerdict(
                uid=uid,
                trusted=not _errors(failures),
                network_function=info.network_function,
                failures=failures,
                measurements=state.pod_measurements.get(uid, 0),
            )
        )
    return tuple(out)


def _verdict(
    node: str,
    state: AttestationState,
    pods: Mapping[str, PodInfo],
    round_failures: tuple[Failure, ...],
    quote_digest: str,
) -> NodeVerdict:
    node_failures = round_failures + ((state.log_failure,) if state.log_failure else ())
    node_failures += state.host_failures
    return NodeVerdict(
        node=node,
        trusted=not _errors(node_failures),
        failures=node_failures,
        pods=_pod_verdicts(state, pods),
        quote_digest=quote_digest,
        measurements=state.replay.next_index,
    )


def attest_round(
    node: str,
    state: AttestationState,
    evidence: Evidence,
    nonce: bytes,
    policies: PolicySet,
    pods: Mapping[str, PodInfo],
    *,
    log_column_size: int = 20,
    check_log: CheckLog = BEST,
    unjudged_pods: Set[str] = frozenset(),
    judge_unknown_pods: bool = True,
) -> RoundResult:
    """Judge one round. ``evidence`` answers a request for the log from ``state.ima_offset``;
    ``pods`` are the protected pods currently bound to ``node``, by uid; ``check_log`` is the
    implementation of the log check (``fastpath.select``). ``unjudged_pods``: the cgroup uids of
    the other pods bound to ``node`` whose entries are counted, not judged (pods that are not
    network functions); an entry of any other pod uid is judged against the host policy, unless
    ``judge_unknown_pods`` is False: then it is counted like theirs (a verifier's first read of a
    log it did not watch being written, where pods deleted before it started look made up)."""
    quote_digest = hashlib.sha256(evidence.quote).hexdigest()

    def result(state: AttestationState, *failures: Failure) -> RoundResult:
        return RoundResult(state, _verdict(node, state, pods, failures, quote_digest))

    quote = verify_quote(
        evidence.quote,
        evidence.signature,
        state.ak_public,
        nonce,
        evidence.pcr_values,
        state.clock,
    )
    if quote.rebooted:
        fresh = _after_reboot(state, quote.clock_info)
        pending = Failure(
            "node.rebooted",
            "the TPM was reset (a reboot): re-attesting from the start of the new log",
            severity="warning",
        )
        return dataclasses.replace(result(fresh, pending), rebooted=True)
    if not quote.ok:
        return result(state, *quote.failures)
    state = dataclasses.replace(state, clock=quote.clock_info)
    if state.log_failure is not None:
        return result(state)
    if evidence.ima_offset != state.ima_offset:
        why = Failure(
            "agent.bad_response",
            f"evidence starts at log offset {evidence.ima_offset},"
            f" {state.ima_offset} was asked for",
        )
        return result(state, why)
    owners = _by_cgroup_uid(pods)
    quoted = {
        bank: values[IMA_PCR] for bank, values in evidence.pcr_values.items() if IMA_PCR in values
    }
    try:  # parse, replay against the quoted PCR 10, judge the covered entries (fastpath: in C)
        checked = check_log(
            evidence.ima_log,
            state.replay,
            quoted,
            _policy_lookup(policies, owners, unjudged_pods, judge_unknown_pods),
            column_size=log_column_size,
        )
    except ImaParseError as e:
        broken = Failure("ima.log_malformed", str(e))
        return result(dataclasses.replace(state, log_failure=broken))
    if checked.replay.failures:
        return result(dataclasses.replace(state, log_failure=checked.replay.failures[0]))
    return result(_fold(state, checked, evidence, policies, owners))


def _after_reboot(state: AttestationState, clock: ClockInfo | None) -> AttestationState:
    """A new boot: a new log and fresh PCRs. Host and log findings belonged to the old boot."""
    return dataclasses.replace(
        state,
        replay=ReplayState.initial(state.replay.pcrs.keys() or (HashAlg.SHA256,)),
        clock=clock,
        log_failure=None,
        host_failures=(),
    )


def _by_cgroup_uid(pods: Mapping[str, PodInfo]) -> Mapping[str, PodInfo]:
    """The protected pods by the uid their cgroup carries. A pod's own uid wins over a mirror
    pod's claim to it, and a uid claimed by two mirror pods is nobody's (the host judges it):
    anyone who may create pods can write the mirror annotation, nobody can choose a pod's uid."""
    out = {info.uid: info for info in pods.values()}
    claims: dict[str, list[PodInfo]] = {}
    for info in pods.values():
        if info.cgroup_uid and info.cgroup_uid != info.uid:
            claims.setdefault(info.cgroup_uid, []).append(info)
    for uid, claimants in claims.items():
        if uid not in out and len(claimants) == 1:
            out[uid] = claimants[0]
    return out


def _policy_lookup(
    policies: PolicySet, owners: Mapping[str, PodInfo], unjudged: Set[str], judge_unknown: bool
) -> Callable[[PodRef | None], RuntimePolicy | None]:
    """The policy an entry's owner is judged by: its protected pod's network function's; none for
    the other pods bound to the node (``unjudged``); the host's for the host and for a pod uid
    that no pod bound to this node has (made up by root, or another node's pod) while
    ``judge_unknown``, else none."""

    def policy_for(pod: PodRef | None) -> RuntimePolicy | None:
        if pod is None:
            return policies.host
        info = owners.get(pod.uid)
        if info is not None:
            return policies.by_network_function.get(info.network_function)
        return policies.host if judge_unknown and pod.uid not in unjudged else None

    return policy_for


def _fold(
    state: AttestationState,
    checked: LogCheck,
    evidence: Evidence,
    policies: PolicySet,
    owners: Mapping[str, PodInfo],
) -> AttestationState:
    """What a proven, judged stretch of log adds to what we know: the new replay position, the
    boot_aggregate check on a log's first entry, and the (bounded) findings per owner: a
    protected pod's under its API uid, anything else (a pod uid judged as the host) the host's."""
    new_replay = dataclasses.replace(
        checked.replay.state, next_offset=state.ima_offset + checked.covered_bytes
    )
    host_failures = list(state.host_failures)
    if state.replay.next_index == 0 and checked.first is not None:
        allowed = policies.host.boot_aggregates if policies.host else frozenset()
        failure = check_boot_aggregate(checked.first, evidence.pcr_values, allowed)
        if failure is not None:
            host_failures.append(failure)
    judged = checked.judgement
    pod_failures = dict(state.pod_failures)
    pod_measurements = dict(state.pod_measurements)
    warnings = state.warnings
    for failure in map(functools.partial(_owned, owners), judged.failures):
        if failure.severity != "error":
            warnings += 1
        if failure.pod_uid is None:
            if failure.severity == "error" and len(host_failures) < MAX_KEPT_FAILURES:
                host_failures.append(failure)
        else:
            kept = pod_failures.get(failure.pod_uid, ())
            if len(kept) < MAX_KEPT_FAILURES:
                pod_failures[failure.pod_uid] = (*kept, failure)
    for owner, count in judged.measurements.items():
        info = owners.get(owner) if owner is not None else None
        if info is not None:
            pod_measurements[info.uid] = pod_measurements.get(info.uid, 0) + count
    return dataclasses.replace(
        state,
        replay=new_replay,
        host_failures=tuple(host_failures),
        pod_failures=MappingProxyType(pod_failures),
        pod_measurements=MappingProxyType(pod_measurements),
        warnings=warnings,
    )


def _owned(owners: Mapping[str, PodInfo], failure: Failure) -> Failure:
    """``failure`` keyed by its protected pod's API uid; the host's when no protected pod of this
    node has the uid its cgroup named."""
    if failure.pod_uid is None:
        return failure
    info = owners.get(failure.pod_uid)
    if info is not None:
        return failure if info.uid == failure.pod_uid else replace(failure, pod_uid=info.uid)
    return replace(
        failure, pod_uid=None, message=f"host: {failure.message} (no pod of this node has that uid)"
    )


def forget_pods(state: AttestationState, live: Mapping[str, PodInfo]) -> AttestationState:
    """Drop what is kept about pods that no longer exist on the node (bounded state)."""
    if all(uid in live for uid in state.pod_failures) and all(
        uid in live for uid in state.pod_measurements
    ):
        return state
    return dataclasses.replace(
        state,
        pod_failures=MappingProxyType({u: f for u, f in state.pod_failures.items() if u in live}),
        pod_measurements=MappingProxyType(
            {u: n for u, n in state.pod_measurements.items() if u in live}
        ),
    )

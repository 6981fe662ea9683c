"""Judging measurements against runtime policies: one entry, or a whole stretch of the log.

Judging one measurement is a dict lookup on the raw path bytes and a frozenset membership test on
the raw digest: a node logs 10^5+ entries per boot. Excludes and signatures are consulted only when
that lookup fails. Digests are compared as bytes whatever their algorithm (as Keylime does).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from itertools import compress, repeat
from itertools import count as counter
from operator import contains, not_
from types import MappingProxyType
from typing import Final

from attestation.core.attribution import attribute
from attestation.core.ima import ImaLog, name_bytes, name_text
from attestation.core.ima import shown as shown_name
from attestation.core.ima_signature import verify_signature
from attestation.core.policy.model import RuntimePolicy
from attestation.core.types import Failure, ImaEntry, PodRef

__all__ = ["LogJudgement", "evaluate", "evaluate_log"]


def _owner(pod: PodRef | None) -> str:
    if pod is None:
        return "host"
    return f"pod {pod.uid}" + (f" container {pod.container_id[:12]}" if pod.container_id else "")


def evaluate(entry: ImaEntry, policy: RuntimePolicy, pod: PodRef | None = None) -> Failure | None:
    """Judge one entry against ``policy``: excluded or allowed -> None, else the failure. The
    common case (a listed file with an allowed digest) is one dict lookup and one set lookup."""
    template, path = entry.template_name.encode(), name_bytes(entry.path)
    alg, digest = entry.file_digest_alg.encode(), entry.file_digest
    allowed = policy.by_raw_path.get(path)
    if allowed is not None and digest in allowed:
        return None
    return _judge(policy, template, path, alg, digest, entry.signature, pod, allowed)


def _judge(
    policy: RuntimePolicy,
    template: bytes,
    raw_path: bytes,
    raw_alg: bytes,
    digest: bytes,
    signature: bytes | None,
    pod: PodRef | None,
    allowed: frozenset[bytes] | None,
) -> Failure | None:
    """A measurement the path/digest lookup did not allow (``allowed``: what it found for the
    path): excluded, an allowed ima-buf, or validly signed -> None, else the failure. Excludes
    match the name as text (bytes that are not UTF-8 as surrogate escapes); failures show it
    escaped."""
    text = name_text(raw_path)
    if policy.exclude_re is not None and policy.exclude_re.match(text):
        return None
    alg = raw_alg.decode("ascii", "replace")
    shown = f"{alg}:{digest.hex()}"
    uid = pod.uid if pod else None
    if template == b"ima-buf":
        if "*" in policy.ignored_keyrings or text in policy.ignored_keyrings:
            return None
        buffers = policy.buffers.get(text)
        if buffers is not None and digest in buffers:
            return None
        allowed = buffers if allowed is None else allowed
    path = shown_name(text)
    if signature and policy.keys:
        why = verify_signature(signature, alg, digest, policy.keys)
        if why is None:
            return None
        return Failure(
            "ima.policy.signature_invalid",
            f"{_owner(pod)}: {path} ({shown}) carries an IMA signature that does not verify "
            f"against policy {policy.name}: {why}",
            pod_uid=uid,
            path=path,
            digest=shown,
        )
    if allowed is None:
        return Failure(
            "ima.policy.unknown_file",
            f"{_owner(pod)}: {path} ({shown}) is not in policy {policy.name}",
            pod_uid=uid,
            path=path,
            digest=shown,
        )
    return Failure(
        "ima.policy.digest_mismatch",
        f"{_owner(pod)}: {path} has digest {shown}, which policy {policy.name} does not allow "
        f"({len(allowed)} digest(s) listed for it)",
        pod_uid=uid,
        path=path,
        digest=shown,
    )


@dataclass(frozen=True, slots=True)
class LogJudgement:
    """The policy outcome for a stretch of the log: failures (host and per pod) and how many
    measurements each owner had (``None``: the host)."""

    failures: tuple[Failure, ...]
    measurements: Mapping[str | None, int]


def evaluate_log(
    log: ImaLog,
    policy_for: Callable[[PodRef | None], RuntimePolicy | None],
    *,
    count: int | None = None,
) -> LogJudgement:
    """Attribute each of the first ``count`` entries of ``log`` to its pod (or the host) and judge
    it against ``policy_for(owner)``; owners without a policy (pods that are not network
    functions) are counted but not judged.

    Skipped: the ``boot_aggregate`` record (replay.check_boot_aggregate checks it against the
    quoted PCRs) and violations, which carry no digest and become warnings.

    Speed: the common case (a listed path with an allowed digest) is decided for the whole batch
    by C-level ``map``s over the columns: owner table per cgroup, dict lookup per path, set
    membership per digest. Only the entries that fail it ("suspects") are looked at one by one.
    """
    n = len(log) if count is None else min(count, len(log))
    cgs, paths, digests = log.cgroups[:n], log.paths[:n], log.digests[:n]
    owners: dict[bytes | None, tuple[PodRef | None, RuntimePolicy | None]] = {}
    for cg in set(cgs):
        pod = attribute(name_text(cg)) if cg else None
        owners[cg] = (pod, policy_for(pod))
    tables = {cg: _UNJUDGED if p is None else p.by_raw_path for cg, (_, p) in owners.items()}
    if len(tables) == 1:
        (table,) = tables.values()
        alloweds = map(table.get, paths, repeat(_NOTHING))
    else:
        alloweds = map(_proxy_get, map(tables.__getitem__, cgs), paths, repeat(_NOTHING))
    suspects = compress(counter(), map(not_, map(contains, alloweds, digests)))
    failures: list[Failure] = []
    first = log.start_index
    for k in suspects:
        pod, policy = owners[cgs[k]]
        path = paths[k]
        if policy is None or (first + k == 0 and path == b"boot_aggregate"):
            continue  # not a network function / checked against the quoted PCRs
        if not any(log.columns[k]):
            failures.append(_violation(first + k, path, pod))
            continue
        allowed = policy.by_raw_path.get(path)
        tpl, alg, sig = log.templates[k], log.algs[k], log.signatures[k]
        failure = _judge(policy, tpl, path, alg, digests[k], sig, pod, allowed)
        if failure is not None:
            failures.append(failure)
    measurements: Counter[str | None] = Counter()
    for cg, seen in Counter(cgs).items():
        pod = owners[cg][0]
        measurements[pod.uid if pod else None] += seen
    return LogJudgement(tuple(failures), MappingProxyType(dict(measurements)))


_NOTHING: Final[frozenset[bytes]] = frozenset()
_UNJUDGED: Final[Mapping[bytes, frozenset[bytes]]] = MappingProxyType({})
_Get = Callable[[Mapping[bytes, frozenset[bytes]], bytes, frozenset[bytes]], frozenset[bytes]]
_proxy_get: _Get = MappingProxyType.get  # type: ignore[assignment]  # the unbound C method


def _violation(index: int, raw_path: bytes, pod: PodRef | None) -> Failure:
    path = shown_name(name_text(raw_path))
    return Failure(
        "ima.violation",
        f"{_owner(pod)}: IMA logged a violation for {path} (entry {index}): the file was open for "
        "writing, or changed while measured",
        severity="warning",
        pod_uid=pod.uid if pod else None,
        path=path,
    )

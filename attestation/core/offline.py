"""Offline verification of a captured log or evidence bundle, pure: what ``trustgate verify``
prints. The same checks as a verifier round (the quote, the replay against PCR 10 with the
template-hash column of every covered entry, the per-pod policy judgement), without a cluster:
pods are judged by the network function the operator names for them (or by the one policy given).

As in a round, the log may run a few entries ahead of the PCR 10 value (the kernel appends before
it extends; an agent reads the log after quoting): those entries are proven by nothing yet, so
they are reported as ``uncovered`` and neither judged nor held against the log. A log of which
no entry is covered proves nothing: ``ima.not_covered`` (a verifier would wait for a later quote;
offline there is none)."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from attestation.core.evidence import EvidenceQuery, decode_evidence
from attestation.core.fastpath import BEST
from attestation.core.ima import parse_ascii, parse_binary
from attestation.core.logcheck import NOT_JUDGED, CheckLog, LogCheck
from attestation.core.policy import RuntimePolicy, evaluate_log
from attestation.core.quote import verify_quote
from attestation.core.replay import ReplayState, check_boot_aggregate, verify_against_quote
from attestation.core.tpm_types import PublicKey, parse_public
from attestation.core.types import IMA_PCR, Failure, HashAlg, PodRef

__all__ = ["BundleError", "OfflinePolicies", "OfflineResult", "verify_bundle", "verify_log"]

LogFormat = Literal["binary", "ascii"]
HOST = "host"


class BundleError(ValueError):
    """An evidence bundle that does not have the documented shape."""


@dataclass(frozen=True, slots=True)
class OfflinePolicies:
    """``policies`` by network function (``host`` for the host); ``pods`` names a pod's network
    function. With a single policy, it judges everything (host and every pod), as Keylime does."""

    policies: Mapping[str, RuntimePolicy]
    pods: Mapping[str, str] = field(default_factory=dict)

    def policy_for(self, pod: PodRef | None) -> RuntimePolicy | None:
        if len(self.policies) == 1:
            return next(iter(self.policies.values()))
        if pod is None:
            return self.policies.get(HOST)
        nf = self.pods.get(pod.uid)
        if nf is not None:
            return self.policies.get(nf)
        only_nf = [p for nf, p in self.policies.items() if nf != HOST]
        return only_nf[0] if len(only_nf) == 1 else None


@dataclass(frozen=True, slots=True)
class OfflineResult:
    """Node-level failures, each pod's failures, and how many entries PCR 10 covers (proven and
    judged) and how many follow them (``uncovered``: not proven yet, not judged)."""

    failures: tuple[Failure, ...]
    pods: Mapping[str, tuple[Failure, ...]]
    covered: int = 0
    uncovered: int = 0

    @property
    def trusted(self) -> bool:
        return not any(f.severity == "error" for f in self.failures) and all(
            not any(f.severity == "error" for f in fs) for fs in self.pods.values()
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "trusted": self.trusted,
            "covered": self.covered,
            "uncovered": self.uncovered,
            "failures": [f.as_dict() for f in self.failures],
            "pods": {
                uid: {
                    "trusted": not any(f.severity == "error" for f in fs),
                    "failures": [f.as_dict() for f in fs],
                }
                for uid, fs in sorted(self.pods.items())
            },
        }


def _judge(
    data: bytes,
    fmt: LogFormat,
    pcr10: Mapping[HashAlg, bytes],
    policies: OfflinePolicies,
    column_size: int,
    check_log: CheckLog,
) -> tuple[LogCheck, int]:
    """The round's log check over the whole list, and how many entries the PCR does not
    cover (entries after the prefix that reaches it; 0 when the replay failed)."""
    state = ReplayState.initial(pcr10.keys())
    if fmt == "binary":
        check = check_log(data, state, pcr10, policies.policy_for, column_size=column_size)
        if check.replay.failures:  # a mismatch already says nothing is proven
            return check, 0
        total = len(parse_binary(data, column_size=column_size))
        return check, total - check.replay.covered
    log = parse_ascii(data)
    replayed = verify_against_quote(state, log, pcr10)
    covered = replayed.covered
    judged = (
        evaluate_log(log, policies.policy_for, count=covered)
        if not replayed.failures
        else (NOT_JUDGED)
    )
    first = log.entry(0) if covered else None
    uncovered = 0 if replayed.failures else len(log) - covered
    return LogCheck(replayed, log.end_offset(covered), first, judged), uncovered


def _not_covered(check: LogCheck, uncovered: int) -> tuple[Failure, ...]:
    """A log ahead of the PCR is normal; a log none of which the PCR covers proves nothing."""
    if check.replay.failures or check.replay.covered or not uncovered:
        return ()
    return (
        Failure(
            "ima.not_covered",
            f"PCR 10 is reached before the log's first entry: none of its {uncovered} "
            f"entr{'y' if uncovered == 1 else 'ies'} is covered, nothing proves them",
        ),
    )


def _result(check: LogCheck, uncovered: int, extra: Sequence[Failure] = ()) -> OfflineResult:
    node: list[Failure] = [*extra, *check.replay.failures, *_not_covered(check, uncovered)]
    pods: dict[str, tuple[Failure, ...]] = {
        uid: () for uid in check.judgement.measurements if uid is not None
    }
    for failure in check.judgement.failures:
        if failure.pod_uid is None:
            node.append(failure)
        else:
            pods[failure.pod_uid] = (*pods.get(failure.pod_uid, ()), failure)
    return OfflineResult(tuple(node), pods, check.replay.covered, uncovered)


def verify_log(
    data: bytes,
    fmt: LogFormat,
    pcr10: Mapping[HashAlg, bytes],
    policies: OfflinePolicies,
    *,
    column_size: int = 20,
    check_log: CheckLog = BEST,
) -> OfflineResult:
    """A whole measurement list against the PCR 10 value(s) it reaches: the covered entries are
    proven and judged, the ones after them reported as uncovered. Raises ImaParseError for a
    malformed list."""
    check, uncovered = _judge(data, fmt, pcr10, policies, column_size, check_log)
    return _result(check, uncovered)


_AK_NOT_PINNED = Failure(
    "quote.ak_not_pinned",
    "the quote is signed by the AK the bundle itself carries, which proves nothing about the "
    "node: pass --ak with the public key of the AK the node enrolled with",
)


def verify_bundle(
    bundle: Mapping[str, Any],
    policies: OfflinePolicies,
    *,
    ak_key: PublicKey | None = None,
    column_size: int = 20,
    check_log: CheckLog = BEST,
) -> OfflineResult:
    """A captured evidence bundle (see docs/offline.md): the quote against its AK and nonce,
    then its log from offset 0. ``ak_key`` pins the AK (e.g. the one enrolled). Without it the
    checks still run and are reported, but the result is never trusted: anyone can start a TPM,
    quote a clean log with it and put that AK in a bundle (``quote.ak_not_pinned``)."""
    node, nonce, ak, evidence = _bundle(bundle)
    if ak_key is not None and parse_public(ak).public_key() != ak_key:
        return OfflineResult((Failure("quote.ak_mismatch", f"{node}: the bundle's AK is not the "
                                      "pinned one (--ak)"),), {})  # fmt: skip
    unpinned = () if ak_key is not None else (_AK_NOT_PINNED,)
    quote = verify_quote(evidence.quote, evidence.signature, ak, nonce, evidence.pcr_values)
    if not quote.ok:
        return OfflineResult((*unpinned, *quote.failures), {})
    pcr10 = {b: v[IMA_PCR] for b, v in evidence.pcr_values.items() if IMA_PCR in v}
    check, uncovered = _judge(evidence.ima_log, "binary", pcr10, policies, column_size, check_log)
    extra: list[Failure] = [*unpinned]
    if check.first is not None:
        host = policies.policy_for(None)
        allowed = host.boot_aggregates if host is not None else frozenset()
        boot = check_boot_aggregate(check.first, evidence.pcr_values, allowed)
        if boot is not None:
            extra.append(boot)
    return _result(check, uncovered, extra)


def _bundle(obj: Mapping[str, Any]) -> tuple[str, bytes, bytes, Any]:
    if not isinstance(obj, Mapping):
        raise BundleError("bundle: expected a JSON object")
    try:
        node = str(obj.get("node", ""))
        nonce = bytes.fromhex(obj["nonce"])
        ak = base64.b64decode(obj["akPublic"], validate=True)
        query = EvidenceQuery(nonce=nonce, ima_offset=0)
        evidence = decode_evidence(obj["evidence"], query)
        parse_public(ak)
    except KeyError as e:
        raise BundleError(f"bundle: missing field {e.args[0]!r}") from None
    except (TypeError, ValueError, binascii.Error) as e:  # EvidenceFormatError, QuoteParseError
        raise BundleError(f"bundle: {e}") from None
    return node, nonce, ak, evidence

"""What one round learns from the new bytes of a node's IMA log: parse, replay against the quoted
PCR 10, judge the covered entries. This is the reference implementation, in pure Python; the
native one (attestation.core.logcheck_native) must give exactly the same :class:`LogCheck` for every
input, and attestation.core.fastpath picks which one a round uses.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, Protocol

from attestation.core.ima import parse_binary
from attestation.core.policy import LogJudgement, RuntimePolicy, evaluate_log
from attestation.core.replay import ReplayResult, ReplayState, verify_against_quote
from attestation.core.types import HashAlg, ImaEntry, PodRef

__all__ = ["NOT_JUDGED", "CheckLog", "LogCheck", "PolicyFor", "check_log"]

PolicyFor = Callable[[PodRef | None], RuntimePolicy | None]

#: The judgement of a round whose replay failed: nothing in the log is proven, nothing is judged.
NOT_JUDGED: Final = LogJudgement((), MappingProxyType({}))


class CheckLog(Protocol):
    """The signature both implementations of :func:`check_log` share."""

    def __call__(
        self,
        buf: bytes,
        state: ReplayState,
        quoted_pcr10: Mapping[HashAlg, bytes],
        policy_for: PolicyFor,
        *,
        column_size: int = 20,
    ) -> LogCheck: ...


@dataclass(frozen=True, slots=True)
class LogCheck:
    """``replay`` as ``replay.verify_against_quote`` returns it; ``covered_bytes``:
    how far into the buffer the covered entries reach; ``first``: the buffer's first entry when it
    is covered (a log's first entry is boot_aggregate, checked against the quoted PCRs 0-7);
    ``judgement``: the policy outcome of the covered entries (:data:`NOT_JUDGED` when the replay
    failed)."""

    replay: ReplayResult
    covered_bytes: int
    first: ImaEntry | None
    judgement: LogJudgement


def check_log(
    buf: bytes,
    state: ReplayState,
    quoted_pcr10: Mapping[HashAlg, bytes],
    policy_for: PolicyFor,
    *,
    column_size: int = 20,
) -> LogCheck:
    """Check the binary log entries in ``buf`` (read from ``state.next_offset``).

    Raises :class:`attestation.core.ima.ImaParseError` when ``buf`` is malformed.
    """
    log = parse_binary(buf, start_index=state.next_index, column_size=column_size)
    replayed = verify_against_quote(state, log, quoted_pcr10)
    if replayed.failures:
        return LogCheck(replayed, 0, None, NOT_JUDGED)
    covered = replayed.covered
    judged = evaluate_log(log, policy_for, count=covered)
    return LogCheck(replayed, log.end_offset(covered), log.entry(0) if covered else None, judged)

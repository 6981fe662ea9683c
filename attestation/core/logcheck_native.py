"""The native implementation of :func:`attestation.core.logcheck.check_log`.

The C scan (attestation/core/_imafast.c) does the per-entry work: parse and check every entry,
replay PCR 10 in every quoted bank, and test each covered entry's (path, digest) against its
owner's policy table. It hands back only the covered count, where the covered entries end, the
positions of the entries that failed that test ("suspects", rare) and how many entries each cgroup
had. Everything a person reads is still made by the reference code: each suspect is parsed and
judged by ``core.ima`` and ``core.policy`` exactly as in the pure path, and whenever the scan
declines (malformed or unusual entries, a replay that does not reach the quote) the whole check
runs in the reference, which raises the parse error or builds the ``ima.pcr_mismatch`` failure.

Importing this module fails with ImportError when the extension was not built, or was built from
an older ``_imafast.c`` than this module expects (a stale build left in a working tree: its answers
would differ from the reference's).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from types import MappingProxyType

from attestation.core import _imafast, logcheck
from attestation.core.attribution import attribute
from attestation.core.ima import name_text, parse_binary
from attestation.core.logcheck import LogCheck, PolicyFor
from attestation.core.policy import LogJudgement, evaluate_log
from attestation.core.replay import ReplayResult, ReplayState, locating_bank
from attestation.core.types import Failure, HashAlg, PodRef

__all__ = ["check_log"]

#: _imafast.c's IMAFAST_API: names are bytes; template-hash columns are checked
_API = 2
if getattr(_imafast, "API", 1) != _API:
    raise ImportError(
        f"attestation.core._imafast is a stale build (API {getattr(_imafast, 'API', 1)}, this "
        f"code needs {_API}): rebuild it with `make setup` or `pip install -e .`",
        name="attestation.core._imafast",
    )


def check_log(
    buf: bytes,
    state: ReplayState,
    quoted_pcr10: Mapping[HashAlg, bytes],
    policy_for: PolicyFor,
    *,
    column_size: int = 20,
) -> LogCheck:
    """Same contract as :func:`attestation.core.logcheck.check_log`."""
    banks = [alg for alg in HashAlg if alg in quoted_pcr10]
    primary = locating_bank(quoted_pcr10)  # as verify_against_quote
    if primary is None:
        return logcheck.check_log(buf, state, quoted_pcr10, policy_for, column_size=column_size)
    order = [primary, *(alg for alg in banks if alg is not primary)]
    owners: dict[bytes | None, PodRef | None] = {}

    def table_for(cgroup: bytes | None) -> Mapping[bytes, Collection[bytes]] | None:
        pod = attribute(name_text(cgroup)) if cgroup else None  # as evaluate_log attributes
        owners[cgroup] = pod
        policy = policy_for(pod)
        return None if policy is None else policy.by_raw_path

    spec = tuple((alg.value, state.pcr(alg), quoted_pcr10[alg]) for alg in order)
    scanned = _imafast.scan(buf, column_size, spec, table_for)
    if scanned is None:
        return logcheck.check_log(buf, state, quoted_pcr10, policy_for, column_size=column_size)
    covered, covered_end, first_end, suspects, counts = scanned

    pcrs = MappingProxyType({alg: quoted_pcr10[alg] for alg in order})
    offset = covered_end if covered else state.next_offset
    replayed = ReplayResult(ReplayState(state.next_index + covered, offset, pcrs), covered)
    first = None
    if covered:
        head = parse_binary(buf[:first_end], start_index=state.next_index, column_size=column_size)
        first = head.entry(0)
    failures: list[Failure] = []
    for k, start, end in suspects:
        one = parse_binary(
            buf[start:end], start_index=state.next_index + k, column_size=column_size
        )
        failures += evaluate_log(one, policy_for).failures
    measurements: dict[str | None, int] = {}
    for cgroup, seen in counts.items():
        pod = owners[cgroup]
        owner = pod.uid if pod else None
        measurements[owner] = measurements.get(owner, 0) + seen
    judged = LogJudgement(tuple(failures), MappingProxyType(measurements))
    return LogCheck(replayed, covered_end, first, judged)

"""A round over a log that comes in pages: what one page proves, and whether to ask for the next.

The agent answers with at most a page of whole entries and says whether more follow (see
``core.evidence``), so neither end ever holds a whole log: a tenant who executes many distinct
small files grows the log without bound, and a from-zero read (after a reboot, or with no
checkpoint to resume from) must still fit in memory.

The quote is made once, before the first page is read; the log may run ahead of it, never
behind. Each page is replayed from the running PCR 10 of the pages before it:

- the quoted PCR 10 is reached inside the page: the covered prefix is judged, the round is done
  (the rest waits for the next round, exactly as with a single answer);
- it is not reached and more pages follow: every whole entry of the page lies on the way to it
  (a hash chain meets a value at most once), so all are replayed and judged, and the next page is
  read from their end — ``check_page``;
- it is not reached on the last page: ``ima.pcr_mismatch``, as always (``check_log``).

Entries of a page are judged before the last page proves them. When a later page breaks the
chain, the round is re-judged from where it started with that failure alone: nothing an unproven
entry said is kept (``verifier.paged``).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final, Literal

from attestation.core.ima import parse_binary
from attestation.core.logcheck import NOT_JUDGED, LogCheck, PolicyFor
from attestation.core.policy import evaluate_log
from attestation.core.replay import (
    ReplayResult,
    ReplayState,
    locating_bank,
    replay,
    template_hash_mismatch,
    verify_against_quote,
)
from attestation.core.types import IMA_PCR, HashAlg

__all__ = ["MAX_PAGES", "Next", "check_page", "next_step", "quoted_pcr10"]

#: Pages one round reads at most; with the agent's default 4 MiB pages, 4 GiB of log since the
#: last round. A round that runs out judges its last page as the last (``ima.pcr_mismatch`` unless
#: it reached the quote): an agent that says "more" forever holds one verifier slot for at most
#: this many calls, each within ``--agent-timeout``.
MAX_PAGES: Final = 1024

Next = Literal["done", "next", "last"]


def quoted_pcr10(pcr_values: Mapping[HashAlg, Mapping[int, bytes]]) -> dict[HashAlg, bytes]:
    return {bank: values[IMA_PCR] for bank, values in pcr_values.items() if IMA_PCR in values}


def check_page(
    buf: bytes,
    state: ReplayState,
    quoted_pcr10: Mapping[HashAlg, bytes],
    policy_for: PolicyFor,
    *,
    column_size: int = 20,
) -> LogCheck:
    """``logcheck.check_log`` for a page that more pages follow: when the quoted PCR 10 is not
    reached, every whole entry of ``buf`` is covered instead of failing (pure Python: pages only
    follow each other on a from-zero or long-behind read; the last page takes the fast path)."""
    log = parse_binary(buf, start_index=state.next_index, column_size=column_size)
    quoted, primary = quoted_pcr10, locating_bank(quoted_pcr10)
    reached = (
        primary is None or not verify_against_quote(state, log, {primary: quoted[primary]}).failures
    )
    if reached:  # in this page (or no PCR 10 quoted): exactly as check_log, every bank checked
        replayed = verify_against_quote(state, log, quoted)
    else:  # not in this page: all of it lies on the way there (or the last page says not)
        covered = len(log)
        forged = template_hash_mismatch(log, covered, state.next_index)
        if forged is not None:
            return LogCheck(ReplayResult(state, 0, (forged,)), 0, None, NOT_JUDGED)
        skip = dict(log.skip)
        pcrs = MappingProxyType({a: replay(a, state.pcr(a), log.datas, skip) for a in quoted})
        moved = ReplayState(
            state.next_index + covered, state.next_offset + log.end_offset(covered), pcrs
        )
        replayed = ReplayResult(moved, covered)
    if replayed.failures:
        return LogCheck(replayed, 0, None, NOT_JUDGED)
    covered = replayed.covered
    judged = evaluate_log(log, policy_for, count=covered)
    first = log.entry(0) if covered else None
    return LogCheck(replayed, log.end_offset(covered) if covered else 0, first, judged)


def next_step(
    before: ReplayState,
    after: ReplayState,
    quoted: Mapping[HashAlg, bytes],
    *,
    failed: bool,
    more: bool,
    pages: int,
) -> Next:
    """After a page judged with ``check_page`` (``more``) or ``check_log``: ``done``; ``next``
    (ask for the page from ``after.next_offset``); or ``last``: judge this same page again as the
    last one, because it moved nothing although the agent says more follows (or the round ran out
    of pages) — only the last page may leave the quote unreached, and then it says so."""
    if failed or not more:
        return "done"
    primary = locating_bank(quoted)
    if primary is not None and after.pcr(primary) == quoted[primary]:
        return "done"  # the quote is covered; the rest of the log waits for the next round
    if after.next_offset <= before.next_offset or pages >= MAX_PAGES:
        return "last"
    return "next"

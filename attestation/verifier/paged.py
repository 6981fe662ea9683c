"""One round's log, page by page: judge the page in hand, ask the agent for the next, until the
log is covered up to what the quote covers (``core.paging`` decides; this module does the calls).

The verifier holds one page at a time (its bytes are dropped before the next one is asked for),
so its memory per round is bounded by the agent's page size, whatever the log's.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from typing import Final

from attestation.core.evidence import Evidence
from attestation.core.logcheck import CheckLog
from attestation.core.paging import check_page, next_step, quoted_pcr10
from attestation.core.verdict import AttestationState, RoundResult
from attestation.verifier.collector import AgentClient

__all__ = ["Judge", "judge_pages"]

#: Pages larger than this are judged in a worker thread, not on the event loop: a long log (the
#: first round of a busy node) would stall every other node's round.
_INLINE_LOG_BYTES: Final = 256 * 1024

#: ``attest_round`` for one node, nonce and set of pods: (state, evidence, log check) -> result.
Judge = Callable[[AttestationState, Evidence, CheckLog], RoundResult]


async def _judge(
    judge: Judge, state: AttestationState, page: Evidence, check: CheckLog
) -> RoundResult:
    if len(page.ima_log) > _INLINE_LOG_BYTES:
        return await asyncio.to_thread(judge, state, page, check)
    return judge(state, page, check)


async def judge_pages(
    client: AgentClient,
    url: str,
    start: AttestationState,
    evidence: Evidence,
    judge: Judge,
    check_log: CheckLog,
) -> RoundResult:
    """The round's result over ``evidence`` (the quote and the first page, read from
    ``start.ima_offset``) and as many further pages as the quote needs. A ``CollectorError`` on
    a later page ends the round like one on the first: no evidence, nothing learnt."""
    quoted = quoted_pcr10(evidence.pcr_values)
    state, page, pages = start, evidence, 1
    while True:
        result = await _judge(judge, state, page, check_page if page.more else check_log)
        step = next_step(
            state.replay, result.state.replay, quoted, pages=pages, more=page.more,
            failed=result.rebooted or result.state.log_failure is not None,
        )  # fmt: skip
        if step == "last":
            result = await _judge(judge, state, page, check_log)
        if step != "next":
            break
        state, pages = result.state, pages + 1
        page = dataclasses.replace(page, ima_log=b"")  # hold one page at a time
        log, more = await client.log_page(url, state.ima_offset)
        page = dataclasses.replace(page, ima_offset=state.ima_offset, ima_log=log, more=more)
    broken = result.state.log_failure
    if pages > 1 and broken is not None and start.log_failure is None:
        # A later page broke the chain: the pages before it were judged unproven. Nothing they
        # said is kept; the round ends where it started, with that failure alone.
        page = dataclasses.replace(page, ima_log=b"")
        result = judge(dataclasses.replace(start, log_failure=broken), page, check_log)
    return result

"""The log in pages (issue 14, item 9), pure: the agent's framing of whole entries, the wire
format of a page, the verifier's per-page replay, and the checkpoint a verifier resumes from.
Data from the lab's independent IMA writer; nothing faked."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import pytest

from attestation.agent.log import whole_entries
from attestation.core.checkpoint import CheckpointError, checkpoint_of, read_checkpoints, resume
from attestation.core.evidence import (
    EvidenceFormatError,
    EvidenceQuery,
    decode_evidence,
    decode_log_page,
    decode_log_request,
    encode_log_page,
    encode_log_request,
)
from attestation.core.ima import ImaParseError, parse_binary
from attestation.core.logcheck import check_log
from attestation.core.paging import MAX_PAGES, check_page, next_step
from attestation.core.policy import RuntimePolicy
from attestation.core.replay import ReplayState, replay
from attestation.core.signing import generate_private_key, public_keys_by_id, sign_status
from attestation.core.types import ClockInfo, Failure, HashAlg, PodRef
from attestation.core.verdict import AttestationState
from attestation.lab.ima_writer import BuiltLog, build_log

BANKS = (HashAlg.SHA1, HashAlg.SHA256)


@pytest.fixture(scope="module")
def built() -> BuiltLog:
    return build_log(3000, template="ima-cgpath", banks=BANKS, column_alg=HashAlg.SHA1)


def nobody(_pod: PodRef | None) -> RuntimePolicy | None:
    return None


def _pcr10_after(raw: bytes, count: int) -> dict[HashAlg, bytes]:
    """PCR 10 of each bank once the first ``count`` entries of ``raw`` were extended."""
    log = parse_binary(raw)
    skip = {k: kind for k, kind in log.skip if k < count}
    return {alg: replay(alg, bytes(alg.digest_size), log.datas[:count], skip) for alg in BANKS}


def _ends(raw: bytes) -> list[int]:
    """Every entry boundary of a log written by the lab."""
    log = parse_binary(raw)
    return [0, *(log.end_offset(k) for k in range(1, len(log) + 1))]


# --- the agent's framing ------------------------------------------------------------------------


def test_whole_entries_ends_at_the_last_whole_entry_before_any_cut(built: BuiltLog) -> None:
    raw = built.binary
    ends = _ends(raw)
    for cut in (0, 1, 37, ends[1], ends[1] + 1, ends[500] - 1, ends[500], len(raw) - 1, len(raw)):
        assert whole_entries(memoryview(raw)[:cut], 20) == max(e for e in ends if e <= cut)


def test_whole_entries_stops_at_a_template_name_no_kernel_writes(built: BuiltLog) -> None:
    raw = bytearray(built.binary)
    ends = _ends(bytes(raw))
    raw[ends[3] + 24 : ends[3] + 28] = (0).to_bytes(4, "little")  # entry 3's name length
    assert whole_entries(bytes(raw), 20) == ends[3]


# --- the wire -----------------------------------------------------------------------------------


def test_a_page_says_whether_more_follows_and_where_it_starts() -> None:
    page = encode_log_page(4096, b"entries", more=True)
    assert decode_log_page(page, 4096) == (b"entries", True)
    assert decode_log_page({"offset": 7, "log": ""}, 7) == (b"", False)  # an agent before paging
    with pytest.raises(EvidenceFormatError, match=r"page\.offset: asked for 8, got 7"):
        decode_log_page({"offset": 7, "log": ""}, 8)
    with pytest.raises(EvidenceFormatError, match=r"page\.more: expected bool"):
        decode_log_page({"offset": 7, "log": "", "more": "yes"}, 7)
    with pytest.raises(EvidenceFormatError, match="longer than 16 bytes"):
        decode_log_page(encode_log_page(0, bytes(64), more=False), 0, max_log=16)
    assert decode_log_request(encode_log_request(123)) == 123
    with pytest.raises(EvidenceFormatError, match="imaOffset: must not be negative"):
        decode_log_request({"imaOffset": -1})


def test_evidence_carries_more() -> None:
    query = EvidenceQuery(nonce=bytes(32), ima_offset=10)
    body = {"quote": "", "signature": "", "pcrs": {}, "ima": encode_log_page(10, b"x", more=True)}
    evidence = decode_evidence(body, query)
    assert (evidence.ima_offset, evidence.ima_log, evidence.more) == (10, b"x", True)


# --- the verifier's replay, page by page ---------------------------------------------------------


def _pages(raw: bytes, size: int) -> list[tuple[int, bytes, bool]]:
    """The pages an agent with ``size``-byte pages serves: (offset, whole entries, more)."""
    out, offset = [], 0
    while True:
        buf = raw[offset : offset + size + 1]
        cut = whole_entries(memoryview(buf)[:size], 20) or len(buf[:size])
        out.append((offset, buf[:cut], len(buf) > cut))
        if len(buf) <= cut:
            return out
        offset += cut


def _paged(
    raw: bytes, quoted: Mapping[HashAlg, bytes], size: int, start: ReplayState | None = None
) -> tuple[ReplayState, Failure | None, int]:
    """Replay ``raw`` as the verifier does, page by page: (state, failure, pages read)."""
    state = start or ReplayState.initial(BANKS)
    for n, (offset, page, more) in enumerate(_pages(raw[state.next_offset :], size), 1):
        assert offset + (start.next_offset if start else 0) == state.next_offset
        checked = (check_page if more else check_log)(page, state, quoted, nobody)
        if checked.replay.failures:
            return state, checked.replay.failures[0], n
        after = dataclasses.replace(
            checked.replay.state, next_offset=state.next_offset + checked.covered_bytes
        )
        step = next_step(state, after, quoted, failed=False, more=more, pages=n)
        state = after
        if step != "next":
            return state, None, n
    raise AssertionError("unreachable")


def test_pages_reach_the_same_state_as_one_answer(built: BuiltLog) -> None:
    whole = check_log(built.binary, ReplayState.initial(BANKS), built.pcr10, nobody)
    state, failure, pages = _paged(built.binary, built.pcr10, 64 * 1024)
    assert failure is None
    assert pages > 3
    assert state.next_index == whole.replay.state.next_index == 3001
    assert state.next_offset == len(built.binary)
    assert dict(state.pcrs) == dict(whole.replay.state.pcrs) == dict(built.pcr10)


def test_a_log_ahead_of_the_quote_stops_where_the_quote_is(built: BuiltLog) -> None:
    ends = _ends(built.binary)
    state, failure, _ = _paged(built.binary, _pcr10_after(built.binary, 1201), 64 * 1024)
    assert failure is None
    assert (state.next_index, state.next_offset) == (1201, ends[1201])


def test_a_doctored_entry_in_a_later_page_is_a_mismatch(built: BuiltLog) -> None:
    raw = bytearray(built.binary)
    ends = _ends(bytes(raw))
    at = ends[2800] - 5  # the path of entry 2800, in the last page
    raw[at] ^= 1
    raw[ends[2799] + 4 : ends[2799] + 24] = hashlib.sha1(  # noqa: S324 - the list's column
        bytes(raw[ends[2799] + 42 : ends[2800]])
    ).digest()  # a consistent column: only the PCR can tell
    _, failure, pages = _paged(bytes(raw), built.pcr10, 64 * 1024)
    assert failure is not None
    assert failure.id == "ima.pcr_mismatch"
    assert pages > 3


@pytest.mark.parametrize("end", [1200, 1201])
def test_every_quoted_bank_must_agree_where_a_page_reaches_the_quote(
    built: BuiltLog, end: int
) -> None:
    """The SHA-256 bank reaches the quote inside (or at the very end of) a page more pages
    follow, the SHA-1 bank does not: a mismatch, never "covered all, go on"."""
    ends = _ends(built.binary)
    quoted = {**_pcr10_after(built.binary, 1201), HashAlg.SHA1: bytes(20)}
    page = built.binary[: ends[end] if end == 1201 else ends[1300]]
    checked = check_page(page, ReplayState.initial(BANKS), quoted, nobody)
    assert [f.id for f in checked.replay.failures] == ["ima.pcr_mismatch"]
    assert "sha1" in checked.replay.failures[0].message


def test_a_page_that_moves_nothing_is_judged_as_the_last() -> None:
    state = ReplayState.initial(BANKS)
    quoted = {HashAlg.SHA256: b"\x01" * 32}
    assert next_step(state, state, quoted, failed=False, more=True, pages=1) == "last"
    moved = dataclasses.replace(state, next_offset=10)
    assert next_step(state, moved, quoted, failed=False, more=True, pages=1) == "next"
    assert next_step(state, moved, quoted, failed=False, more=True, pages=MAX_PAGES) == "last"
    assert next_step(state, moved, quoted, failed=True, more=True, pages=1) == "done"
    reached = ReplayState(1, 10, MappingProxyType({HashAlg.SHA256: b"\x01" * 32}))
    assert next_step(state, reached, quoted, failed=False, more=True, pages=1) == "done"


# --- checkpoints --------------------------------------------------------------------------------


def _midway(built: BuiltLog) -> AttestationState:
    ends = _ends(built.binary)
    pcrs = MappingProxyType(_pcr10_after(built.binary, 1201))
    return AttestationState(b"ak", ReplayState(1201, ends[1201], pcrs), ClockInfo(5000, 3, 1, True))


def test_a_clean_state_round_trips_through_its_checkpoint(built: BuiltLog) -> None:
    state = _midway(built)
    wire = checkpoint_of(state)
    assert wire is not None
    again = resume(dict(wire), b"ak")
    assert again.replay == state.replay
    assert again.clock == state.clock
    assert checkpoint_of(again) == wire


@pytest.mark.parametrize(
    "broken", [{"log_failure": Failure("ima.pcr_mismatch", "x")}, {"clock": None}]
)
def test_a_broken_log_or_no_clock_is_never_checkpointed(
    built: BuiltLog, broken: dict[str, Any]
) -> None:
    assert checkpoint_of(dataclasses.replace(_midway(built), **broken)) is None


def test_the_first_finding_of_the_host_and_of_each_pod_rides_along(built: BuiltLog) -> None:
    """Sticky findings survive a resume: the host and the pod stay untrusted."""
    warning = Failure("ima.violation", "w", severity="warning", pod_uid="u1")
    host = (Failure("ima.policy.unknown_file", "host: /usr/bin/nc", path="/usr/bin/nc"),) * 2
    pods = {"u1": (warning, Failure("ima.policy.unknown_file", "nc", pod_uid="u1")), "u2": ()}
    state = dataclasses.replace(
        _midway(built), host_failures=host, pod_failures=MappingProxyType(pods)
    )
    wire = checkpoint_of(state)
    assert wire is not None
    assert wire["hostFailures"] == [
        {"id": "ima.policy.unknown_file", "message": "host: /usr/bin/nc", "path": "/usr/bin/nc"}
    ]
    assert wire["podFailures"] == [{"id": "ima.policy.unknown_file", "message": "nc", "uid": "u1"}]
    again = resume(dict(wire))
    assert again.host_failures == host[:1]
    assert dict(again.pod_failures) == {"u1": (pods["u1"][1],)}
    assert checkpoint_of(again) == wire


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"imaOffset": -1}, "imaOffset"),
        ({"imaIndex": True}, "imaIndex"),
        ({"imaIndex": 10**9}, "imaOffset"),
        ({"safe": 1}, "safe"),
        ({"pcr10": {}}, "pcr10"),
        ({"pcr10": {"md4": "00"}}, "pcr10.md4"),
        ({"pcr10": {"sha256": "00"}}, "pcr10.sha256"),
        ({"hostFailures": {}}, "hostFailures"),
        ({"podFailures": [{"id": "x", "message": "y"}]}, r"podFailures\[\]\.uid"),
        ({"podFailures": [{"id": 1, "uid": "u"}]}, r"podFailures\[\]\.id"),
    ],
)
def test_a_malformed_checkpoint_names_its_field(
    built: BuiltLog, change: dict[str, Any], field: str
) -> None:
    wire = {**(checkpoint_of(_midway(built)) or {}), **change}
    with pytest.raises(CheckpointError, match=rf"checkpoint\.{field}"):
        resume(wire)


def test_only_the_verifiers_own_signed_checkpoints_are_read(built: BuiltLog) -> None:
    ours, theirs = generate_private_key(), generate_private_key()
    wire = checkpoint_of(_midway(built))
    status = {"state": "Trusted", "checkpoint": wire}
    items: list[Mapping[str, Any]] = [
        {"metadata": {"name": "ours"}, "status": sign_status("ours", status, ours)},
        {"metadata": {"name": "theirs"}, "status": sign_status("theirs", status, theirs)},
        {"metadata": {"name": "unsigned"}, "status": status},
        {"metadata": {"name": "copied"}, "status": sign_status("ours", status, ours)},
        {"metadata": {"name": "none"}, "status": sign_status("none", {"state": "Trusted"}, ours)},
    ]
    forged = sign_status("edited", status, ours)
    forged["checkpoint"] = {**forged["checkpoint"], "imaOffset": 0}
    items.append({"metadata": {"name": "edited"}, "status": forged})
    found = read_checkpoints(items, public_keys_by_id([ours.public_key()]))
    assert found == {
        "ours": wire, "theirs": None, "unsigned": None, "copied": None, "none": None,
        "edited": None,
    }  # fmt: skip


def test_a_checkpoint_ahead_of_the_log_or_a_log_shifted_before_it_does_not_replay(
    built: BuiltLog,
) -> None:
    """Resumed at entry 1201: an empty answer (the log is shorter than the checkpoint says)
    replays only while PCR 10 has not moved since; a log with an early entry dropped puts other
    bytes at the checkpoint's offset, and the replay from its running PCR misses the quote."""
    state = _midway(built).replay
    assert not check_log(b"", state, dict(state.pcrs), nobody).replay.failures
    empty = check_log(b"", state, built.pcr10, nobody)
    assert [f.id for f in empty.replay.failures] == ["ima.pcr_mismatch"]
    ends = _ends(built.binary)
    shifted = built.binary[: ends[1]] + built.binary[ends[2] :]
    tail = shifted[state.next_offset :]
    try:
        failures = check_log(tail, state, built.pcr10, nobody).replay.failures
    except ImaParseError:
        return  # the bytes at the offset are not even an entry: ima.log_malformed
    assert [f.id for f in failures] == ["ima.pcr_mismatch"]

"""PCR 10 replay: agreement with evmctl, a quote lagging the log, and every way a log can lie."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

import pytest

from attestation.core.ima import ImaLog, parse_binary
from attestation.core.replay import (
    ReplayState,
    boot_aggregates,
    check_boot_aggregate,
    replay,
    verify_against_quote,
)
from attestation.core.types import HashAlg
from attestation.lab.ima_writer import Digest, ImaWriter

VECTORS = Path(__file__).parent / "vectors"
BANKS = (HashAlg.SHA1, HashAlg.SHA256)


def _log(tmp_path: Path, n: int = 12) -> tuple[ImaWriter, list[dict[HashAlg, bytes]]]:
    """A log of n entries and the PCR 10 values after each (what a quote at that moment saw)."""
    w = ImaWriter(tmp_path / "log.bin", banks=BANKS)
    after = []
    w.boot_aggregate({i: bytes(32) for i in range(8)})
    after.append(dict(w.pcr10))
    for i in range(1, n):
        if i == 5:
            w.violation("/tmp/open-for-write")
        else:
            w.measure(f"/usr/bin/tool{i}", f"content {i}".encode())
        after.append(dict(w.pcr10))
    return w, after


def _parse(w: ImaWriter) -> ImaLog:
    return parse_binary(w.binary())


def test_replay_agrees_with_evmctl() -> None:
    meta = json.loads((VECTORS / "ima_evm.json").read_text())
    log = parse_binary((VECTORS / "ima_evm.bin").read_bytes())
    quoted = {HashAlg(a): bytes.fromhex(v) for a, v in meta["evmctl_pcr10"].items()}
    result = verify_against_quote(ReplayState.initial(BANKS), log, quoted)
    assert result.failures == ()
    assert result.covered == len(log)
    assert result.state.next_offset == len((VECTORS / "ima_evm.bin").read_bytes())
    assert dict(result.state.pcrs) == quoted


def test_the_whole_log_is_covered_by_a_current_quote(tmp_path: Path) -> None:
    w, after = _log(tmp_path)
    result = verify_against_quote(ReplayState.initial(BANKS), _parse(w), after[-1])
    assert (result.covered, result.failures) == (len(w.entries), ())
    assert result.state.next_index == len(w.entries)


@pytest.mark.parametrize("lag", [1, 2, 5])
def test_log_ahead_of_the_quote_covers_a_prefix(tmp_path: Path, lag: int) -> None:
    """The kernel appends before it extends: the quote may miss the last entries."""
    w, after = _log(tmp_path)
    log = _parse(w)
    first = verify_against_quote(ReplayState.initial(BANKS), log, after[-1 - lag])
    assert first.failures == ()
    assert first.covered == len(w.entries) - lag
    assert first.state.next_offset == log.end_offset(first.covered)
    # next round: read from the state's offset, quote now current
    rest = parse_binary(
        w.binary(), offset=first.state.next_offset, start_index=first.state.next_index
    )
    second = verify_against_quote(first.state, rest, after[-1])
    assert (second.covered, second.failures) == (lag, ())
    assert second.state.next_index == len(w.entries)


def test_no_new_entries_and_an_unchanged_pcr_is_fine(tmp_path: Path) -> None:
    w, after = _log(tmp_path)
    done = verify_against_quote(ReplayState.initial(BANKS), _parse(w), after[-1]).state
    empty = parse_binary(w.binary(), offset=done.next_offset, start_index=done.next_index)
    result = verify_against_quote(done, empty, after[-1])
    assert (result.covered, result.failures, result.state) == (0, (), done)


def _tampered(w: ImaWriter, how: str) -> bytes:
    entries = parse_binary(w.binary())
    chunks = [
        w.binary()[entries.end_offset(i) : entries.end_offset(i + 1)] for i in range(len(w.entries))
    ]
    if how == "truncated":
        return b"".join(chunks[:-3])
    if how == "dropped":
        return b"".join(chunks[:4] + chunks[5:])
    if how == "reordered":
        return b"".join([*chunks[:3], chunks[4], chunks[3], *chunks[5:]])
    if how == "rewritten":
        return b"".join(chunks).replace(b"/usr/bin/tool7", b"/usr/bin/toolX")
    if how == "fake-violation":  # hide entry 6 as a violation: zero its column
        c = bytearray(chunks[6])
        c[4:24] = bytes(20)
        return b"".join([*chunks[:6], bytes(c), *chunks[7:]])
    raise AssertionError(how)


@pytest.mark.parametrize(
    "how", ["truncated", "dropped", "reordered", "rewritten", "fake-violation"]
)
def test_a_lying_log_fails_pcr_mismatch(tmp_path: Path, how: str) -> None:
    w, after = _log(tmp_path)
    state = ReplayState.initial(BANKS)
    result = verify_against_quote(state, parse_binary(_tampered(w, how)), after[-1])
    assert [f.id for f in result.failures] == ["ima.pcr_mismatch"]
    assert result.covered == 0
    assert result.state == state
    message = result.failures[0].message
    assert after[-1][HashAlg.SHA256].hex() in message
    assert "new)" in message


def test_banks_must_agree(tmp_path: Path) -> None:
    w, after = _log(tmp_path)
    quoted = {HashAlg.SHA256: after[-1][HashAlg.SHA256], HashAlg.SHA1: b"\x01" * 20}
    result = verify_against_quote(ReplayState.initial(BANKS), _parse(w), quoted)
    assert [f.id for f in result.failures] == ["ima.pcr_mismatch"]
    assert "(sha1)" in result.failures[0].message


def test_entries_for_another_pcr_do_not_extend_pcr10(tmp_path: Path) -> None:
    w, after = _log(tmp_path, 4)
    raw = bytearray(w.binary())
    log = parse_binary(bytes(raw))
    raw[log.end_offset(2)] = 11  # entry 2 now claims PCR 11: PCR 10 no longer matches
    moved = parse_binary(bytes(raw))
    assert dict(moved.skip) == {2: "pcr"}
    result = verify_against_quote(ReplayState.initial(BANKS), moved, after[-1])
    assert [f.id for f in result.failures] == ["ima.pcr_mismatch"]


def test_replay_of_sequences_of_entries_matches_the_columnar_path(tmp_path: Path) -> None:
    w, after = _log(tmp_path)
    log = _parse(w)
    as_list = list(log)
    a = verify_against_quote(ReplayState.initial(BANKS), as_list, after[-2])
    b = verify_against_quote(ReplayState.initial(BANKS), log, after[-2])
    assert (a.covered, a.failures, dict(a.state.pcrs)) == (
        b.covered,
        b.failures,
        dict(b.state.pcrs),
    )
    datas = [e.template_data for e in as_list]
    assert replay(HashAlg.SHA1, bytes(20), datas, {5: "violation"}) == after[-1][HashAlg.SHA1]


# --- boot_aggregate ----------------------------------------------------------------------------

PCRS = {i: hashlib.sha256(bytes([i])).digest() for i in range(10)}


def _boot_entry(tmp_path: Path, value: bytes, path: str = "boot_aggregate") -> ImaLog:
    w = ImaWriter(tmp_path / "b.bin")
    w.measure(path, Digest(value))
    return parse_binary(w.binary())


@pytest.mark.parametrize(
    ("value", "quoted", "allowed", "ok"),
    [
        (hashlib.sha256(b"".join(PCRS[i] for i in range(8))).digest(), PCRS, (), True),
        (hashlib.sha256(b"".join(PCRS[i] for i in range(10))).digest(), PCRS, (), True),
        (
            hashlib.sha256(b"".join(PCRS[i] for i in range(10))).digest(),
            {i: PCRS[i] for i in range(8)},  # 8, 9 not quoted: the 0-9 form cannot be checked
            (),
            False,
        ),
        (b"\x07" * 32, PCRS, (b"\x07" * 32,), True),
        (b"\x07" * 32, PCRS, (), False),
        (bytes(32), {}, (), False),
    ],
)
def test_boot_aggregate(
    tmp_path: Path, value: bytes, quoted: Mapping[int, bytes], allowed: tuple[bytes, ...], ok: bool
) -> None:
    entry = _boot_entry(tmp_path, value)[0]
    failure = check_boot_aggregate(entry, {HashAlg.SHA256: quoted}, allowed)
    assert (failure is None) == ok
    if failure is not None:
        assert failure.id == "ima.boot_aggregate_mismatch"
        assert value.hex() in failure.message


def test_boot_aggregate_must_come_first(tmp_path: Path) -> None:
    entry = _boot_entry(tmp_path, b"\x01" * 32, path="/usr/bin/bash")[0]
    failure = check_boot_aggregate(entry, {HashAlg.SHA256: PCRS})
    assert failure is not None
    assert "/usr/bin/bash" in failure.message


def test_boot_aggregates_need_pcrs_0_to_7() -> None:
    assert boot_aggregates(HashAlg.SHA1, {0: bytes(20)}) == ()
    assert len(boot_aggregates(HashAlg.SHA1, {i: bytes(20) for i in range(8)})) == 1

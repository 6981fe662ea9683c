"""The pure parts of the audit trail: record caps, what a torn line may be, signed checkpoints,
the published head, and whole-trail verification of tampered trails (built as bytes here)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from attestation.core.audit import (
    GENESIS,
    cap_record,
    encode_record,
    is_torn_record,
    line_hash,
    record_prefix,
)
from attestation.core.auditcheck import (
    HeadError,
    check_checkpoint,
    head_lease_name,
    make_checkpoint,
    parse_head,
)
from attestation.core.audittrail import verify_trail
from attestation.core.signing import generate_private_key, public_keys_by_id

KEY = generate_private_key()
KEYS = public_keys_by_id([KEY.public_key()])
OTHER = public_keys_by_id([generate_private_key().public_key()])


def _trail(kinds: str) -> tuple[list[bytes], dict[str, Any]]:
    """Lines for ``kinds`` (``v`` a verdict, ``c`` a checkpoint) and the last checkpoint."""
    lines: list[bytes] = []
    prev, head = GENESIS, {}
    for seq, kind in enumerate(kinds):
        if kind == "c":
            head = make_checkpoint(
                seq, prev, time=f"t{seq}", trail="T", identity="verifier-0", key=KEY
            )
            line = encode_record(seq, prev, head)
        else:
            line = encode_record(seq, prev, {"trail": "T", "kind": "verdict", "state": "Trusted"})
        lines.append(line)
        prev = line_hash(line[:-1])
    return lines, head


def _rechain(lines: list[bytes], start: int) -> list[bytes]:
    out = lines[:start]
    prev = line_hash(out[-1][:-1]) if out else GENESIS
    for line in lines[start:]:
        record = json.loads(line)
        out.append(encode_record(record["seq"], prev, record))
        prev = line_hash(out[-1][:-1])
    return out


def _ids(lines: list[bytes], head: dict[str, Any] | None = None, keys: Any = KEYS) -> list[str]:
    report = verify_trail([("audit.jsonl", b"".join(lines))], keys, head)
    return [f.id for f in report.findings]


def test_cap_record_cuts_strings_lists_and_objects_and_says_how_much() -> None:
    capped = cap_record({"kind": "verdict", "path": "/" * 5000, "list": list(range(100))})
    assert capped["path"] == "/" * 1024 + "…[3976 more characters]"
    assert capped["list"][-1] == "…[36 more items]"
    deep: Any = "x"
    for _ in range(20):
        deep = {"d": deep}
    assert "nested too deep" in json.dumps(cap_record({"deep": deep}))


def test_cap_record_summarises_a_record_still_too_big() -> None:
    big = {"time": "t", "kind": "verdict", "many": [{"k": "é" * 1000}] * 64}
    capped = cap_record(big, max_bytes=4096)
    assert set(capped) == {"time", "kind", "truncated"}
    assert capped["truncated"]["bytes"] > 4096
    assert len(encode_record(1, GENESIS, capped)) < 4096


def test_a_torn_line_is_a_strict_prefix_that_is_not_json() -> None:
    prev = "a" * 64
    whole = encode_record(7, prev, {"kind": "verdict", "state": "Untrusted"})
    assert is_torn_record(whole[:5], 7, prev)
    assert is_torn_record(whole[:60], 7, prev)
    assert is_torn_record(whole[:-10], 7, prev)
    assert not is_torn_record(whole[:-1], 7, prev)  # whole JSON without its newline
    assert not is_torn_record(whole[:60], 8, prev)  # not the record due there
    assert not is_torn_record(record_prefix(7, "b" * 64) + b",", 7, prev)
    assert not is_torn_record(b"", 7, prev)
    assert not is_torn_record(b"garbage", 7, prev)


def test_checkpoints_sign_the_head_they_follow() -> None:
    record = make_checkpoint(5, "c" * 64, time="t", trail="T", identity="v", key=KEY)
    assert check_checkpoint(record, KEYS) == ""
    assert "not among the keys" in check_checkpoint(record, OTHER)
    assert "does not verify" in check_checkpoint({**record, "prev": "d" * 64}, KEYS)
    assert "does not verify" in check_checkpoint({**record, "seq": 6}, KEYS)
    assert "no keyId" in check_checkpoint({"kind": "audit.checkpoint"}, KEYS)
    # what the trail stores and re-reads verifies the same
    assert check_checkpoint(json.loads(encode_record(5, "c" * 64, record)), KEYS) == ""


def test_parse_head_refuses_what_is_not_a_checkpoint() -> None:
    head = make_checkpoint(5, "c" * 64, time="t", trail="T", identity="v", key=KEY)
    assert parse_head(json.dumps(head)) == head
    for text, problem in (
        ("{", "not JSON"),
        ('{"kind":"verdict"}', "not a checkpoint"),
        (json.dumps({**head, "seq": -1}), "seq -1"),
        (json.dumps({**head, "prev": "zz"}), "prev"),
        (json.dumps({**head, "trail": None}), "trail"),
    ):
        with pytest.raises(HeadError, match=problem):
            parse_head(text)


def test_head_lease_names_are_dns_names() -> None:
    assert head_lease_name("verifier-0") == "trustgate-audit-verifier-0"
    odd = head_lease_name("Verifier_0/../x")
    assert odd.startswith("trustgate-audit-verifier-0-x-")
    assert odd != head_lease_name("verifier_0/../x")


def test_an_intact_trail_verifies_and_counts_what_no_checkpoint_covers() -> None:
    lines, head = _trail("vvcvvcvv")
    report = verify_trail([("a", b"".join(lines))], KEYS, head)
    assert report.ok
    assert (report.checkpoints, report.last_checkpoint, report.uncovered) == (2, 5, 2)


def test_a_rechained_edit_fails_the_checkpoint_after_it() -> None:
    lines, _ = _trail("vvcvvcv")
    lines[3] = lines[3].replace(b"Trusted", b"Untrusted")
    assert _ids(_rechain(lines, 3)) == ["audit.checkpoint_invalid"]
    assert _ids(_rechain(lines, 3), keys=None) == []  # without the key it cannot be seen


def test_an_edit_after_the_last_checkpoint_is_seen_only_by_the_chain() -> None:
    lines, head = _trail("vvcvv")
    lines[4] = lines[4].replace(b"Trusted", b"Untrusted")
    assert _ids(lines, head) == []  # the last record: nothing after it, nothing signed over it
    assert _ids(_rechain(lines, 3), head) == []  # the documented window


def test_a_dropped_tail_is_seen_against_the_published_head() -> None:
    lines, head = _trail("vvcvvcv")
    assert _ids(lines[:4], head) == ["audit.head_dropped"]
    assert _ids(lines[:4]) == []  # without the head a shorter trail is a valid trail


def test_a_rewritten_head_record_is_seen() -> None:
    lines, head = _trail("vvcvvc")
    stripped = _rechain([*lines[:3], encode_record(3, "", {"kind": "verdict"}), *lines[4:]], 3)
    assert "audit.head_rewritten" in _ids(stripped, head)


def test_a_torn_line_covered_by_the_head_was_cut_on_purpose() -> None:
    lines, head = _trail("vvcvvcv")
    cut = [*lines[:5], lines[5][:50]]  # the last checkpoint cut: the head covered it
    assert _ids(cut, head) == ["audit.torn_covered"]
    assert _ids([*lines, encode_record(7, line_hash(lines[-1][:-1]), {"k": 1})[:40]], head) == []


def test_junk_after_the_last_newline_is_not_a_crash() -> None:
    lines, head = _trail("vvc")
    assert _ids([*lines, b'{"seq":3}'], head) == ["audit.torn_invalid"]


def test_the_head_of_another_trail_and_a_forged_head_are_reported() -> None:
    lines, head = _trail("vvc")
    assert _ids(lines, {**head, "trail": "U"}) == [
        "audit.head_invalid",
        "audit.head_other_trail",
    ]
    assert _ids(lines, {**head, "seq": 9}) == ["audit.head_invalid", "audit.head_dropped"]


def test_rotated_files_chain_and_must_end_signed() -> None:
    lines, head = _trail("vvcvvcvv")
    files = [
        ("a.0", b"".join(lines[:3])),
        ("a.3", b"".join(lines[3:6])),
        ("a", b"".join(lines[6:])),
    ]
    assert verify_trail(files, KEYS, head).ok
    unsigned = [("a.0", b"".join(lines[:2])), ("a", b"".join(lines[2:]))]
    assert [f.id for f in verify_trail(unsigned, KEYS).findings] == ["audit.file_end_unsigned"]
    missing = [files[0], files[2]]
    assert [f.id for f in verify_trail(missing, KEYS).findings] == ["audit.chain_broken"]
    assert [f.id for f in verify_trail(files[1:], KEYS).findings] == ["audit.start_missing"]

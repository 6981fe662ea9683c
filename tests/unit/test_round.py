"""attest_round, pure, on a round recorded from a real swtpm (tests/support/make_tpm_vectors.py):
a log written like the kernel's, PCR 10 extended to match, quoted before and after an unknown
binary ran in the UPF pod. The live-TPM version of these is tests/tpm/test_round.py."""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import pytest

from attestation.core.evidence import Evidence
from attestation.core.fastpath import IMPLEMENTATIONS
from attestation.core.ima import parse_binary
from attestation.core.logcheck import CheckLog
from attestation.core.policy import RuntimePolicy, policy_from_document
from attestation.core.policy_gen import document
from attestation.core.types import Failure, HashAlg
from attestation.core.verdict import AttestationState, PodInfo, PolicySet, RoundResult, attest_round
from tests.unit.tpm_vectors import RecordedQuote, ak_public, quotes, round_quote, round_vectors

NODE = "worker-1"


def _policy(owner: str) -> RuntimePolicy:
    files = {p: bytes.fromhex(c) for p, c in round_vectors()["files"][owner].items()}
    digests = {p: [f"sha256:{hashlib.sha256(c).hexdigest()}"] for p, c in files.items()}
    return policy_from_document(
        document(owner, owner, digests, excludes=()), source=f"{owner}.yaml"
    )


def _pod(nf: str) -> PodInfo:
    p = round_vectors()["pods"][nf]
    return PodInfo(p["uid"], p["namespace"], p["name"], nf)


LOG = bytes.fromhex(round_vectors()["log"])
FIRST, FIRST_END = round_quote(0)
SECOND, SECOND_END = round_quote(1)
INTRUDER = round_vectors()["intruder"]["path"]
UPF, SMF = _pod("upf"), _pod("smf")
PODS = {UPF.uid: UPF, SMF.uid: SMF}
POLICIES = PolicySet({"upf": _policy("upf"), "smf": _policy("smf")}, _policy("host"))
START = AttestationState(ak_public=FIRST.ak_public)

CHECKS = pytest.mark.parametrize("check_log", IMPLEMENTATIONS.values(), ids=IMPLEMENTATIONS.keys())


def _evidence(q: RecordedQuote, log: bytes, offset: int = 0) -> Evidence:
    return Evidence(q.attest, q.signature, q.pcr_values, offset, log)


def _attest(
    state: AttestationState,
    q: RecordedQuote,
    log: bytes,
    *,
    nonce: bytes | None = None,
    offset: int | None = None,
    pods: dict[str, PodInfo] | None = None,
    check_log: CheckLog = IMPLEMENTATIONS["pure"],
) -> RoundResult:
    evidence = _evidence(q, log, state.ima_offset if offset is None else offset)
    return attest_round(
        NODE,
        state,
        evidence,
        q.nonce if nonce is None else nonce,
        POLICIES,
        PODS if pods is None else pods,
        check_log=check_log,
    )


def _ids(failures: tuple[Failure, ...]) -> list[str]:
    return [f.id for f in failures]


def _first_round(check_log: CheckLog = IMPLEMENTATIONS["pure"]) -> RoundResult:
    return _attest(START, FIRST, LOG[:FIRST_END], check_log=check_log)


@CHECKS
def test_a_clean_log_under_a_good_quote_is_trusted(check_log: CheckLog) -> None:
    result = _first_round(check_log)
    verdict = result.verdict
    assert verdict.trusted, verdict.failures
    assert verdict.failures == ()
    assert not result.rebooted
    assert [(p.uid, p.trusted, p.measurements) for p in verdict.pods] == [
        (UPF.uid, True, 2),
        (SMF.uid, True, 1),
    ]
    assert verdict.measurements == 6  # boot_aggregate, 2 host files, 3 pod files
    assert result.state.ima_offset == FIRST_END
    assert verdict.quote_digest == hashlib.sha256(FIRST.attest).hexdigest()


@CHECKS
def test_the_next_round_reads_only_new_entries_and_marks_only_the_divergent_pod(
    check_log: CheckLog,
) -> None:
    first = _first_round(check_log)
    second = _attest(first.state, SECOND, LOG[FIRST_END:SECOND_END], check_log=check_log)
    verdict = second.verdict
    assert verdict.trusted  # the node itself is fine
    upf, smf = verdict.pod(UPF.uid), verdict.pod(SMF.uid)
    assert upf is not None
    assert smf is not None
    assert smf.trusted
    assert not upf.trusted
    assert [(f.id, f.path, f.pod_uid) for f in upf.failures] == [
        ("ima.policy.unknown_file", INTRUDER, UPF.uid)
    ]
    assert second.state.ima_offset == SECOND_END
    assert verdict.measurements == 7


def test_a_pods_failure_sticks_after_a_clean_round() -> None:
    second = _attest(_first_round().state, SECOND, LOG[FIRST_END:SECOND_END])
    third = _attest(second.state, SECOND, b"")
    upf = third.verdict.pod(UPF.uid)
    assert upf is not None
    assert _ids(upf.failures) == ["ima.policy.unknown_file"]
    # ... until the pod is gone from the node
    gone = _attest(second.state, SECOND, b"", pods={SMF.uid: SMF})
    assert gone.verdict.trusted
    assert [p.uid for p in gone.verdict.pods] == [SMF.uid]


def test_a_log_ahead_of_the_quote_is_judged_only_as_far_as_the_quote_covers() -> None:
    # The kernel appends before it extends: the agent read one entry more than PCR 10 covers.
    result = _attest(START, FIRST, LOG)
    assert result.verdict.trusted, result.verdict.failures
    assert result.verdict.measurements == 6
    assert result.state.ima_offset == FIRST_END


def test_a_pod_without_a_policy_is_counted_not_judged() -> None:
    amf = dataclasses.replace(UPF, network_function="amf")
    result = _attest(START, SECOND, LOG, pods={amf.uid: amf, SMF.uid: SMF})
    pod = result.verdict.pod(amf.uid)
    assert pod is not None
    assert pod.trusted
    assert pod.measurements == 3


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"nonce": b"another nonce"}, ["quote.nonce_mismatch"]),
        ({"ak": "rsa"}, ["quote.signature_invalid"]),
        ({"signature": "flip"}, ["quote.signature_invalid"]),
        ({"pcr10": "other"}, ["quote.pcr_digest_mismatch"]),
    ],
    ids=["wrong-nonce", "foreign-ak", "bad-signature", "pcr-values-not-quoted"],
)
def test_a_bad_quote_fails_the_round_only(change: dict[str, Any], expected: list[str]) -> None:
    q = FIRST
    state = START
    if "ak" in change:
        state = dataclasses.replace(START, ak_public=ak_public(change["ak"]))
    if "signature" in change:
        q = dataclasses.replace(q, signature=q.signature[:-1] + bytes([q.signature[-1] ^ 1]))
    if "pcr10" in change:
        pcrs = {bank: dict(values) for bank, values in q.pcr_values.items()}
        pcrs[HashAlg.SHA256][10] = bytes(32)
        q = dataclasses.replace(q, pcr_values=pcrs)
    result = _attest(state, q, LOG[:FIRST_END], nonce=change.get("nonce"))
    assert not result.verdict.trusted
    assert _ids(result.verdict.failures) == expected
    assert result.state == state  # nothing learnt from an unproven round
    if state is START:
        assert _attest(result.state, FIRST, LOG[:FIRST_END]).verdict.trusted


def _split(log: bytes) -> list[bytes]:
    """The log's entries (where each ends, from the parser: the replay is under test here)."""
    ends = parse_binary(log).ends
    return [log[start:end] for start, end in zip((0, *ends), ends, strict=False)]


def _tamper(how: str, entries: list[bytes]) -> list[bytes]:
    """The log as an attacker would like it read: shorter, reordered, rewritten."""
    out = list(entries)
    if how == "drop-last":
        del out[-1]
    elif how == "drop-middle":
        del out[2]
    elif how == "reorder":
        out[1], out[2] = out[2], out[1]
    else:
        out[3] = out[3].replace(b"/usr/bin/upfd", b"/usr/bin/upfX")
    return out


@pytest.mark.parametrize("how", ["drop-last", "reorder", "rewrite", "drop-middle"])
def test_a_tampered_log_no_longer_reaches_the_quoted_pcr_and_stays_broken(how: str) -> None:
    entries = _split(LOG[:FIRST_END])
    assert len(entries) == 6
    assert b"".join(entries) == LOG[:FIRST_END]
    forged = b"".join(_tamper(how, entries))
    result = _attest(START, FIRST, forged)
    assert not result.verdict.trusted
    assert _ids(result.verdict.failures) == ["ima.pcr_mismatch"]
    # the chain cannot be re-joined without a reboot: the honest log no longer helps
    again = _attest(result.state, SECOND, LOG[result.state.ima_offset : SECOND_END])
    assert _ids(again.verdict.failures) == ["ima.pcr_mismatch"]


def test_evidence_from_another_offset_is_a_bad_response() -> None:
    result = _attest(START, FIRST, LOG[:FIRST_END], offset=7)
    assert _ids(result.verdict.failures) == ["agent.bad_response"]
    assert result.state.ima_offset == 0


def test_a_log_that_does_not_parse_breaks_the_node() -> None:
    result = _attest(START, FIRST, b"\x0a\x00\x00\x00" + b"\xff" * 60)
    assert _ids(result.verdict.failures) == ["ima.log_malformed"]
    assert result.state.log_failure is not None


def test_a_reboot_asks_again_from_the_start_of_the_new_log() -> None:
    after_reboot = quotes()[2]  # the same TPM and AK, restarted after the round was recorded
    assert after_reboot.ak == FIRST.ak
    broken = _attest(START, FIRST, b"".join(_tamper("reorder", _split(LOG[:FIRST_END]))))
    assert broken.state.log_failure is not None
    result = _attest(broken.state, after_reboot, b"")
    assert result.rebooted
    assert _ids(result.verdict.failures) == ["node.rebooted"]
    assert result.verdict.trusted  # a warning: the next round judges the new log
    assert result.state.ima_offset == 0
    assert result.state.log_failure is None
    assert result.state.replay.next_index == 0


# -- whose entries: a pod uid the node does not have is the host's ---------------------------------

MIRROR = "6f0c8a52-9d4e-4b1a-8c3f-2e7d5a9b1c04"


@CHECKS
def test_a_pod_uid_no_pod_of_the_node_has_is_judged_as_the_host(check_log: CheckLog) -> None:
    """Root made the UPF's cgroup, or the uid is another node's pod: the host policy judges it."""
    result = _attest(START, SECOND, LOG, pods={SMF.uid: SMF}, check_log=check_log)
    verdict = result.verdict
    assert not verdict.trusted
    assert {f.pod_uid for f in verdict.failures} == {None}
    assert INTRUDER in {f.path for f in verdict.failures}
    assert all(
        f.message.startswith(f"host: pod {UPF.uid}") and "no pod of this node" in f.message
        for f in verdict.failures
    ), verdict.failures


def test_a_pod_of_the_node_that_is_no_nf_is_counted_not_judged() -> None:
    result = attest_round(
        NODE, START, _evidence(SECOND, LOG), SECOND.nonce, POLICIES, {SMF.uid: SMF},
        unjudged_pods=frozenset({UPF.uid}),
    )  # fmt: skip
    assert result.verdict.trusted, result.verdict.failures
    assert [p.uid for p in result.verdict.pods] == [SMF.uid]


@CHECKS
def test_a_first_read_may_count_unknown_pod_uids_instead(check_log: CheckLog) -> None:
    """``judge_unknown_pods=False`` (a verifier's first read of a log it did not watch being
    written): the same unknown uid is counted like a non-NF pod's, and nothing fails."""
    result = attest_round(
        NODE, START, _evidence(SECOND, LOG), SECOND.nonce, POLICIES, {SMF.uid: SMF},
        check_log=check_log, judge_unknown_pods=False,
    )  # fmt: skip
    assert result.verdict.trusted, result.verdict.failures
    assert result.verdict.failures == ()


@CHECKS
def test_a_static_pods_entries_are_its_mirror_pods(check_log: CheckLog) -> None:
    """The cgroup carries the static pod's uid; the API's mirror pod has its own."""
    mirror = dataclasses.replace(UPF, uid=MIRROR, cgroup_uid=UPF.uid)
    result = _attest(START, SECOND, LOG, pods={MIRROR: mirror, SMF.uid: SMF}, check_log=check_log)
    verdict = result.verdict
    assert verdict.trusted, verdict.failures
    pod = verdict.pod(MIRROR)
    assert pod is not None
    assert [(f.id, f.path, f.pod_uid) for f in pod.failures] == [
        ("ima.policy.unknown_file", INTRUDER, MIRROR)
    ]
    assert pod.measurements == 3


def test_a_mirror_claim_never_takes_a_real_pods_uid_and_two_claims_are_nobodys() -> None:
    # anyone who may create a pod can write the mirror annotation; nobody chooses a pod's uid
    smf_claim = dataclasses.replace(SMF, uid=MIRROR, cgroup_uid=SMF.uid, network_function="upf")
    taken = _attest(START, SECOND, LOG, pods={**PODS, MIRROR: smf_claim})
    assert taken.verdict.pod(SMF.uid).measurements == 1  # type: ignore[union-attr]
    assert taken.verdict.pod(MIRROR).measurements == 0  # type: ignore[union-attr]
    twice = {
        uid: dataclasses.replace(UPF, uid=uid, cgroup_uid=UPF.uid)
        for uid in (MIRROR, MIRROR.replace("6f", "7f"))
    }
    result = _attest(START, SECOND, LOG, pods={**twice, SMF.uid: SMF})
    assert not result.verdict.trusted
    assert {f.pod_uid for f in result.verdict.failures} == {None}

"""The round's log check in both implementations: the pure reference and the native one (the C
extension) must give the same LogCheck -- replay state, covered count and bytes, first entry,
failures with their messages in order, measurement counts -- or raise the same ImaParseError, for
valid logs, logs that lie to the quote, and arbitrary or mutated bytes."""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import json
import random
import tracemalloc
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attestation.core import fastpath
from attestation.core.ima import ImaParseError, parse_binary
from attestation.core.logcheck import CheckLog, LogCheck, PolicyFor
from attestation.core.policy import RuntimePolicy, policy_from_document
from attestation.core.replay import ReplayState
from attestation.core.types import HashAlg, PodRef
from attestation.lab.ima_writer import Digest, ImaWriter, build_log, systemd_pod_cgroup

VECTORS = Path(__file__).parent / "vectors"
BANKS = (HashAlg.SHA1, HashAlg.SHA256)
UID = "4f2d1c3b-5a6e-47f8-9b0c-1d2e3f405162"
OTHER = "11111111-2222-3333-4444-555555555555"
POD_CG = systemd_pod_cgroup(UID, "cd" * 32)
OTHER_CG = systemd_pod_cgroup(OTHER, "ef" * 32)
HOST_CG = "/system.slice/containerd.service"
PURE = fastpath.IMPLEMENTATIONS["pure"]
NATIVE = fastpath.IMPLEMENTATIONS.get("native")
needs_native = pytest.mark.skipif(NATIVE is None, reason="attestation.core._imafast was not built")


@pytest.fixture(params=["pure", pytest.param("native", marks=needs_native)])
def check(request: pytest.FixtureRequest) -> CheckLog:
    """Each scenario runs under both implementations and is compared with the reference."""
    impl = fastpath.IMPLEMENTATIONS[request.param]

    def checked(
        buf: bytes,
        state: ReplayState,
        quoted_pcr10: Mapping[HashAlg, bytes],
        policy_for: PolicyFor,
        *,
        column_size: int = 20,
    ) -> LogCheck:
        got = impl(buf, state, quoted_pcr10, policy_for, column_size=column_size)
        want = PURE(buf, state, quoted_pcr10, policy_for, column_size=column_size)
        assert _facts(got) == _facts(want)
        return got

    return checked


def _facts(result: LogCheck) -> tuple[Any, ...]:
    """Everything a LogCheck says, with mapping order made visible."""
    return (
        result,
        list(result.replay.state.pcrs.items()),
        list(result.judgement.measurements.items()),
    )


def _policy(name: str, files: Mapping[str, bytes | Digest], **spec: Any) -> RuntimePolicy:
    digests = {
        path: ["sha256:" + (c.value if isinstance(c, Digest) else hashlib.sha256(c).digest()).hex()]
        for path, c in files.items()
    }
    doc = {
        "apiVersion": "trustgate.io/v1alpha1",
        "kind": "RuntimePolicy",
        "metadata": {"name": name},
        "spec": {"networkFunction": name, "digests": digests, "excludes": ["^/tmp/"], **spec},
    }
    return policy_from_document(doc, source=f"{name}.yaml")


UPF = _policy("upf", {"/usr/bin/upf": b"upf v1", "/usr/lib/libc.so.6": b"libc"})
HOST = _policy("host", {"/usr/bin/containerd": b"containerd", "/usr/sbin/sshd": b"sshd"})


def policy_for(pod: PodRef | None) -> RuntimePolicy | None:
    if pod is None:
        return HOST
    return UPF if pod.uid == UID else None  # other pods: not network functions


def nobody(_pod: PodRef | None) -> RuntimePolicy | None:
    return None


# --- replay --------------------------------------------------------------------------------------


def _log(tmp_path: Path, n: int = 12) -> tuple[ImaWriter, list[dict[HashAlg, bytes]]]:
    """n entries and the PCR 10 values after each (what a quote at that moment saw)."""
    w = ImaWriter(tmp_path / "log.bin", banks=BANKS, template="ima-cgpath")
    w.boot_aggregate({i: bytes(32) for i in range(8)})
    after = [dict(w.pcr10)]
    for i in range(1, n):
        if i == 5:
            w.violation("/tmp/open-for-write", cgroup_path=POD_CG)
        else:
            w.measure(f"/usr/bin/tool{i}", f"content {i}".encode(), cgroup_path=HOST_CG)
        after.append(dict(w.pcr10))
    return w, after


def test_evmctl_vector(check: CheckLog) -> None:
    meta = json.loads((VECTORS / "ima_evm.json").read_text())
    raw = (VECTORS / "ima_evm.bin").read_bytes()
    quoted = {HashAlg(a): bytes.fromhex(v) for a, v in meta["evmctl_pcr10"].items()}
    result = check(raw, ReplayState.initial(BANKS), quoted, policy_for)
    assert (result.replay.failures, result.replay.covered) == ((), meta["entries"])
    assert result.covered_bytes == len(raw)
    assert result.first is not None
    assert result.first.path == "boot_aggregate"


@pytest.mark.parametrize("lag", [0, 1, 2, 5])
@pytest.mark.parametrize("column", [HashAlg.SHA1, HashAlg.SHA256])
def test_a_lagging_quote_covers_a_prefix_and_the_next_round_the_rest(
    check: CheckLog, tmp_path: Path, lag: int, column: HashAlg
) -> None:
    w, after = _log(tmp_path)
    raw = w.binary(column)
    size = column.digest_size
    first = check(raw, ReplayState.initial(BANKS), after[-1 - lag], policy_for, column_size=size)
    assert (first.replay.failures, first.replay.covered) == ((), len(w.entries) - lag)
    state = dataclasses.replace(first.replay.state, next_offset=first.covered_bytes)
    second = check(raw[first.covered_bytes :], state, after[-1], policy_for, column_size=size)
    assert (second.replay.failures, second.replay.covered) == ((), lag)
    assert second.replay.state.next_index == len(w.entries)
    assert (second.first is None) == (lag == 0)


def _chunks(raw: bytes) -> list[bytes]:
    log = parse_binary(raw)
    return [raw[log.end_offset(i) : log.end_offset(i + 1)] for i in range(len(log))]


@pytest.mark.parametrize(
    "how", ["truncated", "dropped", "reordered", "rewritten", "fake-violation", "other-pcr"]
)
def test_a_lying_log_fails_pcr_mismatch(check: CheckLog, tmp_path: Path, how: str) -> None:
    w, after = _log(tmp_path)
    c = _chunks(w.binary())
    if how == "truncated":
        raw = b"".join(c[:-3])
    elif how == "dropped":
        raw = b"".join(c[:4] + c[5:])
    elif how == "reordered":
        raw = b"".join([*c[:3], c[4], c[3], *c[5:]])
    elif how == "rewritten":
        raw = b"".join(c).replace(b"/usr/bin/tool7", b"/usr/bin/toolX")
    elif how == "fake-violation":
        raw = b"".join([*c[:6], c[6][:4] + bytes(20) + c[6][24:], *c[7:]])
    else:
        raw = b"".join([*c[:2], b"\x0b" + c[2][1:], *c[3:]])
    result = check(raw, ReplayState.initial(BANKS), after[-1], policy_for)
    assert [f.id for f in result.replay.failures] == ["ima.pcr_mismatch"]
    assert result.judgement.failures == ()


def test_every_quoted_bank_must_agree(check: CheckLog, tmp_path: Path) -> None:
    w, after = _log(tmp_path)
    quoted = {HashAlg.SHA256: after[-1][HashAlg.SHA256], HashAlg.SHA1: b"\x01" * 20}
    result = check(w.binary(), ReplayState.initial(BANKS), quoted, policy_for)
    assert [f.id for f in result.replay.failures] == ["ima.pcr_mismatch"]
    assert "(sha1)" in result.replay.failures[0].message


@pytest.mark.parametrize("banks", [(), (HashAlg.SHA1,), (HashAlg.SHA384, HashAlg.SHA512)])
def test_quoted_banks(check: CheckLog, tmp_path: Path, banks: tuple[HashAlg, ...]) -> None:
    w = ImaWriter(tmp_path / "b.bin", banks=banks)
    w.measure("/usr/bin/containerd", b"containerd")
    w.measure("/usr/bin/evil", b"evil")
    result = check(w.binary(), ReplayState.initial(banks), w.pcr10, policy_for)
    assert result.replay.covered == (2 if banks else 0)


def test_no_new_entries(check: CheckLog, tmp_path: Path) -> None:
    w, after = _log(tmp_path)
    done = check(w.binary(), ReplayState.initial(BANKS), after[-1], policy_for).replay.state
    result = check(b"", done, after[-1], policy_for)
    assert (result.replay.covered, result.replay.state, result.first) == (0, done, None)


# --- judging -------------------------------------------------------------------------------------


def _judged_log(tmp_path: Path) -> ImaWriter:
    w = ImaWriter(tmp_path / "l.bin", banks=(HashAlg.SHA256,), template="ima-cgpath")
    w.boot_aggregate({i: bytes(32) for i in range(8)})
    w.measure("/usr/bin/upf", b"upf v1", cgroup_path=POD_CG)
    w.measure("/usr/bin/upf", b"upf v2", cgroup_path=POD_CG)
    w.measure("/usr/sbin/sshd", b"sshd", cgroup_path="/system.slice/ssh.service")
    w.measure("/usr/bin/miner", b"x", cgroup_path="/system.slice/ssh.service")
    w.measure("/usr/bin/anything", b"x", cgroup_path=OTHER_CG)
    w.violation("/usr/bin/upf", cgroup_path=POD_CG)
    w.measure("/tmp/scratch", b"x", cgroup_path=POD_CG)
    w.measure("/usr/bin/ng-host", b"x", template="ima-ng")
    w.measure("/usr/lib/libc.so.6", b"libc", cgroup_path=POD_CG)
    w.measure("/usr/bin/sig", b"s", template="ima-sig", signature=b"\x03\x02" + b"\x00" * 7)
    w.measure("/usr/bin/ünïcode", Digest(b"\x11" * 32), cgroup_path="/")
    w.measure("/usr/bin/upf", b"upf v1", cgroup_path="")
    return w


def test_attributes_and_judges_like_evaluate_log(check: CheckLog, tmp_path: Path) -> None:
    w = _judged_log(tmp_path)
    result = check(w.binary(), ReplayState.initial((HashAlg.SHA256,)), w.pcr10, policy_for)
    assert [(f.id, f.pod_uid, f.path) for f in result.judgement.failures] == [
        ("ima.policy.digest_mismatch", UID, "/usr/bin/upf"),
        ("ima.policy.unknown_file", None, "/usr/bin/miner"),
        ("ima.violation", UID, "/usr/bin/upf"),
        ("ima.policy.unknown_file", None, "/usr/bin/ng-host"),
        ("ima.policy.unknown_file", None, "/usr/bin/sig"),
        ("ima.policy.unknown_file", None, "/usr/bin/ünïcode"),
        ("ima.policy.unknown_file", None, "/usr/bin/upf"),
    ]
    assert dict(result.judgement.measurements) == {None: 7, UID: 5, OTHER: 1}


def test_owners_without_a_policy_are_counted_not_judged(check: CheckLog, tmp_path: Path) -> None:
    w = _judged_log(tmp_path)
    result = check(w.binary(), ReplayState.initial((HashAlg.SHA256,)), w.pcr10, nobody)
    assert result.judgement.failures == ()
    assert sum(result.judgement.measurements.values()) == len(w.entries)


def test_ima_signatures_are_judged_by_the_reference(check: CheckLog, tmp_path: Path) -> None:
    keys = [(VECTORS / f"ima_{k}.crt").read_text() for k in ("rsa", "ec")]
    signed = _policy("host", {}, keyrings={"vendor": keys})
    w = ImaWriter(tmp_path / "s.bin", banks=(HashAlg.SHA256,), template="ima-sig")
    upf_sig = (VECTORS / "ima_upf.sig").read_bytes()
    w.measure("/usr/bin/upf", b"upf binary v1\n", signature=upf_sig)
    w.measure("/usr/bin/upf", b"tampered\n", signature=upf_sig)
    result = check(w.binary(), ReplayState.initial((HashAlg.SHA256,)), w.pcr10, lambda _: signed)
    assert [f.id for f in result.judgement.failures] == ["ima.policy.signature_invalid"]


class _Refused(Exception):
    pass


def test_an_error_in_policy_for_propagates(check: CheckLog, tmp_path: Path) -> None:
    def refuse(_pod: PodRef | None) -> RuntimePolicy | None:
        raise _Refused

    w = _judged_log(tmp_path)
    with pytest.raises(_Refused):
        check(w.binary(), ReplayState.initial((HashAlg.SHA256,)), w.pcr10, refuse)


@needs_native
def test_the_scan_keeps_nothing_between_calls() -> None:
    """Refcounts and buffers: repeated scans (answered, declined, failing) leave no memory."""
    from attestation.core import _imafast

    built = build_log(200, template="ima-cgpath", banks=BANKS, pod_share=0.3)
    spec = tuple((alg.value, bytes(alg.digest_size), built.pcr10[alg]) for alg in BANKS[::-1])
    half = {p.encode(): frozenset([d]) for i, (p, d) in enumerate(built.digests.items()) if i % 2}

    def refuse(_cg: bytes | None) -> None:
        raise _Refused

    def scans() -> None:
        assert _imafast.scan(built.binary, 32, spec, lambda _cg: half) is not None
        wrong_sha1 = (*spec[:1], ("sha1", bytes(20), b""))
        assert _imafast.scan(built.binary, 32, wrong_sha1, lambda _cg: half) is None
        assert _imafast.scan(built.binary[:-9] + b"\xff" * 9, 32, spec, lambda _cg: half) is None
        with pytest.raises(_Refused):
            _imafast.scan(built.binary, 32, spec, refuse)

    scans()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(100):
            scans()
        gc.collect()
        assert tracemalloc.get_traced_memory()[0] - before < 4096
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("template", ["ima-ng", "ima-cgpath"])
def test_benchmark_logs_take_the_native_path(template: str) -> None:
    """The generated logs are what the C scan is for: it must answer them, not decline."""
    if NATIVE is None:
        pytest.skip("attestation.core._imafast was not built")
    from attestation.core import _imafast

    built = build_log(500, template=template, banks=BANKS, pod_share=0.3)
    spec = tuple((alg.value, bytes(alg.digest_size), built.pcr10[alg]) for alg in BANKS[::-1])
    scanned = _imafast.scan(built.binary, 32, spec, lambda _cg: None)
    assert scanned is not None
    assert scanned[0] == 501


# --- arbitrary and mutated logs ------------------------------------------------------------------


def _same(
    raw: bytes, quoted: Mapping[HashAlg, bytes], column: int, judge: PolicyFor = policy_for
) -> None:
    def outcome(impl: CheckLog) -> object:
        try:
            result = impl(raw, ReplayState.initial(BANKS), quoted, judge, column_size=column)
        except ImaParseError as e:
            return ("ImaParseError", e.index, e.offset, str(e))
        return _facts(result)

    assert NATIVE is not None
    assert outcome(NATIVE) == outcome(PURE)


@needs_native
@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=800), st.sampled_from([20, 32]))
def test_arbitrary_bytes_same_outcome(raw: bytes, column: int) -> None:
    _same(raw, {HashAlg.SHA256: bytes(32)}, column)


_paths = st.text(
    st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00\n"),
    min_size=1,
    max_size=30,
)
_item = st.tuples(
    _paths,
    st.binary(max_size=6),
    st.sampled_from(["ima-ng", "ima-cgpath", "ima-cgpath", "ima-sig", "violation"]),
    st.sampled_from([POD_CG, OTHER_CG, HOST_CG, "", "/"]),
)
_mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10_000), st.integers(1, 255)),
    st.tuples(st.just("cut"), st.integers(0, 10_000), st.just(0)),
    st.tuples(st.just("swap"), st.integers(0, 100), st.integers(0, 100)),
    st.tuples(st.just("drop"), st.integers(0, 100), st.just(0)),
)


@needs_native
@settings(
    max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(_item, min_size=1, max_size=10),
    st.lists(_mutation, max_size=3),
    st.integers(0, 3),
    st.sampled_from([HashAlg.SHA1, HashAlg.SHA256]),
    st.randoms(use_true_random=False),
)
def test_written_then_mutated_logs_same_outcome(
    tmp_path_factory: pytest.TempPathFactory,
    items: list[tuple[str, bytes, str, str]],
    mutations: list[tuple[str, int, int]],
    lag: int,
    column: HashAlg,
    rng: random.Random,
) -> None:
    w = ImaWriter(tmp_path_factory.mktemp("h") / "log.bin", banks=BANKS, template="ima-cgpath")
    after = [dict(w.pcr10)]
    known = {}
    for path, content, kind, cg in items:
        if kind == "violation":
            w.violation("/" + path, cgroup_path=cg)
        else:
            w.measure("/" + path, content, cgroup_path=cg, template=kind)
            if rng.random() < 0.7:  # most files are in the policy
                known["/" + path] = content
        after.append(dict(w.pcr10))
    upf = _policy("upf", known)
    host = _policy("host", {p: c for p, c in known.items() if rng.random() < 0.8})

    def judge(pod: PodRef | None) -> RuntimePolicy | None:
        if pod is None:
            return host
        return upf if pod.uid == UID else None

    raw = w.binary(column)
    quoted = after[max(0, len(after) - 1 - lag)]
    _same(raw, quoted, column.digest_size, judge)
    chunks = _chunks_or_none(raw, column.digest_size)
    mutated = bytearray(raw)
    for how, a, b in mutations:
        if how == "flip":
            mutated[a % len(mutated)] ^= b
        elif how == "cut":
            mutated = mutated[: a % (len(mutated) + 1)]
        elif chunks and how == "swap":
            i, j = a % len(chunks), b % len(chunks)
            chunks[i], chunks[j] = chunks[j], chunks[i]
            mutated = bytearray(b"".join(chunks))
        elif chunks and how == "drop" and len(chunks) > 1:
            del chunks[a % len(chunks)]
            mutated = bytearray(b"".join(chunks))
        if not mutated:
            break
    _same(bytes(mutated), quoted, column.digest_size, judge)


def _chunks_or_none(raw: bytes, column: int) -> list[bytes] | None:
    try:
        log = parse_binary(raw, column_size=column)
    except ImaParseError:
        return None
    return [raw[log.end_offset(i) : log.end_offset(i + 1)] for i in range(len(log))]

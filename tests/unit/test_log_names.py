"""Names are bytes: any bytes in the path and cgroup-path fields of a well-formed entry (binary or
ASCII list; ima-ng, ima-sig, ima-cgpath) are judged like any other entry and never fail the log,
in the pure reference and the native check alike; policies can name such files; what people read
shows them escaped. And the template-hash column must be H(template data)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attestation.core import fastpath
from attestation.core.ima import name_bytes, name_text, parse_ascii, parse_binary, shown
from attestation.core.logcheck import CheckLog, LogCheck
from attestation.core.policy import PolicyError, RuntimePolicy, evaluate_log, policy_from_document
from attestation.core.replay import ReplayState, template_hash_mismatch, verify_against_quote
from attestation.core.types import Failure, HashAlg, PodRef
from attestation.lab.ima_writer import ImaWriter, systemd_pod_cgroup

UID = "4f2d1c3b-5a6e-47f8-9b0c-1d2e3f405162"
POD_CG = systemd_pod_cgroup(UID, "cd" * 32).encode()
BANKS = (HashAlg.SHA1, HashAlg.SHA256)
PURE = fastpath.IMPLEMENTATIONS["pure"]
NATIVE = fastpath.IMPLEMENTATIONS.get("native")
needs_native = pytest.mark.skipif(NATIVE is None, reason="attestation.core._imafast not built")
IMPLS = [pytest.param(PURE, id="pure"), pytest.param(NATIVE, id="native", marks=needs_native)]


def _policy(name: str, files: Mapping[str, bytes], excludes: tuple[str, ...] = ()) -> RuntimePolicy:
    doc = {
        "apiVersion": "trustgate.io/v1alpha1",
        "kind": "RuntimePolicy",
        "metadata": {"name": name},
        "spec": {
            "networkFunction": name,
            "digests": {p: ["sha256:" + hashlib.sha256(c).hexdigest()] for p, c in files.items()},
            "excludes": list(excludes),
        },
    }
    return policy_from_document(doc, source=f"{name}.yaml")


@pytest.mark.parametrize(
    ("raw", "text", "display"),
    [
        (b"/usr/bin/upf", "/usr/bin/upf", "/usr/bin/upf"),
        (b"/tmp/\xff", "/tmp/\udcff", "/tmp/\\xff"),
        (b"/tmp/\xc3(", "/tmp/\udcc3(", "/tmp/\\xc3("),
        (b"/tmp/caf\xc3\xa9", "/tmp/café", "/tmp/café"),
        (b"/tmp/a\nb\x1b[2J", "/tmp/a\nb\x1b[2J", "/tmp/a\\x0ab\\x1b[2J"),
        (b"/run/dev-disk-by\\x2duuid", "/run/dev-disk-by\\x2duuid", "/run/dev-disk-by\\x2duuid"),
    ],
)
def test_names_round_trip_and_are_shown_escaped(raw: bytes, text: str, display: str) -> None:
    assert name_text(raw) == text
    assert name_bytes(text) == raw
    assert shown(text) == display
    assert shown(text).encode("utf-8").decode("utf-8") == display  # valid UTF-8, one line


def test_a_policy_names_a_non_utf8_file_with_surrogate_escapes() -> None:
    policy = _policy("upf", {"/opt/\udcff": b"x"})
    assert policy.by_raw_path[b"/opt/\xff"]
    with pytest.raises(PolicyError, match=r"spec.digests\[.*\]: holds a lone surrogate"):
        _policy("upf", {"/opt/\ud800": b"x"})


def test_odd_names_are_judged_where_they_ran(tmp_path: Path) -> None:
    w = ImaWriter(tmp_path / "l.bin", banks=(HashAlg.SHA256,), template="ima-cgpath")
    w.measure(b"/opt/\xff", b"x", cgroup_path=POD_CG)  # allowed by the UPF policy
    w.measure(b"/opt/\xfe", b"x", cgroup_path=POD_CG + b"/\xfd")  # in the pod, unknown
    w.measure(b"/tmp/\xfe", b"x", cgroup_path=POD_CG)  # excluded
    w.measure(b"/usr/bin/\xfe\n", b"x", cgroup_path=b"/system.slice/\xfc.service")  # host
    upf = _policy("upf", {"/opt/\udcff": b"x"}, excludes=("^/tmp/",))
    host = _policy("host", {})

    def policy_for(pod: PodRef | None) -> RuntimePolicy | None:
        return host if pod is None else upf if pod.uid == UID else None

    for check in (PURE, *([NATIVE] if NATIVE else [])):
        result = check(w.binary(), ReplayState.initial((HashAlg.SHA256,)), w.pcr10, policy_for)
        assert result.replay.failures == ()
        assert [(f.id, f.pod_uid, f.path) for f in result.judgement.failures] == [
            ("ima.policy.unknown_file", UID, "/opt/\\xfe"),
            ("ima.policy.unknown_file", None, "/usr/bin/\\xfe\\x0a"),
        ]
        assert dict(result.judgement.measurements) == {UID: 3, None: 1}


# --- any bytes, both formats, both implementations ------------------------------------------------

#: Any bytes but the one name the judge never looks up (the boot aggregate is replay's, not a file).
_names = st.binary(min_size=1, max_size=40).filter(lambda b: b != b"boot_aggregate")
_entry = st.tuples(
    _names,  # path
    st.one_of(st.just(b""), st.binary(max_size=40)),  # cgroup path below the pod's (or the host's)
    st.sampled_from(["ima-ng", "ima-sig", "ima-cgpath", "ima-cgpath"]),
    st.booleans(),  # in the UPF pod
    st.booleans(),  # listed in the policy
)


def _safe(failures: tuple[Failure, ...]) -> None:
    for f in failures:
        for text in (f.message, f.path or ""):
            assert text.encode("utf-8").decode("utf-8") == text  # no lone surrogates
            assert "\n" not in text


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(_entry, min_size=1, max_size=8), st.sampled_from([HashAlg.SHA1, HashAlg.SHA256]))
def test_any_bytes_in_names_never_fail_the_log(
    tmp_path_factory: pytest.TempPathFactory,
    entries: list[tuple[bytes, bytes, str, bool, bool]],
    column: HashAlg,
) -> None:
    w = ImaWriter(tmp_path_factory.mktemp("n") / "l.bin", banks=BANKS, column_alg=column)
    listed: dict[str, bytes] = {}
    for path, cg, template, in_pod, known in entries:
        where = (POD_CG + b"/" + cg) if in_pod else (b"/system.slice/" + cg)
        w.measure(path, b"c", cgroup_path=where, template=template, signature=b"\x03\x02")
        if known:
            listed[name_text(path)] = b"c"
    policy = _policy("any", listed)
    result = PURE(w.binary(), ReplayState.initial(BANKS), w.pcr10, lambda _pod: policy,
                  column_size=column.digest_size)  # fmt: skip
    assert (result.replay.failures, result.replay.covered) == ((), len(entries))
    assert len(result.judgement.failures) == sum(name_text(p) not in listed for p, *_ in entries)
    _safe(result.judgement.failures)
    if NATIVE is not None:
        native = NATIVE(w.binary(), ReplayState.initial(BANKS), w.pcr10, lambda _pod: policy,
                        column_size=column.digest_size)  # fmt: skip
        assert _facts(native) == _facts(result)
    # the ASCII list: the same entries, where the format can carry them (a newline ends a line;
    # an ima-cgpath cgroup path is a space-separated column)
    if all(b"\n" not in p and (t != "ima-cgpath" or not {10, 32} & set(cg))
           for p, cg, t, *_ in entries):  # fmt: skip
        text = parse_ascii(w.ascii(column))
        assert list(text.datas) == list(
            parse_binary(w.binary(), column_size=column.digest_size).datas
        )
        replayed = verify_against_quote(ReplayState.initial(BANKS), text, w.pcr10)
        assert (replayed.failures, replayed.covered) == ((), len(entries))
        judged = evaluate_log(text, lambda _pod: policy)
        assert judged.failures == result.judgement.failures


def _facts(result: LogCheck) -> tuple[object, ...]:
    return (
        result,
        list(result.replay.state.pcrs.items()),
        list(result.judgement.measurements.items()),
    )


@needs_native
def test_the_native_scan_answers_odd_names_itself(tmp_path: Path) -> None:
    """Not declined to the reference: odd names cost nothing extra."""
    from attestation.core import _imafast

    w = ImaWriter(tmp_path / "l.bin", banks=(HashAlg.SHA256,), template="ima-cgpath")
    for i in range(20):
        w.measure(b"/tmp/\xff%d" % i, b"x", cgroup_path=POD_CG + b"/\xfe")
    spec = (("sha256", bytes(32), w.pcr10[HashAlg.SHA256]),)
    scanned = _imafast.scan(w.binary(), 20, spec, lambda _cg: None)
    assert scanned is not None
    assert scanned[0] == 20


# --- the template-hash column ---------------------------------------------------------------------


@pytest.mark.parametrize("check", IMPLS)
@pytest.mark.parametrize("column", [HashAlg.SHA1, HashAlg.SHA256])
@pytest.mark.parametrize("forged_at", [0, 2, 4])
def test_a_column_that_is_not_the_data_hash_fails(
    tmp_path: Path, check: CheckLog, column: HashAlg, forged_at: int
) -> None:
    w = ImaWriter(tmp_path / "l.bin", banks=BANKS, column_alg=column, template="ima-cgpath")
    after = []
    for i in range(5):
        forged = hashlib.new(column.value, b"other").digest() if i == forged_at else None
        w.measure(f"/usr/bin/t{i}", b"x", cgroup_path=POD_CG, forged_column=forged)
        after.append(dict(w.pcr10))
    w.violation("/var/log/x")  # a zero column is a violation, not a forgery
    after.append(dict(w.pcr10))
    size = column.digest_size
    result = check(w.binary(), ReplayState.initial(BANKS), after[-1], lambda _p: None,
                   column_size=size)  # fmt: skip
    assert [f.id for f in result.replay.failures] == ["ima.template_hash_mismatch"]
    assert f"entry {forged_at} (/usr/bin/t{forged_at})" in result.replay.failures[0].message
    assert result.replay.covered == 0
    # a forged entry the quote does not cover yet is left for the round that covers it
    early = check(w.binary(), ReplayState.initial(BANKS), after[forged_at - 1], lambda _p: None,
                  column_size=size) if forged_at else None  # fmt: skip
    assert early is None or (early.replay.failures, early.replay.covered) == ((), forged_at)


def test_template_hash_check_on_entries_and_the_ascii_list(tmp_path: Path) -> None:
    w = ImaWriter(tmp_path / "l.bin", banks=(HashAlg.SHA256,), template="ima-ng")
    w.measure("/usr/bin/a", b"a")
    w.measure("/usr/bin/b", b"b", forged_column=b"\x01" * 20)
    log = parse_binary(w.binary())
    assert template_hash_mismatch(log, 1) is None
    by_columns = template_hash_mismatch(log, 2, first_index=7)
    by_entries = template_hash_mismatch(list(log), 2, first_index=7)
    assert by_columns == by_entries
    assert by_columns is not None
    assert by_columns.path == "/usr/bin/b"
    assert "entry 8 (/usr/bin/b)" in by_columns.message
    text = parse_ascii(w.ascii())
    replayed = verify_against_quote(ReplayState.initial((HashAlg.SHA256,)), text, w.pcr10)
    assert [f.id for f in replayed.failures] == ["ima.template_hash_mismatch"]

"""The IMA log parser against an independent writer, evmctl's vectors, and arbitrary bytes."""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attestation.core.ima import (
    ImaParseError,
    parse_ascii,
    parse_binary,
    render_ascii_line,
)
from attestation.core.types import HashAlg, ImaEntry
from attestation.lab.ima_writer import (
    Digest,
    ImaWriter,
    build_log,
    encode_legacy_ima,
    systemd_pod_cgroup,
)

VECTORS = Path(__file__).parent / "vectors"
POD_CG = systemd_pod_cgroup("4f2d1c3b-5a6e-47f8-9b0c-1d2e3f405162", "ab" * 32)


def _writer(tmp_path: Path, column: HashAlg = HashAlg.SHA1) -> ImaWriter:
    w = ImaWriter(tmp_path / "log.bin", column_alg=column, template="ima-cgpath")
    w.boot_aggregate({i: bytes(32) for i in range(8)})
    w.measure("/usr/bin/upf", b"upf", cgroup_path=POD_CG, dep="/usr/bin/containerd-shim")
    w.measure("/usr/lib/libc.so.6", b"libc", cgroup_path="/system.slice/sshd.service")
    w.measure("/etc/upf/with space.yaml", b"cfg", cgroup_path=POD_CG)
    w.measure("/usr/bin/ng", b"ng", template="ima-ng")
    w.measure("/usr/bin/sig", b"s", template="ima-sig", signature=b"\x03\x02" + b"\x00" * 7)
    w.measure("/usr/bin/nosig", b"n", template="ima-sig")
    w.violation("/var/log/app.log", cgroup_path=POD_CG)
    w.measure("/usr/bin/ünïcode", Digest(b"\x11" * 32), cgroup_path="/")
    # the kernel logs names as bytes: not UTF-8 is an ordinary entry (``$'/tmp/\xff'``)
    w.measure(b"/tmp/\xff \xc3(", b"odd", cgroup_path=POD_CG.encode() + b"/\xfe")
    return w


@pytest.mark.parametrize("column", [HashAlg.SHA1, HashAlg.SHA256])
def test_binary_matches_what_the_writer_wrote(tmp_path: Path, column: HashAlg) -> None:
    w = _writer(tmp_path, column)
    log = parse_binary((tmp_path / "log.bin").read_bytes(), column_size=column.digest_size)
    assert len(log) == len(w.entries)
    assert log.next_offset == (tmp_path / "log.bin").stat().st_size
    for got, want in zip(log, w.entries, strict=True):
        assert (got.index, got.template_name, got.path) == (want.index, want.template, want.path)
        assert got.template_data == want.template_data
        assert (got.file_digest_alg, got.file_digest) == (want.digest_alg, want.digest)
        assert got.cgroup_path == want.cgroup_path
        assert got.is_violation == want.violation
        if not want.violation:
            assert got.template_hash == hashlib.new(column.value, want.template_data).digest()
    assert log[5].signature == b"\x03\x02" + b"\x00" * 7
    assert log[6].signature is None
    assert dict(log.skip) == {7: "violation"}
    assert log[9].path == "/tmp/\udcff \udcc3("  # surrogate escapes, as os.fsdecode
    assert log[9].cgroup_path == POD_CG + "/\udcfe"
    assert log.paths[9] == b"/tmp/\xff \xc3("


def test_ascii_rebuilds_the_same_template_data(tmp_path: Path) -> None:
    w = _writer(tmp_path)
    binary = parse_binary(w.binary())
    text = parse_ascii(w.ascii())
    assert list(text.datas) == list(binary.datas)
    assert list(text) == list(binary)
    assert text.next_offset == len(w.ascii())


def test_render_ascii_round_trips(tmp_path: Path) -> None:
    w = _writer(tmp_path)
    log = parse_binary(w.binary())
    text = b"".join(render_ascii_line(e) + b"\n" for e in log)
    assert text == w.ascii()
    assert list(parse_ascii(text).datas) == list(log.datas)


def test_legacy_ima_template_hashes_the_padded_name() -> None:
    digest = hashlib.sha1(b"file").digest()  # noqa: S324 - the template's own algorithm
    _, hashed = encode_legacy_ima(bytes(20), digest, "/bin/sh")
    entry, _ = encode_legacy_ima(hashlib.sha1(hashed).digest(), digest, "/bin/sh")  # noqa: S324
    log = parse_binary(entry + entry)
    assert len(log) == 2
    assert log[0].path == "/bin/sh"
    assert log[0].file_digest == digest
    assert log[0].template_data == hashed
    assert len(hashed) == 20 + 256
    line = f"10 {log[0].template_hash.hex()} ima {digest.hex()} /bin/sh\n".encode()
    assert parse_ascii(line)[0] == log[0]


def test_evmctl_vector_parses_in_both_forms() -> None:
    """ima_evm.ascii is evmctl's own rendering of ima_evm.bin (make_ima_vectors.py)."""
    binary = parse_binary((VECTORS / "ima_evm.bin").read_bytes())
    text = parse_ascii((VECTORS / "ima_evm.ascii").read_bytes())
    meta = json.loads((VECTORS / "ima_evm.json").read_text())
    assert len(binary) == len(text) == meta["entries"]
    assert list(binary.datas) == list(text.datas)
    assert binary[4].path == "/etc/upf/with space.yaml"
    assert binary[1].signature == (VECTORS / "ima_upf.sig").read_bytes()
    assert binary[5].is_violation
    assert text[5].is_violation


def test_incremental_reads_resume_at_next_offset(tmp_path: Path) -> None:
    w = _writer(tmp_path)
    raw = w.binary()
    first = parse_binary(raw[:150])
    assert first.next_offset <= 150
    rest = parse_binary(raw, offset=first.next_offset, start_index=first.next_index)
    assert [e.index for e in rest] == list(range(len(first), len(w.entries)))
    assert [e.path for e in first] + [e.path for e in rest] == [e.path for e in w.entries]
    assert rest.end_offset(len(rest)) == len(raw)


@pytest.mark.parametrize("cut", [1, 7, 30, 40, 41, 60, 100])
def test_partial_trailing_entry_is_left_for_later(tmp_path: Path, cut: int) -> None:
    raw = _writer(tmp_path).binary()
    one = parse_binary(raw[:0] + raw)
    size = one.end_offset(1)
    log = parse_binary(raw[: size + cut])
    assert len(log) == 1
    assert log.next_offset == size


def test_partial_trailing_ascii_line_is_left_for_later(tmp_path: Path) -> None:
    text = _writer(tmp_path).ascii()
    cut = text.index(b"\n") + 20
    log = parse_ascii(text[:cut])
    assert len(log) == 1
    assert log.next_offset == text.index(b"\n") + 1


_D256 = b"\x28\x00\x00\x00sha256:\x00" + b"\x01" * 32


def _entry(template: bytes, data: bytes, pcr: int = 10) -> bytes:
    le = int.to_bytes
    return (
        le(pcr, 4, "little")
        + b"\x01" * 20
        + le(len(template), 4, "little")
        + template
        + (le(len(data), 4, "little") + data)
    )


@pytest.mark.parametrize(
    ("raw", "what"),
    [
        (_entry(b"ima-xx", b""), "unknown template"),
        (b"\x0a\x00\x00\x00" + b"\x01" * 20 + b"\xff\x00\x00\x00", "template name length"),
        (_entry(b"ima-ng", b"\x05\x00\x00\x00abc"), "exceeds the template data"),
        (
            _entry(
                b"ima-ng", b"\x28\x00\x00\x00sha256:\x00" + b"\x01" * 32 + b"\x02\x00\x00\x00ab"
            ),
            "not NUL-terminated",
        ),
        (
            _entry(
                b"ima-ng", b"\x24\x00\x00\x00sha2:\x00" + b"\x01" * 30 + b"\x01\x00\x00\x00\x00xx"
            ),
            "trailing bytes",
        ),
        (b"\x0a\x00\x00\x00" + b"\x01" * 20 + b"\x06\x00\x00\x00ima-ng\xff\xff\xff\x7f", "exceeds"),
    ],
)
def test_garbage_names_entry_and_offset(tmp_path: Path, raw: bytes, what: str) -> None:
    good = _writer(tmp_path).binary()
    with pytest.raises(ImaParseError, match=what) as err:
        parse_binary(good + raw, start_index=100)
    assert err.value.index == 100 + 10
    assert err.value.offset == len(good)


@pytest.mark.parametrize(
    "line",
    [
        b"10 zz ima-ng sha256:00 /x\n",
        b"10 " + b"00" * 20 + b" ima-ng sha256:0g /x\n",
        b"ten " + b"00" * 20 + b" ima-ng sha256:" + b"00" * 32 + b" /x\n",
        b"10 " + b"00" * 20 + b" nope sha256:" + b"00" * 32 + b" /x\n",
        b"10 " + b"00" * 20 + b"\n",
    ],
)
def test_ascii_garbage_is_a_parse_error(line: bytes) -> None:
    with pytest.raises(ImaParseError, match="entry 0 at byte offset 0"):
        parse_ascii(line)


def test_generated_benchmark_log_parses_in_both_templates() -> None:
    for template in ("ima-ng", "ima-cgpath"):
        built = build_log(300, template=template)
        binary = parse_binary(built.binary, column_size=32)
        text = parse_ascii(built.ascii)
        assert len(binary) == len(text) == 301
        assert list(binary.datas) == list(text.datas)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600), st.sampled_from([20, 32]))
def test_arbitrary_bytes_raise_only_parse_errors(raw: bytes, column: int) -> None:
    try:
        log = parse_binary(raw, column_size=column)
    except ImaParseError:
        return
    assert log.next_offset <= len(raw)
    for entry in log:
        assert isinstance(entry.path, str)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_ascii_raises_only_parse_errors(raw: bytes) -> None:
    try:
        log = parse_ascii(raw)
    except ImaParseError:
        return
    assert log.next_offset <= len(raw)


_paths = st.text(
    st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00\n"),
    min_size=1,
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(_paths, st.binary(max_size=8), st.sampled_from(["ima-ng", "ima-cgpath"])),
        min_size=1,
        max_size=8,
    ),
    st.integers(min_value=0, max_value=2000),
)
def test_mutated_valid_logs_parse_or_fail_cleanly(
    tmp_path_factory: pytest.TempPathFactory,
    items: list[tuple[str, bytes, str]],
    flip: int,
) -> None:
    w = ImaWriter(tmp_path_factory.mktemp("h") / "log.bin")
    for path, content, template in items:
        w.measure("/" + path, content, template=template, cgroup_path="/kubepods/x")
    raw = w.binary()
    log = parse_binary(raw)
    assert [e.path for e in log] == [e.path for e in w.entries]
    mutated = bytearray(raw)
    mutated[flip % len(raw)] ^= 0x41
    with contextlib.suppress(ImaParseError):
        parse_binary(bytes(mutated))


def _one_by_one(raw: bytes, column_size: int = 20) -> list[ImaEntry]:
    """The general parser alone: every entry parsed by a call of its own (a call reads its first
    entry in full; the fast shapes only take over after that)."""
    log = parse_binary(raw, column_size=column_size)
    out: list[ImaEntry] = []
    start = log.start_offset
    for k, end in enumerate(log.ends):
        single = parse_binary(raw[:end], offset=start, start_index=k, column_size=column_size)
        assert len(single) == 1
        out.append(single[0])
        start = end
    return out


@pytest.mark.parametrize("template", ["ima-ng", "ima-cgpath"])
def test_fast_shapes_agree_with_the_general_parser(template: str) -> None:
    built = build_log(400, template=template, pod_share=0.3)
    assert list(parse_binary(built.binary, column_size=32)) == _one_by_one(built.binary, 32)


def test_mixed_templates_agree_with_the_general_parser(tmp_path: Path) -> None:
    raw = _writer(tmp_path).binary()
    assert list(parse_binary(raw)) == _one_by_one(raw)


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(["ima-ng", "ima-cgpath"]),
    st.lists(st.tuples(st.integers(0, 4000), st.integers(1, 255)), min_size=1, max_size=4),
)
def test_whatever_the_fast_path_accepts_the_general_parser_accepts(
    template: str, flips: list[tuple[int, int]]
) -> None:
    raw = bytearray(build_log(12, template=template, pod_share=0.5).binary)
    for where, mask in flips:
        raw[where % len(raw)] ^= mask
    try:
        log = parse_binary(bytes(raw), column_size=32)
    except ImaParseError:
        return
    assert list(log) == _one_by_one(bytes(raw), 32)

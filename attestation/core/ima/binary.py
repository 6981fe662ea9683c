"""``binary_runtime_measurements``: the general parser for every entry, and a speculative fast
path for the long runs of ``ima-ng`` / ``ima-cgpath`` entries a real log is made of.

Speed: a node's log holds 10^5-10^6 entries and the verifier re-reads the new ones every round.
A log is homogeneous (one template, one digest algorithm), so once an ``ima-ng`` or
``ima-cgpath`` entry has been parsed in full, the entries that follow are read speculatively with
one precompiled struct per fixed run of fields and every length cross-checked; an entry that does
not fit that shape exactly goes through the general parser, which names what is wrong. (A
regular-expression run matcher was tried: no faster for ima-ng, 30% slower for ima-cgpath, as
every captured group costs as much as a struct field.) The fast loops keep everything they touch
in locals and are called once per run, not per entry.

A fast loop is ``while True``, left by ``break``: CPython 3.11 specialises a function's bytecode
(ints, tuple unpacking, comparisons: 20% fewer instructions here) only after 8 calls or 8
*unconditional* backward jumps, and ``while pos < n`` ends each pass with a conditional one, so
a loop that runs once per call would stay unspecialised.
"""

from __future__ import annotations

import gc
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

from attestation.core.ima.columns import R_ALG, R_DIGEST, R_END, R_TEMPLATE, Columns, ImaLog
from attestation.core.ima.entry import MAX_FIELD, MAX_PATH, read_entry, u32_from, u32_pack
from attestation.core.ima.errors import ImaParseError, MalformedField

__all__ = ["parse_binary"]

_NG_NAME: Final = u32_pack(6) + b"ima-ng"
_CG_NAME: Final = u32_pack(10) + b"ima-cgpath"
#: n-ng and cg-path lengths include the NUL
_MAX_NAME: Final = MAX_PATH + 1


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Parsing allocates several objects per entry and keeps them all: the cyclic GC would rescan
    the growing batch again and again (20-30% of the parse time) for objects that can hold no
    cycles. Paused only while parsing, and only if it was on."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()


class _Shape:
    """The fixed layout of one digest algorithm and column size: precompiled structs that read
    an entry's fixed runs of fields in one call each, and the constant bytes they must match
    (template name with its length, digest field length with ``alg:\\0``). Learned from an entry
    the general parser accepted."""

    def __init__(self, alg: bytes, digest_size: int, column_size: int) -> None:
        self.alg = alg
        prefix = alg + b":\x00"
        self.dfl = len(prefix) + digest_size
        #: d-ng's length and the algorithm prefix, as they precede every digest
        self.dng = u32_pack(self.dfl) + prefix
        d, ds = len(self.dng), digest_size
        ng = struct.Struct(f"<I{column_size}s10sI{d}s{ds}sI")
        self.ng_from, self.ng_size = ng.unpack_from, ng.size
        self.ng_data = 4 + column_size + 10 + 4
        self.ng_fixed = d + ds + 4
        head = struct.Struct(f"<I{column_size}s14sI")  # ima-cgpath up to data_len
        self.cg_head_from, self.cg_data = head.unpack_from, head.size
        dep = struct.Struct(f"<I{column_size}s14sII")  # ... and dep's length
        self.cg1_from, self.cg1_size = dep.unpack_from, dep.size
        tail = struct.Struct(f"<{d}s{ds}sI")  # d-ng length + prefix, digest, n-ng length
        self.cg2_from, self.cg2_size = tail.unpack_from, tail.size
        digest = struct.Struct(f"<{ds}sI")  # digest, n-ng length
        self.dig_from, self.dig_size = digest.unpack_from, digest.size
        #: the last ima-cgpath middle (dep, cg-path, d-ng prefix) validated, and its cgroup
        self.last_mid = self.last_cg = b""

    def matches(self, alg: bytes, digest: bytes) -> bool:
        return self.dfl == len(alg) + 2 + len(digest) and self.alg == alg


def parse_binary(
    buf: bytes, *, offset: int = 0, start_index: int = 0, column_size: int = 20
) -> ImaLog:
    """Parse ``binary_runtime_measurements`` (column 20, SHA-1) or a per-bank file such as
    ``binary_runtime_measurements_sha256`` (column 32) from byte ``offset``.

    A read can end in the middle of an entry (the kernel appends while the agent reads), so a
    short trailing entry is not an error: parsing stops before it and ``next_offset`` points at
    its start.
    """
    if column_size not in (20, 32, 48, 64):
        raise ValueError(f"column size {column_size} is not a digest size")
    cols = Columns()
    n = len(buf)
    pos = offset
    shape: _Shape | None = None
    with _gc_paused():
        while pos < n:
            try:
                row = read_entry(buf, pos, column_size)
            except MalformedField as e:
                raise ImaParseError(start_index + len(cols.ends), pos, str(e)) from None
            if row is None:
                break
            cols.add(row)
            pos = row[R_END]
            template = row[R_TEMPLATE]
            if template == b"ima-ng" or template == b"ima-cgpath":
                alg, digest = row[R_ALG], row[R_DIGEST]
                if shape is None or not shape.matches(alg, digest):
                    shape = _Shape(alg, len(digest), column_size)
                run, name = (
                    (_ng_run, _NG_NAME) if template == b"ima-ng" else (_cgpath_run, _CG_NAME)
                )
                # A log that mixes templates would start a run per entry that reads none.
                if buf.startswith(name, pos + 4 + column_size):
                    pos = run(buf, pos, shape, cols)
    return cols.freeze(start_index, offset, pos, column_size)


def _ng_run(buf: bytes, pos: int, shape: _Shape, cols: Columns) -> int:
    """Read the ima-ng entries of ``shape`` from ``pos`` for as long as they fit it exactly;
    return where the first that does not (or the buffer's end) starts."""
    n = len(buf)
    before = len(cols.ends)
    col_add, data_add, digest_add, path_add, cg_add, end_add = cols.appenders()
    ng_from, ng_size, ng_data, ng_fixed, dng = (
        shape.ng_from, shape.ng_size, shape.ng_data, shape.ng_fixed, shape.dng
    )  # fmt: skip
    ng_name, max_name = _NG_NAME, _MAX_NAME
    while True:  # not ``while pos < n``: see the module doc; at the end unpacking fails
        try:
            pcr, col, name, dlen, dng_, digest, plen = ng_from(buf, pos)
        except struct.error:
            break
        end = pos + ng_size + plen
        if not (
            pcr == 10
            and name == ng_name
            and dng_ == dng
            and dlen == ng_fixed + plen
            and 0 < plen <= max_name
            and end <= n
            and buf[end - 1] == 0
        ):
            break
        col_add(col)
        data_add(buf[pos + ng_data : end])
        digest_add(digest)
        path_add(buf[end - plen : end - 1])
        cg_add(None)
        end_add(end)
        pos = end
    cols.fill(len(cols.ends) - before, b"ima-ng", shape.alg)
    return pos


def _cgpath_run(buf: bytes, pos: int, shape: _Shape, cols: Columns) -> int:
    """As :func:`_ng_run`, for ima-cgpath. The entries of one process tree repeat dep, cg-path
    and the digest prefix byte for byte: when an entry's middle equals the last one validated,
    only its header and digest/path are read and checked."""
    n = len(buf)
    before = len(cols.ends)
    col_add, data_add, digest_add, path_add, cg_add, end_add = cols.appenders()
    head_from, cg_data, dig_from, dig_size, dng = (
        shape.cg_head_from, shape.cg_data, shape.dig_from, shape.dig_size, shape.dng
    )  # fmt: skip
    cg1_from, cg1_size, cg2_from, cg2_size = (
        shape.cg1_from, shape.cg1_size, shape.cg2_from, shape.cg2_size
    )  # fmt: skip
    last_mid, last_cg = shape.last_mid, shape.last_cg
    cg_name, max_name = _CG_NAME, _MAX_NAME
    while True:  # as in _ng_run
        mid = pos + cg_data
        if last_mid and buf.startswith(last_mid, mid):
            try:
                pcr, col, name, dlen = head_from(buf, pos)
                digest, plen = dig_from(buf, mid + len(last_mid))
            except struct.error:
                pass
            else:
                end = mid + len(last_mid) + dig_size + plen
                if (pcr == 10 and name == cg_name and 0 < plen <= max_name and end <= n
                        and dlen == end - mid and buf[end - 1] == 0):  # fmt: skip
                    col_add(col)
                    data_add(buf[mid:end])
                    digest_add(digest)
                    path_add(buf[end - plen : end - 1])
                    cg_add(last_cg)
                    end_add(end)
                    pos = end
                    continue
        try:
            pcr, col, name, dlen, deplen = cg1_from(buf, pos)
            q = pos + cg1_size + deplen
            (cglen,) = u32_from(buf, q)
            r = q + 4 + cglen
            dng_, digest, plen = cg2_from(buf, r)
        except struct.error:
            break
        end = r + cg2_size + plen
        if not (pcr == 10 and name == cg_name and dng_ == dng and 0 < deplen < MAX_FIELD
                and 0 < cglen <= max_name and 0 < plen <= max_name and end <= n
                and dlen == end - mid and buf[q - 1] == 0 and buf[r - 1] == 0
                and buf[end - 1] == 0):  # fmt: skip
            break
        col_add(col)
        data_add(buf[mid:end])
        digest_add(digest)
        path_add(buf[end - plen : end - 1])
        # one bytes object per run of a cgroup: its hash is computed once for all the dict
        # lookups attribution and policy do on it
        last_cg = buf[q + 4 : r - 1]
        cg_add(last_cg)
        last_mid = buf[mid : r + len(dng)]
        end_add(end)
        pos = end
    shape.last_mid, shape.last_cg = last_mid, last_cg
    cols.fill(len(cols.ends) - before, b"ima-cgpath", shape.alg)
    return pos

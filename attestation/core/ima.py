"""Parse the kernel's IMA measurement list, binary or ASCII, from an offset, fast.

The log is untrusted input: every length is checked against what is left and against caps before it
is used, and anything malformed raises :class:`ImaParseError` naming the entry and byte offset.
A read can end in the middle of an entry (the kernel appends while the agent reads), so a short
trailing entry is not an error: parsing stops before it and ``next_offset`` points at its start.

Speed: a node's log holds 10^5-10^6 entries and the verifier re-reads the new ones every round.
Building one frozen :class:`ImaEntry` per entry costs more than the two SHA-256 calls replay needs,
so :class:`ImaLog` keeps *columns* of raw bytes (no decoding) and hands out entries on demand;
replay, attribution and policy read the columns. A log is homogeneous (one template, one digest
algorithm), so once an ``ima-ng`` or ``ima-cgpath`` entry has been parsed in full, the entries that
follow are read speculatively with one precompiled struct per fixed run of fields and every length
cross-checked; an entry that does not fit that shape exactly goes through the general parser, which
names what is wrong. (A regular-expression run matcher was tried: no faster for ima-ng, 30% slower
for ima-cgpath, as every captured group costs as much as a struct field.)
"""

from __future__ import annotations

import binascii
import gc
import struct
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import repeat
from typing import Final, overload

from attestation.core.types import IMA_PCR, ImaEntry

#: Kernel limits (security/integrity/ima): template names are at most 15 bytes; the legacy
#: ``ima`` template's name field is at most 255 bytes; paths are at most PATH_MAX.
MAX_TEMPLATE_NAME = 15
MAX_LEGACY_NAME = 255
MAX_PATH = 4096
#: Generous caps for the rest: ima-sig signatures are < 1 KiB, ima-buf key blobs a few KiB.
MAX_FIELD = 64 * 1024
MAX_TEMPLATE_DATA = 256 * 1024
MAX_DIGEST = 64

#: Row layout of the general parser: one tuple per entry, indices below. Raw bytes; ``data`` is the
#: template data exactly as every PCR bank hashes it (for ``ima``: digest || name zero-padded to
#: 256 bytes).
R_PCR: Final = 0
R_COLUMN: Final = 1
R_TEMPLATE: Final = 2
R_DATA: Final = 3
R_ALG: Final = 4
R_DIGEST: Final = 5
R_PATH: Final = 6
R_CGROUP: Final = 7
R_SIG: Final = 8
R_END: Final = 9
Row = tuple[int, bytes, bytes, bytes, bytes, bytes, bytes, bytes | None, bytes | None, int]

TEMPLATES: Final = (b"ima", b"ima-ng", b"ima-sig", b"ima-buf", b"ima-cgpath")

_U32: Final = struct.Struct("<I")
_u32_from = _U32.unpack_from
_u32_pack = _U32.pack
_LEGACY_PAD: Final = MAX_LEGACY_NAME + 1


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


class ImaParseError(ValueError):
    """The measurement list is malformed; the message names the entry index and byte offset."""

    def __init__(self, index: int, offset: int, what: str) -> None:
        super().__init__(f"IMA log entry {index} at byte offset {offset}: {what}")
        self.index = index
        self.offset = offset
        self.what = what


class _Bad(Exception):
    """Internal: a field is malformed; turned into ImaParseError with the entry's position."""


@dataclass(frozen=True, slots=True)
class ImaLog(Sequence[ImaEntry]):
    """A parsed stretch of the log: entries ``start_index .. next_index-1``, as columns.

    Each column holds one raw value per entry (``cgroups``/``signatures`` hold None where the
    template has no such field; ``ends`` the byte offset just after each entry). ``skip`` maps a
    position to why PCR 10 replay treats it specially (``"violation"``: extends all-0xFF;
    ``"pcr"``: extends another PCR). ``next_offset`` is where the next read starts.
    """

    pcrs: tuple[int, ...]
    columns: tuple[bytes, ...]
    templates: tuple[bytes, ...]
    datas: tuple[bytes, ...]
    algs: tuple[bytes, ...]
    digests: tuple[bytes, ...]
    paths: tuple[bytes, ...]
    cgroups: tuple[bytes | None, ...]
    signatures: tuple[bytes | None, ...]
    ends: tuple[int, ...]
    start_index: int
    start_offset: int
    next_offset: int
    column_size: int
    skip: tuple[tuple[int, str], ...] = ()

    @property
    def next_index(self) -> int:
        return self.start_index + len(self.ends)

    def __len__(self) -> int:
        return len(self.ends)

    @overload
    def __getitem__(self, i: int) -> ImaEntry: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[ImaEntry]: ...
    def __getitem__(self, i: int | slice) -> ImaEntry | Sequence[ImaEntry]:
        if isinstance(i, slice):
            return [self.entry(k) for k in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        return self.entry(i)

    def __iter__(self) -> Iterator[ImaEntry]:
        return (self.entry(k) for k in range(len(self)))

    def row(self, k: int) -> Row:
        return (self.pcrs[k], self.columns[k], self.templates[k], self.datas[k], self.algs[k],
                self.digests[k], self.paths[k], self.cgroups[k], self.signatures[k],
                self.ends[k])  # fmt: skip

    def entry(self, position: int) -> ImaEntry:
        """Materialise the entry at ``position`` (0-based within this batch)."""
        return row_to_entry(self.row(position), self.start_index + position)

    def end_offset(self, count: int) -> int:
        """The byte offset just after the first ``count`` entries of this batch."""
        return self.ends[count - 1] if count else self.start_offset


class _Columns:
    """Column lists being filled: one entry at a time, or a whole regex-matched run at once."""

    def __init__(self) -> None:
        self.pcrs: list[int] = []
        self.columns: list[bytes] = []
        self.templates: list[bytes] = []
        self.datas: list[bytes] = []
        self.algs: list[bytes] = []
        self.digests: list[bytes] = []
        self.paths: list[bytes] = []
        self.cgroups: list[bytes | None] = []
        self.signatures: list[bytes | None] = []
        self.ends: list[int] = []

    def add(self, row: Row) -> None:
        self.pcrs.append(row[R_PCR])
        self.columns.append(row[R_COLUMN])
        self.templates.append(row[R_TEMPLATE])
        self.datas.append(row[R_DATA])
        self.algs.append(row[R_ALG])
        self.digests.append(row[R_DIGEST])
        self.paths.append(row[R_PATH])
        self.cgroups.append(row[R_CGROUP])
        self.signatures.append(row[R_SIG])
        self.ends.append(row[R_END])

    def freeze(
        self, start_index: int, start_offset: int, next_offset: int, column_size: int
    ) -> ImaLog:
        skip: list[tuple[int, str]] = []
        zero = bytes(column_size)
        if zero in self.columns:
            skip += [(k, "violation") for k, c in enumerate(self.columns) if c == zero]
        if self.pcrs.count(IMA_PCR) != len(self.pcrs):
            bad = {k for k, _ in skip}
            skip += [(k, "pcr") for k, p in enumerate(self.pcrs) if p != IMA_PCR and k not in bad]
        return ImaLog(
            tuple(self.pcrs), tuple(self.columns), tuple(self.templates), tuple(self.datas),
            tuple(self.algs), tuple(self.digests), tuple(self.paths), tuple(self.cgroups),
            tuple(self.signatures), tuple(self.ends), start_index, start_offset, next_offset,
            column_size, tuple(sorted(skip)),
        )  # fmt: skip


def row_to_entry(row: Row, index: int) -> ImaEntry:
    cgroup = row[R_CGROUP]
    return ImaEntry(
        index=index,
        pcr=row[R_PCR],
        template_hash=row[R_COLUMN],
        template_name=row[R_TEMPLATE].decode("ascii"),
        template_data=row[R_DATA],
        file_digest_alg=row[R_ALG].decode("ascii"),
        file_digest=row[R_DIGEST],
        path=row[R_PATH].decode("utf-8"),
        cgroup_path=None if cgroup is None else cgroup.decode("utf-8"),
        signature=row[R_SIG],
    )


# --- template data -> fields -------------------------------------------------------------------
# Each returns (alg, digest, path, cgroup, sig) from the template data's ``u32 len || data`` fields.

_Fields = tuple[bytes, bytes, bytes, bytes | None, bytes | None]


def _field(data: bytes, pos: int, what: str) -> tuple[bytes, int]:
    if pos + 4 > len(data):
        raise _Bad(f"template data ends before the {what} field's length")
    (n,) = _u32_from(data, pos)
    end = pos + 4 + n
    if n > MAX_FIELD or end > len(data):
        raise _Bad(f"{what} field length {n} exceeds the template data")
    return data[pos + 4 : end], end


def _digest_ng(field: bytes) -> tuple[bytes, bytes]:
    """d-ng: ``algo ":" NUL digest`` (older kernels: a bare SHA-1/MD5 digest)."""
    nul = field.find(b":\x00")
    if nul < 0:
        if len(field) in (16, 20):
            return (b"sha1" if len(field) == 20 else b"md5"), field
        raise _Bad("d-ng digest field lacks 'algo:\\0'")
    alg = field[:nul]
    digest = field[nul + 2 :]
    if not alg.replace(b"-", b"").replace(b"_", b"").isalnum():
        raise _Bad(f"d-ng digest algorithm {alg[:32]!r} is not a name")
    if not 16 <= len(digest) <= MAX_DIGEST:
        raise _Bad(f"d-ng digest is {len(digest)} bytes")
    return alg, digest


def _string(field: bytes, what: str, cap: int) -> bytes:
    """n-ng / cg-path / dep: a NUL-terminated string."""
    if not field or field[-1] != 0:
        raise _Bad(f"{what} field is not NUL-terminated")
    if len(field) > cap + 1:
        raise _Bad(f"{what} field is {len(field)} bytes (cap {cap + 1})")
    return field[:-1]


def _fields_ng(data: bytes) -> _Fields:
    d, pos = _field(data, 0, "d-ng")
    n, pos = _field(data, pos, "n-ng")
    if pos != len(data):
        raise _Bad(f"{len(data) - pos} trailing bytes after the template fields")
    alg, digest = _digest_ng(d)
    return alg, digest, _string(n, "n-ng", MAX_PATH), None, None


def _fields_sig(data: bytes) -> _Fields:
    d, pos = _field(data, 0, "d-ng")
    n, pos = _field(data, pos, "n-ng")
    sig, pos = _field(data, pos, "sig")
    if pos != len(data):
        raise _Bad(f"{len(data) - pos} trailing bytes after the template fields")
    alg, digest = _digest_ng(d)
    return alg, digest, _string(n, "n-ng", MAX_PATH), None, sig or None


def _fields_buf(data: bytes) -> _Fields:
    d, pos = _field(data, 0, "d-ng")
    n, pos = _field(data, pos, "n-ng")
    _buf, pos = _field(data, pos, "buf")
    if pos != len(data):
        raise _Bad(f"{len(data) - pos} trailing bytes after the template fields")
    alg, digest = _digest_ng(d)
    return alg, digest, _string(n, "n-ng", MAX_PATH), None, None


def _fields_cgpath(data: bytes) -> _Fields:
    dep, pos = _field(data, 0, "dep")
    cg, pos = _field(data, pos, "cg-path")
    d, pos = _field(data, pos, "d-ng")
    n, pos = _field(data, pos, "n-ng")
    if pos != len(data):
        raise _Bad(f"{len(data) - pos} trailing bytes after the template fields")
    _string(dep, "dep", MAX_FIELD)
    alg, digest = _digest_ng(d)
    return alg, digest, _string(n, "n-ng", MAX_PATH), _string(cg, "cg-path", MAX_PATH), None


_FIELD_PARSERS: Final = {
    b"ima-ng": _fields_ng,
    b"ima-sig": _fields_sig,
    b"ima-buf": _fields_buf,
    b"ima-cgpath": _fields_cgpath,
}


def _slow_entry(buf: bytes, pos: int, column_size: int) -> Row | None:
    """Parse the entry at ``pos`` in full generality; None if the buffer ends inside it."""
    n = len(buf)
    p = pos + 8 + column_size
    if p > n:
        return None
    pcr, column, name_len = struct.unpack_from(f"<I{column_size}sI", buf, pos)
    if not 0 < name_len <= MAX_TEMPLATE_NAME:
        raise _Bad(f"template name length {name_len} (must be 1..{MAX_TEMPLATE_NAME})")
    if p + name_len + 4 > n:
        return None
    template = buf[p : p + name_len]
    p += name_len
    cgroup: bytes | None = None
    sig: bytes | None = None
    if template == b"ima":
        if p + 24 > n:
            return None
        digest = buf[p : p + 20]
        (nlen,) = _u32_from(buf, p + 20)
        if nlen > MAX_LEGACY_NAME:
            raise _Bad(f"ima name length {nlen} exceeds {MAX_LEGACY_NAME}")
        end = p + 24 + nlen
        if end > n:
            return None
        path = buf[p + 24 : end]
        return (pcr, column, template, digest + path + bytes(_LEGACY_PAD - nlen), b"sha1",
                digest, path, None, None, end)  # fmt: skip
    (dlen,) = _u32_from(buf, p)
    if dlen > MAX_TEMPLATE_DATA:
        raise _Bad(f"template data length {dlen} exceeds {MAX_TEMPLATE_DATA}")
    end = p + 4 + dlen
    if end > n:
        return None
    data = buf[p + 4 : end]
    fields = _FIELD_PARSERS.get(template)
    if fields is None:
        raise _Bad(f"unknown template {template[:MAX_TEMPLATE_NAME]!r}")
    alg, digest, path, cgroup, sig = fields(data)
    return (pcr, column, template, data, alg, digest, path, cgroup, sig, end)


# --- binary ------------------------------------------------------------------------------------


_FAST: Final = (b"", b"ima-ng", b"ima-cgpath")  # mode -> template of the fast runs


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
        self.dng = _u32_pack(self.dfl) + prefix
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


_NG_NAME: Final = _u32_pack(6) + b"ima-ng"
_CG_NAME: Final = _u32_pack(10) + b"ima-cgpath"


def parse_binary(
    buf: bytes, *, offset: int = 0, start_index: int = 0, column_size: int = 20
) -> ImaLog:
    """Parse ``binary_runtime_measurements`` (column 20, SHA-1) or a per-bank file such as
    ``binary_runtime_measurements_sha256`` (column 32) from byte ``offset``.

    Entry layout: ``u32 pcr || column || u32 name_len || name || u32 data_len || data`` (all
    little-endian; the ``ima`` template has no ``data_len`` and an unpadded ``u32 len || name``).
    """
    if column_size not in (20, 32, 48, 64):
        raise ValueError(f"column size {column_size} is not a digest size")
    cols = _Columns()
    n = len(buf)
    pos = offset
    shape: _Shape | None = None
    mode = 0  # 1: ima-ng runs, 2: ima-cgpath runs (of ``shape``), 0: general parser only
    pending = 0  # fast entries whose constant columns (pcr, template, alg, sig) are not filled
    col_add, data_add, digest_add = cols.columns.append, cols.datas.append, cols.digests.append
    path_add, cg_add, end_add = cols.paths.append, cols.cgroups.append, cols.ends.append
    max_name = MAX_PATH + 1
    # the current shape's readers and constants, as locals (set with ``shape``)
    ng_from = cg_head_from = cg1_from = cg2_from = dig_from = _u32_from
    ng_size = ng_data = ng_fixed = cg_data = cg1_size = cg2_size = dig_size = 0
    dng = last_mid = last_cg = b""
    with _gc_paused():
        while pos < n:
            # Fast shapes: locals only, one struct call per fixed run of fields, every length
            # cross-checked; anything unexpected falls through to the general parser.
            if mode == 1:
                try:
                    pcr, col, name, dlen, dng_, digest, plen = ng_from(buf, pos)
                except struct.error:
                    pass
                else:
                    end = pos + ng_size + plen
                    if (
                        pcr == 10
                        and name == _NG_NAME
                        and dng_ == dng
                        and dlen == ng_fixed + plen
                        and 0 < plen <= max_name
                        and end <= n
                        and buf[end - 1] == 0
                    ):
                        col_add(col)
                        data_add(buf[pos + ng_data : end])
                        digest_add(digest)
                        path_add(buf[end - plen : end - 1])
                        cg_add(None)
                        end_add(end)
                        pending += 1
                        pos = end
                        continue
            elif mode == 2:
                # Shortcut: the entries of one process tree repeat dep, cg-path and the digest
                # prefix byte for byte; if this entry's middle equals the last validated one,
                # only the header and the digest/path need reading and checking.
                mid = pos + cg_data
                if last_mid and buf.startswith(last_mid, mid):
                    try:
                        pcr, col, name, dlen = cg_head_from(buf, pos)
                        digest, plen = dig_from(buf, mid + len(last_mid))
                    except struct.error:
                        pass
                    else:
                        end = mid + len(last_mid) + dig_size + plen
                        if (
                            pcr == 10
                            and name == _CG_NAME
                            and 0 < plen <= max_name
                            and end <= n
                            and dlen == end - mid
                            and buf[end - 1] == 0
                        ):
                            col_add(col)
                            data_add(buf[mid:end])
                            digest_add(digest)
                            path_add(buf[end - plen : end - 1])
                            cg_add(last_cg)
                            end_add(end)
                            pending += 1
                            pos = end
                            continue
                try:
                    pcr, col, name, dlen, deplen = cg1_from(buf, pos)
                    q = pos + cg1_size + deplen
                    (cglen,) = _u32_from(buf, q)
                    r = q + 4 + cglen
                    dng_, digest, plen = cg2_from(buf, r)
                except struct.error:
                    pass
                else:
                    end = r + cg2_size + plen
                    if (
                        pcr == 10
                        and name == _CG_NAME
                        and dng_ == dng
                        and 0 < deplen < MAX_FIELD
                        and 0 < cglen <= max_name
                        and 0 < plen <= max_name
                        and end <= n
                        and dlen == end - mid
                        and buf[q - 1] == 0
                        and buf[r - 1] == 0
                        and buf[end - 1] == 0
                    ):
                        col_add(col)
                        data_add(buf[mid:end])
                        digest_add(digest)
                        path_add(buf[end - plen : end - 1])
                        # one bytes object per run of a cgroup: its hash is computed once for
                        # all the dict lookups attribution and policy do on it
                        last_cg = buf[q + 4 : r - 1]
                        cg_add(last_cg)
                        last_mid = buf[mid : r + len(dng)]
                        end_add(end)
                        pending += 1
                        pos = end
                        continue
            if pending:
                assert shape is not None
                _fill(cols, pending, _FAST[mode], shape.alg)
                pending = 0
            try:
                row = _slow_entry(buf, pos, column_size)
            except _Bad as e:
                raise ImaParseError(start_index + len(cols.ends), pos, str(e)) from None
            if row is None:
                break
            cols.add(row)
            pos = row[R_END]
            tpl, alg, digest = row[R_TEMPLATE], row[R_ALG], row[R_DIGEST]
            mode = _FAST.index(tpl) if tpl in _FAST else 0
            if mode and (
                shape is None or shape.dfl != len(alg) + 2 + len(digest) or shape.alg != alg
            ):
                shape = _Shape(alg, len(digest), column_size)
                ng_from, ng_size, ng_data, ng_fixed, dng = (
                    shape.ng_from, shape.ng_size, shape.ng_data, shape.ng_fixed, shape.dng
                )  # fmt: skip
                cg_head_from, cg_data, dig_from, dig_size = (
                    shape.cg_head_from, shape.cg_data, shape.dig_from, shape.dig_size
                )  # fmt: skip
                cg1_from, cg1_size, cg2_from, cg2_size = (
                    shape.cg1_from, shape.cg1_size, shape.cg2_from, shape.cg2_size
                )  # fmt: skip
                last_mid = last_cg = b""
        if pending:
            assert shape is not None
            _fill(cols, pending, _FAST[mode], shape.alg)
    _check_text(cols, start_index, offset)
    return cols.freeze(start_index, offset, pos, column_size)


def _fill(cols: _Columns, count: int, template: bytes, alg: bytes) -> None:
    """The columns that are the same for every entry of a fast run, filled once per run."""
    cols.pcrs += repeat(IMA_PCR, count)
    cols.templates += repeat(template, count)
    cols.algs += repeat(alg, count)
    cols.signatures += repeat(None, count)


def _check_text(cols: _Columns, start_index: int, start_offset: int) -> None:
    """All paths and cgroup paths must be UTF-8: one decode of the NUL-joined batch (NUL never
    occurs inside a multi-byte sequence, so the join is valid iff every part is); find the culprit
    only when it fails."""
    try:
        b"\x00".join(cols.paths).decode("utf-8")
        b"\x00".join(filter(None, cols.cgroups)).decode("utf-8")
    except UnicodeDecodeError:
        for k, (path, cg) in enumerate(zip(cols.paths, cols.cgroups, strict=True)):
            for what, value in (("path", path), ("cg-path", cg or b"")):
                try:
                    value.decode("utf-8")
                except UnicodeDecodeError as e:
                    where = cols.ends[k - 1] if k else start_offset
                    why = f"{what} is not UTF-8 ({e.reason} at byte {e.start})"
                    raise ImaParseError(start_index + k, where, why) from None


# --- ASCII -------------------------------------------------------------------------------------


def _dng(alg: bytes, digest: bytes) -> bytes:
    field = alg + b":\x00" + digest
    return _u32_pack(len(field)) + field


def _sz(value: bytes) -> bytes:
    return _u32_pack(len(value) + 1) + value + b"\x00"


def _unhex(text: bytes, what: str) -> bytes:
    try:
        return binascii.unhexlify(text)
    except (binascii.Error, ValueError):
        raise _Bad(f"{what} {text[:80]!r} is not hex") from None


def _ascii_digest(token: bytes) -> tuple[bytes, bytes]:
    alg, colon, hexd = token.partition(b":")
    if not colon:
        digest = _unhex(alg, "digest")
        if len(digest) not in (16, 20):
            raise _Bad(f"digest without algorithm is {len(digest)} bytes")
        return (b"sha1" if len(digest) == 20 else b"md5"), digest
    digest = _unhex(hexd, "digest")
    if not alg.replace(b"-", b"").replace(b"_", b"").isalnum() or not 16 <= len(digest) <= 64:
        raise _Bad(f"digest {token[:80]!r} is not 'algo:hex'")
    return alg, digest


def _ascii_row(line: bytes, end: int) -> Row:
    try:
        pcr_s, column_s, template, rest = line.split(b" ", 3)
    except ValueError:
        raise _Bad("fewer than 4 space-separated columns") from None
    if not pcr_s.isdigit() or len(pcr_s) > 4:
        raise _Bad(f"PCR {pcr_s[:16]!r} is not a number")
    column = _unhex(column_s, "template hash")
    if len(column) not in (20, 32, 48, 64):
        raise _Bad(f"template hash is {len(column)} bytes")
    cgroup: bytes | None = None
    sig: bytes | None = None
    if template == b"ima-ng":
        dtok, _, path = rest.partition(b" ")
        alg, digest = _ascii_digest(dtok)
        data = _dng(alg, digest) + _sz(path)
    elif template == b"ima-cgpath":
        parts = rest.split(b" ", 3)
        if len(parts) != 4:
            raise _Bad("ima-cgpath needs dep, cg-path, digest and path")
        dep, cgroup, dtok, path = parts
        alg, digest = _ascii_digest(dtok)
        data = _sz(dep) + _sz(cgroup) + _dng(alg, digest) + _sz(path)
    elif template == b"ima-sig" or template == b"ima-buf":
        head, _, tail = rest.rpartition(b" ")
        dtok, space, path = head.partition(b" ")
        if not space:  # "digest path" with no sig column at all (evmctl prints it so)
            dtok, path, tail = head, tail, b""
        alg, digest = _ascii_digest(dtok)
        blob = _unhex(tail, "signature" if template == b"ima-sig" else "buffer")
        data = _dng(alg, digest) + _sz(path) + _u32_pack(len(blob)) + blob
        sig = (blob or None) if template == b"ima-sig" else None
    elif template == b"ima":
        dtok, _, path = rest.partition(b" ")
        digest = _unhex(dtok, "digest")
        if len(digest) != 20 or len(path) > MAX_LEGACY_NAME:
            raise _Bad("ima entry needs a 20-byte digest and a name of at most 255 bytes")
        alg = b"sha1"
        data = digest + path + bytes(_LEGACY_PAD - len(path))
    else:
        raise _Bad(f"unknown template {template[:MAX_TEMPLATE_NAME]!r}")
    if len(path) > MAX_PATH:
        raise _Bad(f"path is {len(path)} bytes (cap {MAX_PATH})")
    return (int(pcr_s), column, template, data, alg, digest, path, cgroup, sig, end)


def parse_ascii(buf: bytes, *, offset: int = 0, start_index: int = 0) -> ImaLog:
    """Parse ``ascii_runtime_measurements`` from byte ``offset``, rebuilding each entry's template
    data exactly as the binary form holds it, so replay does not care which file was read.

    Paths may contain spaces: each template splits only as often as it has fields before the path.
    A last line without its newline is a partial entry and is left for the next read.
    """
    cols = _Columns()
    pos = offset
    index = start_index
    n = len(buf)
    column_size = 0
    while pos < n:
        nl = buf.find(b"\n", pos)
        if nl < 0:
            break
        line = buf[pos:nl]
        try:
            if len(line) > MAX_TEMPLATE_DATA:
                raise _Bad(f"line is {len(line)} bytes")
            row = _ascii_row(line, nl + 1)
            size = len(row[R_COLUMN])
            if column_size and size != column_size:
                raise _Bad(f"template hash is {size} bytes, earlier ones {column_size}")
        except _Bad as e:
            raise ImaParseError(index, pos, str(e)) from None
        column_size = size
        cols.add(row)
        pos = nl + 1
        index += 1
    _check_text(cols, start_index, offset)
    return cols.freeze(start_index, offset, pos, column_size or 20)


def render_ascii_line(entry: ImaEntry) -> str:
    """The ASCII form of one entry, as ``ascii_runtime_measurements`` shows it (for tooling)."""
    digest = entry.file_digest.hex()
    if entry.template_name != "ima":
        digest = f"{entry.file_digest_alg}:{digest}"
    fields = [str(entry.pcr), entry.template_hash.hex(), entry.template_name]
    if entry.template_name == "ima-cgpath":
        dep, _ = _field(entry.template_data, 0, "dep")
        fields += [dep[:-1].decode("utf-8"), entry.cgroup_path or ""]
    fields += [digest, entry.path]
    if entry.template_name == "ima-sig":
        fields.append((entry.signature or b"").hex())
    elif entry.template_name == "ima-buf":
        _, pos = _field(entry.template_data, 0, "d-ng")
        _, pos = _field(entry.template_data, pos, "n-ng")
        fields.append(_field(entry.template_data, pos, "buf")[0].hex())
    return " ".join(fields)

"""One binary entry in full generality: the kernel's caps, each template's data fields, and the
general parser every entry can go through (the fast path in :mod:`.binary` reads only what it
has proven to have one shape, and falls back here for anything else).

Entry layout: ``u32 pcr || column || u32 name_len || name || u32 data_len || data`` (all
little-endian; the ``ima`` template has no ``data_len`` and an unpadded ``u32 len || name``).
Template data is a sequence of ``u32 len || field`` fields. Every length is checked against what
is left and against the caps before it is used.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from functools import partial
from typing import Final

from attestation.core.ima.columns import Row
from attestation.core.ima.errors import MalformedField

__all__ = [
    "LEGACY_PAD",
    "MAX_DIGEST",
    "MAX_FIELD",
    "MAX_LEGACY_NAME",
    "MAX_PATH",
    "MAX_TEMPLATE_DATA",
    "MAX_TEMPLATE_NAME",
    "read_entry",
    "read_field",
    "u32_from",
    "u32_pack",
]

#: Kernel limits (security/integrity/ima): template names are at most 15 bytes; the legacy
#: ``ima`` template's name field is at most 255 bytes; paths are at most PATH_MAX.
MAX_TEMPLATE_NAME: Final = 15
MAX_LEGACY_NAME: Final = 255
MAX_PATH: Final = 4096
#: Generous caps for the rest: ima-sig signatures are < 1 KiB, ima-buf key blobs a few KiB.
MAX_FIELD: Final = 64 * 1024
MAX_TEMPLATE_DATA: Final = 256 * 1024
MAX_DIGEST: Final = 64
#: The legacy ``ima`` template's data: digest || name zero-padded to this many bytes.
LEGACY_PAD: Final = MAX_LEGACY_NAME + 1

_U32: Final = struct.Struct("<I")
u32_from: Final = _U32.unpack_from
u32_pack: Final = _U32.pack

#: What a template's data holds: (alg, digest, path, cgroup, sig).
_Fields = tuple[bytes, bytes, bytes, bytes | None, bytes | None]


def read_field(data: bytes, pos: int, what: str) -> tuple[bytes, int]:
    """The ``u32 len || bytes`` field at ``pos``, and where the next one starts."""
    if pos + 4 > len(data):
        raise MalformedField(f"template data ends before the {what} field's length")
    (n,) = u32_from(data, pos)
    end = pos + 4 + n
    if n > MAX_FIELD or end > len(data):
        raise MalformedField(f"{what} field length {n} exceeds the template data")
    return data[pos + 4 : end], end


def _end(data: bytes, pos: int) -> None:
    if pos != len(data):
        raise MalformedField(f"{len(data) - pos} trailing bytes after the template fields")


def _digest_ng(field: bytes) -> tuple[bytes, bytes]:
    """d-ng: ``algo ":" NUL digest`` (older kernels: a bare SHA-1/MD5 digest)."""
    nul = field.find(b":\x00")
    if nul < 0:
        if len(field) in (16, 20):
            return (b"sha1" if len(field) == 20 else b"md5"), field
        raise MalformedField("d-ng digest field lacks 'algo:\\0'")
    alg = field[:nul]
    digest = field[nul + 2 :]
    if not alg.replace(b"-", b"").replace(b"_", b"").isalnum():
        raise MalformedField(f"d-ng digest algorithm {alg[:32]!r} is not a name")
    if not 16 <= len(digest) <= MAX_DIGEST:
        raise MalformedField(f"d-ng digest is {len(digest)} bytes")
    return alg, digest


def _string(field: bytes, what: str, cap: int) -> bytes:
    """n-ng / cg-path / dep: a NUL-terminated string."""
    if not field or field[-1] != 0:
        raise MalformedField(f"{what} field is not NUL-terminated")
    if len(field) > cap + 1:
        raise MalformedField(f"{what} field is {len(field)} bytes (cap {cap + 1})")
    return field[:-1]


def _fields_ng(data: bytes, third: str = "") -> _Fields:
    """ima-ng: d-ng || n-ng; ima-sig and ima-buf add a ``third`` field (sig, buf)."""
    d, pos = read_field(data, 0, "d-ng")
    n, pos = read_field(data, pos, "n-ng")
    extra = b""
    if third:
        extra, pos = read_field(data, pos, third)
    _end(data, pos)
    alg, digest = _digest_ng(d)
    sig = (extra or None) if third == "sig" else None
    return alg, digest, _string(n, "n-ng", MAX_PATH), None, sig


def _fields_cgpath(data: bytes) -> _Fields:
    """ima-cgpath: dep || cg-path || d-ng || n-ng."""
    dep, pos = read_field(data, 0, "dep")
    cg, pos = read_field(data, pos, "cg-path")
    d, pos = read_field(data, pos, "d-ng")
    n, pos = read_field(data, pos, "n-ng")
    _end(data, pos)
    _string(dep, "dep", MAX_FIELD)
    alg, digest = _digest_ng(d)
    return alg, digest, _string(n, "n-ng", MAX_PATH), _string(cg, "cg-path", MAX_PATH), None


_FIELD_PARSERS: Final[dict[bytes, Callable[[bytes], _Fields]]] = {
    b"ima-ng": _fields_ng,
    b"ima-sig": partial(_fields_ng, third="sig"),
    b"ima-buf": partial(_fields_ng, third="buf"),
    b"ima-cgpath": _fields_cgpath,
}


def read_entry(buf: bytes, pos: int, column_size: int) -> Row | None:
    """Parse the entry at ``pos`` in full generality; None if the buffer ends inside it."""
    n = len(buf)
    p = pos + 8 + column_size
    if p > n:
        return None
    pcr, column, name_len = struct.unpack_from(f"<I{column_size}sI", buf, pos)
    if not 0 < name_len <= MAX_TEMPLATE_NAME:
        raise MalformedField(f"template name length {name_len} (must be 1..{MAX_TEMPLATE_NAME})")
    if p + name_len + 4 > n:
        return None
    template = buf[p : p + name_len]
    p += name_len
    if template == b"ima":
        if p + 24 > n:
            return None
        digest = buf[p : p + 20]
        (nlen,) = u32_from(buf, p + 20)
        if nlen > MAX_LEGACY_NAME:
            raise MalformedField(f"ima name length {nlen} exceeds {MAX_LEGACY_NAME}")
        end = p + 24 + nlen
        if end > n:
            return None
        path = buf[p + 24 : end]
        return (pcr, column, template, digest + path + bytes(LEGACY_PAD - nlen), b"sha1",
                digest, path, None, None, end)  # fmt: skip
    (dlen,) = u32_from(buf, p)
    if dlen > MAX_TEMPLATE_DATA:
        raise MalformedField(f"template data length {dlen} exceeds {MAX_TEMPLATE_DATA}")
    end = p + 4 + dlen
    if end > n:
        return None
    data = buf[p + 4 : end]
    fields = _FIELD_PARSERS.get(template)
    if fields is None:
        raise MalformedField(f"unknown template {template[:MAX_TEMPLATE_NAME]!r}")
    alg, digest, path, cgroup, sig = fields(data)
    return (pcr, column, template, data, alg, digest, path, cgroup, sig, end)

"""``ascii_runtime_measurements``: parsed into the same columns as the binary list, with each
entry's template data rebuilt exactly as the binary form holds it, so replay does not care which
file was read; and one entry rendered back to that form (for tooling).

The kernel prints names as raw bytes, unescaped: a path may hold spaces (each template splits only
as often as it has fields before the path) but not a newline, and an ima-cgpath cgroup path or
dep may hold neither (their columns are space-separated); the binary list has no such limits."""

from __future__ import annotations

import binascii

from attestation.core.ima.columns import R_COLUMN, Columns, ImaLog, Row
from attestation.core.ima.entry import (
    LEGACY_PAD,
    MAX_LEGACY_NAME,
    MAX_PATH,
    MAX_TEMPLATE_DATA,
    MAX_TEMPLATE_NAME,
    read_field,
    u32_pack,
)
from attestation.core.ima.errors import ImaParseError, MalformedField
from attestation.core.ima.names import name_bytes
from attestation.core.types import ImaEntry

__all__ = ["parse_ascii", "render_ascii_line"]


def _dng(alg: bytes, digest: bytes) -> bytes:
    field = alg + b":\x00" + digest
    return u32_pack(len(field)) + field


def _sz(value: bytes) -> bytes:
    return u32_pack(len(value) + 1) + value + b"\x00"


def _unhex(text: bytes, what: str) -> bytes:
    try:
        return binascii.unhexlify(text)
    except (binascii.Error, ValueError):
        raise MalformedField(f"{what} {text[:80]!r} is not hex") from None


def _ascii_digest(token: bytes) -> tuple[bytes, bytes]:
    alg, colon, hexd = token.partition(b":")
    if not colon:
        digest = _unhex(alg, "digest")
        if len(digest) not in (16, 20):
            raise MalformedField(f"digest without algorithm is {len(digest)} bytes")
        return (b"sha1" if len(digest) == 20 else b"md5"), digest
    digest = _unhex(hexd, "digest")
    if not alg.replace(b"-", b"").replace(b"_", b"").isalnum() or not 16 <= len(digest) <= 64:
        raise MalformedField(f"digest {token[:80]!r} is not 'algo:hex'")
    return alg, digest


def _ascii_row(line: bytes, end: int) -> Row:
    try:
        pcr_s, column_s, template, rest = line.split(b" ", 3)
    except ValueError:
        raise MalformedField("fewer than 4 space-separated columns") from None
    if not pcr_s.isdigit() or len(pcr_s) > 4:
        raise MalformedField(f"PCR {pcr_s[:16]!r} is not a number")
    column = _unhex(column_s, "template hash")
    if len(column) not in (20, 32, 48, 64):
        raise MalformedField(f"template hash is {len(column)} bytes")
    cgroup: bytes | None = None
    sig: bytes | None = None
    if template == b"ima-ng":
        dtok, _, path = rest.partition(b" ")
        alg, digest = _ascii_digest(dtok)
        data = _dng(alg, digest) + _sz(path)
    elif template == b"ima-cgpath":
        parts = rest.split(b" ", 3)
        if len(parts) != 4:
            raise MalformedField("ima-cgpath needs dep, cg-path, digest and path")
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
        data = _dng(alg, digest) + _sz(path) + u32_pack(len(blob)) + blob
        sig = (blob or None) if template == b"ima-sig" else None
    elif template == b"ima":
        dtok, _, path = rest.partition(b" ")
        digest = _unhex(dtok, "digest")
        if len(digest) != 20 or len(path) > MAX_LEGACY_NAME:
            raise MalformedField("ima entry needs a 20-byte digest and a name of at most 255 bytes")
        alg = b"sha1"
        data = digest + path + bytes(LEGACY_PAD - len(path))
    else:
        raise MalformedField(f"unknown template {template[:MAX_TEMPLATE_NAME]!r}")
    if len(path) > MAX_PATH:
        raise MalformedField(f"path is {len(path)} bytes (cap {MAX_PATH})")
    return (int(pcr_s), column, template, data, alg, digest, path, cgroup, sig, end)


def parse_ascii(buf: bytes, *, offset: int = 0, start_index: int = 0) -> ImaLog:
    """Parse ``ascii_runtime_measurements`` from byte ``offset``.

    Paths may contain spaces: each template splits only as often as it has fields before the path.
    A last line without its newline is a partial entry and is left for the next read.
    """
    cols = Columns()
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
                raise MalformedField(f"line is {len(line)} bytes")
            row = _ascii_row(line, nl + 1)
            size = len(row[R_COLUMN])
            if column_size and size != column_size:
                raise MalformedField(f"template hash is {size} bytes, earlier ones {column_size}")
        except MalformedField as e:
            raise ImaParseError(index, pos, str(e)) from None
        column_size = size
        cols.add(row)
        pos = nl + 1
        index += 1
    return cols.freeze(start_index, offset, pos, column_size or 20)


def render_ascii_line(entry: ImaEntry) -> bytes:
    """The ASCII form of one entry, as ``ascii_runtime_measurements`` shows it (without the
    newline): names are the logged bytes, as the kernel prints them."""
    digest = entry.file_digest.hex()
    if entry.template_name != "ima":
        digest = f"{entry.file_digest_alg}:{digest}"
    fields = [str(entry.pcr).encode(), entry.template_hash.hex().encode(),
              entry.template_name.encode()]  # fmt: skip
    if entry.template_name == "ima-cgpath":
        dep, _ = read_field(entry.template_data, 0, "dep")
        fields += [dep[:-1], name_bytes(entry.cgroup_path or "")]
    fields += [digest.encode(), name_bytes(entry.path)]
    if entry.template_name == "ima-sig":
        fields.append((entry.signature or b"").hex().encode())
    elif entry.template_name == "ima-buf":
        _, pos = read_field(entry.template_data, 0, "d-ng")
        _, pos = read_field(entry.template_data, pos, "n-ng")
        fields.append(read_field(entry.template_data, pos, "buf")[0].hex().encode())
    return b" ".join(fields)

"""Reading TPM structures from untrusted bytes: the error every parser raises, the bounds-checked
reader the careful paths use, and the hash algorithm ids (all integers are big-endian)."""

from __future__ import annotations

import struct
from typing import Final

from attestation.core.types import HashAlg

__all__ = ["HASH_BY_ID", "U16", "U32", "QuoteParseError", "Reader", "hash_alg"]

#: The hash algorithms by TPM_ALG_ID (Part 2, 6.3)
HASH_BY_ID: Final = {alg.tpm_alg_id: alg for alg in HashAlg}
U16: Final = struct.Struct(">H")
U32: Final = struct.Struct(">I")


class QuoteParseError(ValueError):
    """Malformed TPM structure bytes (attestation, signature or public area)."""


def hash_alg(alg_id: int, what: str) -> HashAlg:
    """The :class:`HashAlg` for a TPM_ALG_ID, or a parse error naming ``what``."""
    alg = HASH_BY_ID.get(alg_id)
    if alg is None:
        raise QuoteParseError(f"{what}: unsupported hash algorithm 0x{alg_id:04x}")
    return alg


class Reader:
    """A bounds-checked cursor over one structure; every error names the field and offset."""

    __slots__ = ("buf", "pos", "what")

    def __init__(self, buf: bytes, what: str) -> None:
        self.buf = buf
        self.pos = 0
        self.what = what

    def fail(self, field: str, problem: str) -> QuoteParseError:
        return QuoteParseError(f"{self.what}.{field} at offset {self.pos}: {problem}")

    def header(self, layout: struct.Struct, field: str) -> tuple[int, ...]:
        """The fixed-size fields a structure starts with (the first of them named ``field``)."""
        if len(self.buf) < layout.size:
            raise self.fail(field, f"needs {layout.size} bytes, {len(self.buf)} given")
        values: tuple[int, ...] = layout.unpack_from(self.buf, 0)
        self.pos = layout.size
        return values

    def take(self, n: int, field: str) -> bytes:
        end = self.pos + n
        if end > len(self.buf):
            raise self.fail(field, f"needs {n} bytes, {len(self.buf) - self.pos} left")
        out = self.buf[self.pos : end]
        self.pos = end
        return out

    def u8(self, field: str) -> int:
        return self.take(1, field)[0]

    def u16(self, field: str) -> int:
        value: int = U16.unpack(self.take(2, field))[0]
        return value

    def u32(self, field: str) -> int:
        value: int = U32.unpack(self.take(4, field))[0]
        return value

    def tpm2b(self, field: str) -> bytes:
        return self.take(self.u16(field + ".size"), field)

    def end(self) -> None:
        if self.pos != len(self.buf):
            raise self.fail("end", f"{len(self.buf) - self.pos} trailing bytes")

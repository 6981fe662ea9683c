"""Stub of the optional C extension built from attestation/core/_imafast.c (see its header
comment)."""

from collections.abc import Callable, Collection, Mapping

Table = Mapping[bytes, Collection[bytes]]

#: the behaviour version the build implements (logcheck_native uses only the one it expects)
API: int

def scan(
    log: bytes,
    column_size: int,
    banks: tuple[tuple[str, bytes, bytes], ...],
    table_for: Callable[[bytes | None], Table | None],
    /,
) -> tuple[int, int, int, list[tuple[int, int, int]], dict[bytes | None, int]] | None: ...

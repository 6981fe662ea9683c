"""A parsed stretch of the log as columns of raw bytes, and the rows the parsers fill them from.

Building one frozen :class:`ImaEntry` per entry costs more than the two SHA-256 calls replay needs,
so :class:`ImaLog` keeps one column per field (no decoding) and hands out entries on demand;
replay, attribution and policy read the columns.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Final, overload

from attestation.core.ima.names import name_text
from attestation.core.types import IMA_PCR, ImaEntry

__all__ = [
    "R_ALG",
    "R_CGROUP",
    "R_COLUMN",
    "R_DATA",
    "R_DIGEST",
    "R_END",
    "R_PATH",
    "R_PCR",
    "R_SIG",
    "R_TEMPLATE",
    "Columns",
    "ImaLog",
    "Row",
    "row_to_entry",
]

#: Row layout of the general parsers: one tuple per entry, indices below. Raw bytes; ``data`` is
#: the template data exactly as every PCR bank hashes it (for ``ima``: digest || name zero-padded
#: to 256 bytes).
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

_Add = Callable[[bytes], None]
_Appenders = tuple[_Add, _Add, _Add, _Add, Callable[[bytes | None], None], Callable[[int], None]]


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


class Columns:
    """Column lists being filled: one row at a time, or (the fast path) the varying columns per
    entry and the constant ones once per run with :meth:`fill`."""

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

    def appenders(self) -> _Appenders:
        """The ``append`` of each column a fast run fills per entry (columns, datas, digests,
        paths, cgroups, ends), for its loop to hold in locals."""
        return (self.columns.append, self.datas.append, self.digests.append, self.paths.append,
                self.cgroups.append, self.ends.append)  # fmt: skip

    def fill(self, count: int, template: bytes, alg: bytes) -> None:
        """The columns that are the same for every entry of a fast run, filled once per run."""
        if not count:
            return
        self.pcrs += repeat(IMA_PCR, count)
        self.templates += repeat(template, count)
        self.algs += repeat(alg, count)
        self.signatures += repeat(None, count)

    def freeze(
        self, start_index: int, start_offset: int, next_offset: int, column_size: int
    ) -> ImaLog:
        """The finished batch. Paths and cgroup paths stay bytes, whatever they hold: the
        kernel logs names as bytes, and one that is not UTF-8 is judged like any other."""
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
        path=name_text(row[R_PATH]),
        cgroup_path=None if cgroup is None else name_text(cgroup),
        signature=row[R_SIG],
    )

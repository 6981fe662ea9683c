"""Replay PCR 10 from the IMA log, incrementally, and check it against a quote.

PCR 10 is the only thing that makes the log trustworthy: the log comes from the (untrusted) agent,
the PCR from the TPM. Every bank extends ``H_bank(template_data)`` for each entry, whatever hash
the log's column holds; a violation entry (all-zero column) extends all-0xFF instead.

Races: the kernel appends an entry to the list *before* it extends the PCR, so a log read after the
quote may run a few entries ahead of PCR 10. We accept the prefix whose running value equals the
quoted value (a hash chain meets it at most once); the rest wait for the next round. A log behind
the quote, reordered, rewritten or with entries dropped has no such prefix: ``ima.pcr_mismatch``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import compress, count
from operator import methodcaller, ne
from types import MappingProxyType
from typing import Final

from attestation.core.ima import ImaLog, name_text
from attestation.core.ima import shown as shown_name
from attestation.core.types import IMA_PCR, Failure, HashAlg, ImaEntry

__all__ = [
    "COLUMN_ALGS",
    "ReplayResult",
    "ReplayState",
    "boot_aggregates",
    "check_boot_aggregate",
    "locating_bank",
    "replay",
    "template_hash_mismatch",
    "verify_against_quote",
]

_Hash = Callable[[bytes], "hashlib._Hash"]


def _hasher(alg: HashAlg) -> _Hash:
    # The named constructors (hashlib.sha256) skip hashlib.new()'s name lookup on every call.
    h: _Hash = getattr(hashlib, alg.value)
    return h


_digest = methodcaller("digest")


def _frozen(pcrs: Mapping[HashAlg, bytes]) -> Mapping[HashAlg, bytes]:
    return MappingProxyType(dict(pcrs))


@dataclass(frozen=True, slots=True)
class ReplayState:
    """Where the verifier is in one node's log: the next entry to read (index and byte offset)
    and the running PCR 10 value per bank after every entry before it."""

    next_index: int = 0
    next_offset: int = 0
    pcrs: Mapping[HashAlg, bytes] = field(default_factory=lambda: _frozen({}))

    @classmethod
    def initial(cls, banks: Iterable[HashAlg] = (HashAlg.SHA256,)) -> ReplayState:
        """PCR 10 resets to all-zero at boot."""
        return cls(0, 0, _frozen({alg: bytes(alg.digest_size) for alg in banks}))

    def pcr(self, alg: HashAlg) -> bytes:
        """The running value of ``alg``'s bank; all-zero when nothing was replayed yet."""
        value = self.pcrs.get(alg)
        return bytes(alg.digest_size) if value is None else value


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """``covered`` of the new entries are proven by the quote; ``state`` has moved past them (or
    not at all when ``failures`` is non-empty)."""

    state: ReplayState
    covered: int
    failures: tuple[Failure, ...] = ()


#: A template-hash column's algorithm, by its size.
COLUMN_ALGS: Final = {20: HashAlg.SHA1, 32: HashAlg.SHA256, 48: HashAlg.SHA384, 64: HashAlg.SHA512}


def _steps(entries: ImaLog | Sequence[ImaEntry]) -> tuple[Sequence[bytes], Mapping[int, str]]:
    """Template data per entry, and the positions that do not extend H(data): ``violation``
    (extends all-0xFF) and ``pcr`` (the kernel's ``pcr=`` rule sent it to another PCR)."""
    if isinstance(entries, ImaLog):
        return entries.datas, dict(entries.skip)
    skip: dict[int, str] = {}
    for k, entry in enumerate(entries):
        if entry.is_violation:
            skip[k] = "violation"
        elif entry.pcr != IMA_PCR:
            skip[k] = "pcr"
    return [e.template_data for e in entries], skip


def replay(
    alg: HashAlg, start: bytes, datas: Sequence[bytes], skip: Mapping[int, str] | None = None
) -> bytes:
    """PCR 10 of bank ``alg`` after extending ``start`` with every entry (pure, whole list)."""
    return _scan(alg, start, datas, skip or {}, None)[1]


def _scan(
    alg: HashAlg,
    start: bytes,
    datas: Sequence[bytes],
    skip: Mapping[int, str],
    target: bytes | None,
    hashed: Sequence[bytes] | None = None,
) -> tuple[int, bytes]:
    """The number of entries after which the running value equals ``target`` (-1 if none; None
    never matches: the whole list is replayed), and the last value computed. Stops at the first
    match: later entries are not yet covered. ``hashed``: H(template data) of each entry in this
    bank, when the caller has them (no skips)."""
    pcr = start
    if pcr == target:
        return 0, pcr
    h = _hasher(alg)
    if not skip:
        # H(template data) for the whole batch in C (map), only the chain in Python
        digests = map(_digest, map(h, datas)) if hashed is None else hashed
        for k, digest in enumerate(digests, 1):
            pcr = h(pcr + digest).digest()
            if pcr == target:
                return k, pcr
        return -1, pcr
    ff = b"\xff" * alg.digest_size
    for k, data in enumerate(datas):
        kind = skip.get(k)
        if kind is None:
            pcr = h(pcr + h(data).digest()).digest()
        elif kind == "violation":
            pcr = h(pcr + ff).digest()
        if pcr == target:
            return k + 1, pcr
    return -1, pcr


def locating_bank(quoted_pcr10: Mapping[HashAlg, bytes]) -> HashAlg | None:
    """The quoted bank that locates the covered prefix of a log (SHA-256 preferred, else the
    first quoted); the other banks are replayed over that prefix only. None: no PCR 10 quoted."""
    if HashAlg.SHA256 in quoted_pcr10:
        return HashAlg.SHA256
    return next((alg for alg in HashAlg if alg in quoted_pcr10), None)


def verify_against_quote(
    state: ReplayState,
    new_entries: ImaLog | Sequence[ImaEntry],
    quoted_pcr10: Mapping[HashAlg, bytes],
) -> ReplayResult:
    """Advance ``state`` over the prefix of ``new_entries`` that the quoted PCR 10 covers.

    Every quoted bank must agree. The first bank found (SHA-256 preferred) locates the prefix;
    the others are replayed over that prefix only.
    """
    banks = [alg for alg in HashAlg if alg in quoted_pcr10]
    primary = locating_bank(quoted_pcr10)
    if primary is None:
        return ReplayResult(state, 0, (Failure("ima.pcr_mismatch", "the quote holds no PCR 10"),))
    datas, skip = _steps(new_entries)
    hashed = None  # a per-bank list's column is the primary bank's H(data): hash once
    if not skip and _column_alg(new_entries) is primary:
        hashed = list(map(_digest, map(_hasher(primary), datas)))
    covered, last = _scan(primary, state.pcr(primary), datas, skip, quoted_pcr10[primary], hashed)
    if covered < 0:
        return ReplayResult(
            state, 0, (_mismatch(primary, quoted_pcr10[primary], last, state, datas),)
        )
    prefix = datas[:covered]
    pcrs = {primary: quoted_pcr10[primary]}
    for alg in banks:
        if alg is primary:
            continue
        value = replay(alg, state.pcr(alg), prefix, skip)
        if value != quoted_pcr10[alg]:
            return ReplayResult(
                state, 0, (_mismatch(alg, quoted_pcr10[alg], value, state, prefix),)
            )
        pcrs[alg] = value
    forged = template_hash_mismatch(new_entries, covered, state.next_index, hashed)
    if forged is not None:
        return ReplayResult(state, 0, (forged,))
    if isinstance(new_entries, ImaLog):
        offset = new_entries.end_offset(covered) if covered else state.next_offset
    else:
        offset = state.next_offset
    return ReplayResult(ReplayState(state.next_index + covered, offset, _frozen(pcrs)), covered)


def _column_alg(entries: ImaLog | Sequence[ImaEntry]) -> HashAlg | None:
    if isinstance(entries, ImaLog):
        return COLUMN_ALGS.get(entries.column_size)
    return COLUMN_ALGS.get(len(entries[0].template_hash)) if entries else None


def template_hash_mismatch(
    entries: ImaLog | Sequence[ImaEntry],
    covered: int,
    first_index: int = 0,
    hashed: Sequence[bytes] | None = None,
) -> Failure | None:
    """The first of the first ``covered`` entries whose template-hash column is not H(template
    data), as a failure; None when they all agree. One C-level pass over the columns; only the
    disagreeing positions (violations, a forgery) are looked at one by one. ``hashed``: H(data)
    per entry in the first column's algorithm, when the caller has them."""
    columns: Sequence[bytes]
    datas: Sequence[bytes]
    paths: Sequence[bytes | str]
    if isinstance(entries, ImaLog):
        columns, datas, paths = entries.columns[:covered], entries.datas[:covered], entries.paths
    else:
        columns = [e.template_hash for e in entries[:covered]]
        datas = [e.template_data for e in entries[:covered]]
        paths = [e.path for e in entries[:covered]]
    if not columns:
        return None
    first = COLUMN_ALGS.get(len(columns[0]), HashAlg.SHA1)
    computed = (
        hashed[:covered] if hashed is not None else list(map(_digest, map(_hasher(first), datas)))
    )
    for k in compress(count(), map(ne, columns, computed)):
        column = columns[k]
        if not any(column):
            continue  # a violation: the kernel logs zeros
        alg = COLUMN_ALGS.get(len(column), first)  # only hand-built entries mix sizes
        want = computed[k] if alg is first else _hasher(alg)(datas[k]).digest()
        if column == want:
            continue
        path = paths[k]
        name = shown_name(name_text(path) if isinstance(path, bytes) else path)
        return Failure(
            "ima.template_hash_mismatch",
            f"entry {first_index + k} ({name}): the template-hash column is {column.hex()} but "
            f"{alg.value} of its template data is {want.hex()}: the list was rewritten (the "
            "kernel writes both from the same data)",
            path=name,
        )
    return None


def _mismatch(
    alg: HashAlg, quoted: bytes, replayed: bytes, state: ReplayState, datas: Sequence[bytes]
) -> Failure:
    first = state.next_index
    return Failure(
        "ima.pcr_mismatch",
        f"PCR 10 ({alg.value}) is {quoted.hex()} in the quote but replaying entries "
        f"{first}..{first + len(datas) - 1} ({len(datas)} new) never reaches it (last value "
        f"{replayed.hex()}): the log was truncated, reordered, rewritten or has entries missing",
    )


# --- boot_aggregate ----------------------------------------------------------------------------


def boot_aggregates(alg: HashAlg, pcrs: Mapping[int, bytes]) -> tuple[bytes, ...]:
    """The values the kernel may have logged: H(PCR0..7) (SHA-1 banks and kernels < 5.8) and,
    when PCRs 8 and 9 are known, H(PCR0..9) (non-SHA-1 banks since 5.8, which add grub's
    command line and kernel image)."""
    if any(i not in pcrs for i in range(8)):
        return ()
    h = _hasher(alg)
    low = b"".join(pcrs[i] for i in range(8))
    out = [h(low).digest()]
    if 8 in pcrs and 9 in pcrs:
        out.append(h(low + pcrs[8] + pcrs[9]).digest())
    return tuple(out)


def check_boot_aggregate(
    entry: ImaEntry,
    quoted_pcrs: Mapping[HashAlg, Mapping[int, bytes]],
    allowed: Collection[bytes] = (),
) -> Failure | None:
    """The log's first entry must be ``boot_aggregate`` and match the quoted PCRs 0-7 (or 0-9) of
    its digest's bank, or a value the policy lists (e.g. a TPM without that bank)."""
    if entry.path != "boot_aggregate":
        return Failure(
            "ima.boot_aggregate_mismatch",
            f"the log's first entry is {shown_name(entry.path)}, not boot_aggregate",
            path=shown_name(entry.path),
        )
    digest = entry.file_digest
    if digest in allowed:
        return None
    try:
        alg = HashAlg(entry.file_digest_alg)
    except ValueError:
        alg = None
    expected = boot_aggregates(alg, quoted_pcrs.get(alg, {})) if alg else ()
    if digest in expected:
        return None
    shown = ", ".join(e.hex() for e in expected) or "none (PCRs 0-7 of that bank not quoted)"
    return Failure(
        "ima.boot_aggregate_mismatch",
        f"boot_aggregate is {entry.file_digest_alg}:{digest.hex()}, expected {shown}",
        path="boot_aggregate",
        digest=f"{entry.file_digest_alg}:{digest.hex()}",
    )

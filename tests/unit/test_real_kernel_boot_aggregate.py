"""A real kernel's boot_aggregate (Debian 12's 6.1 kernel under QEMU/SeaBIOS with swtpm, read
back from the guest by tests/realnode): with a SHA-256 bank the kernel hashes PCRs 0-9, not
0-7, so the verifier must quote PCRs 8 and 9 by default or no real node could ever pass.

The first entry below is rebuilt from the kernel's ascii list line; its template hash (SHA-1 of
the template data, the binary list's column) is the kernel's own, which proves the bytes."""

from __future__ import annotations

import hashlib
import struct

from attestation.core.evidence import DEFAULT_PCRS, EvidenceQuery
from attestation.core.ima import parse_binary
from attestation.core.replay import check_boot_aggregate
from attestation.core.types import HashAlg

#: the kernel's line: 10 b7a32d72... ima-ng sha256:19e87673... boot_aggregate
_COLUMN = bytes.fromhex("b7a32d72cac9db7d14922b33cc7b11e90114fec8")
_DIGEST = bytes.fromhex("19e8767365e5f0df1b7376d7b937bc121e9d12b3bfcf66894c3913668f489fa8")
#: /sys/class/tpm/tpm0/pcr-sha256/0..9 in that guest (SeaBIOS measures 0-7; nothing 8-9)
_PCRS = {
    i: bytes.fromhex(v)
    for i, v in enumerate([
        "e21b703ee69c77476bccb43ec0336a9a1b2914b378944f7b00a10214ca8fea93",
        "9abd49016df0c004f764cde75500989c0923dee9e10c519dad5c8731051a74c1",
        "eafc36777287f6d88290432bfb6f6cdc85a42afbc2441e3c679a718058d56d58",
        "e21b703ee69c77476bccb43ec0336a9a1b2914b378944f7b00a10214ca8fea93",
        "1eb9aa21337cc1fa31ce5f56900d7bf59b9dda366823095aed06544caa2557ca",
        "e21b703ee69c77476bccb43ec0336a9a1b2914b378944f7b00a10214ca8fea93",
        "e21b703ee69c77476bccb43ec0336a9a1b2914b378944f7b00a10214ca8fea93",
        "e21b703ee69c77476bccb43ec0336a9a1b2914b378944f7b00a10214ca8fea93",
        "00" * 32,
        "00" * 32,
    ])
}  # fmt: skip


def _lv(b: bytes) -> bytes:
    return struct.pack("<I", len(b)) + b


def _entry() -> bytes:
    data = _lv(b"sha256:\0" + _DIGEST) + _lv(b"boot_aggregate\0")
    assert hashlib.sha1(data).digest() == _COLUMN  # noqa: S324 - the kernel's template hash
    return struct.pack("<I", 10) + _COLUMN + _lv(b"ima-ng") + _lv(data)


def test_the_real_boot_aggregate_covers_pcrs_0_to_9() -> None:
    (entry,) = parse_binary(_entry())
    assert check_boot_aggregate(entry, {HashAlg.SHA256: _PCRS}) is None


def test_with_pcrs_0_to_7_only_it_cannot_be_checked() -> None:
    """What the verifier saw on the real node before it quoted 8 and 9."""
    (entry,) = parse_binary(_entry())
    low = {i: _PCRS[i] for i in range(8)}
    failure = check_boot_aggregate(entry, {HashAlg.SHA256: low})
    assert failure is not None
    assert failure.id == "ima.boot_aggregate_mismatch"


def test_the_verifier_quotes_pcrs_8_and_9_by_default() -> None:
    assert {8, 9} <= set(DEFAULT_PCRS)
    assert {8, 9} <= set(EvidenceQuery(nonce=b"n" * 20).pcrs)

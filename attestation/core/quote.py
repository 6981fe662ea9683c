"""Pure verification of a TPM2_Quote against the node's AK, the verifier's nonce and PCR values.

Failures are collected, not raised, so one round reports everything wrong with a quote. The
checks are cheap next to the signature verification, which dominates: the AK's public key is
loaded once per AK (cached by its bytes) and nothing is parsed twice.

A valid quote can still be too old: freshness is the nonce's job, and the caller must never
accept a nonce twice. ``clock`` is the TPM's monotonic time since its last clear, not wall time.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from attestation.core.tpm_types import (
    Attest,
    PcrSelection,
    QuoteParseError,
    Signature,
    parse_attest,
    parse_public,
    parse_signature,
)
from attestation.core.tpm_types.constants import (
    ALG_ECDSA,
    ALG_RSAPSS,
    ALG_RSASSA,
    TPM_GENERATED_VALUE,
    TPM_ST_ATTEST_QUOTE,
)
from attestation.core.types import ClockInfo, Failure, HashAlg

__all__ = ["QuoteResult", "pcr_digest", "verify_quote"]

PcrValues = Mapping[HashAlg, Mapping[int, bytes]]

_QUOTE_TYPE: Final = TPM_ST_ATTEST_QUOTE.to_bytes(2, "big")
_HASHLIB: Final = {
    HashAlg.SHA1: hashlib.sha1,
    HashAlg.SHA256: hashlib.sha256,
    HashAlg.SHA384: hashlib.sha384,
    HashAlg.SHA512: hashlib.sha512,
}
_HASHES: Final[dict[HashAlg, hashes.HashAlgorithm]] = {
    HashAlg.SHA1: hashes.SHA1(),  # noqa: S303 - TPM banks/schemes may be SHA-1; judged elsewhere
    HashAlg.SHA256: hashes.SHA256(),
    HashAlg.SHA384: hashes.SHA384(),
    HashAlg.SHA512: hashes.SHA512(),
}

#: Built once: constructing these costs as much as the rest of the checks together.
_ECDSA: Final = {alg: ec.ECDSA(h) for alg, h in _HASHES.items()}
_PKCS1V15: Final = padding.PKCS1v15()


@dataclass(frozen=True, slots=True)
class QuoteResult:
    """The outcome of one quote check.

    ``attest`` is None only when the quote could not be parsed (``quote.malformed``).
    ``rebooted`` says resetCount went up since ``previous``: not a failure, but the IMA log
    restarted, so the verifier replays it from offset 0.
    """

    attest: Attest | None
    failures: tuple[Failure, ...]
    rebooted: bool = False

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def clock_info(self) -> ClockInfo | None:
        return None if self.attest is None else self.attest.clock_info

    @property
    def firmware_version(self) -> int | None:
        return None if self.attest is None else self.attest.firmware_version


_Ak = tuple[ec.EllipticCurvePublicKey | None, rsa.RSAPublicKey | None]


@lru_cache(maxsize=4096)
def _load_ak(ak_public: bytes) -> _Ak:
    """The AK's key, typed once per AK rather than with isinstance on every quote."""
    key = parse_public(ak_public).public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        return key, None
    return None, key


def pcr_digest(alg: HashAlg, selection: PcrSelection, pcr_values: PcrValues) -> bytes:
    """H_alg(concatenation of the selected PCR values in selection order), as TPM2_Quote makes
    its pcrDigest. Raises KeyError if a selected value is missing."""
    return _HASHLIB[alg](
        b"".join(b"".join(map(pcr_values[bank].__getitem__, pcrs)) for bank, pcrs in selection)
    ).digest()


def _digest_if_exact(alg: HashAlg, selection: PcrSelection, pcr_values: PcrValues) -> bytes | None:
    """pcr_digest, or None unless the values are exactly the selected ones: the common case in
    one pass (a selection holds no PCR twice, so equal counts with every PCR found mean equal
    sets); the caller explains any other case."""
    if len(pcr_values) != len(selection):
        return None
    parts: list[bytes] = []
    try:
        for bank, pcrs in selection:
            values = pcr_values[bank]
            if len(values) != len(pcrs):
                return None
            parts.extend(map(values.__getitem__, pcrs))
    except KeyError:
        return None
    return _HASHLIB[alg](b"".join(parts)).digest()


def _ecdsa_der(r: bytes, s: bytes) -> bytes:
    """The DER ECDSA-Sig-Value of a TPMS_SIGNATURE_ECDSA; r and s have at most 66 bytes (P-521),
    so every length fits the short or the one-byte long form."""
    r = r.lstrip(b"\0") or b"\0"
    s = s.lstrip(b"\0") or b"\0"
    if r[0] & 0x80:
        r = b"\0" + r
    if s[0] & 0x80:
        s = b"\0" + s
    size = 4 + len(r) + len(s)
    head = bytes((0x30, size)) if size < 0x80 else bytes((0x30, 0x81, size))
    return b"".join((head, bytes((2, len(r))), r, bytes((2, len(s))), s))


def _signature_ok(ak: _Ak, sig: Signature, message: bytes) -> bool:
    ec_key, rsa_key = ak
    try:
        if sig.sig_alg == ALG_ECDSA:
            if ec_key is None or len(sig.r) > 66 or len(sig.s) > 66:
                return False
            ec_key.verify(_ecdsa_der(sig.r, sig.s), message, _ECDSA[sig.hash_alg])
            return True
        if rsa_key is None:
            return False
        algorithm = _HASHES[sig.hash_alg]
        pad: padding.AsymmetricPadding
        if sig.sig_alg == ALG_RSASSA:
            pad = _PKCS1V15
        else:
            assert sig.sig_alg == ALG_RSAPSS
            pad = padding.PSS(mgf=padding.MGF1(algorithm), salt_length=padding.PSS.AUTO)
        rsa_key.verify(sig.sig, message, pad, algorithm)
        return True
    except InvalidSignature:
        return False


def _selection_failures(
    selection: PcrSelection, pcr_values: PcrValues, expected: Mapping[HashAlg, Collection[int]]
) -> list[Failure]:
    quoted = {bank: set(pcrs) for bank, pcrs in selection}
    out = []
    if len(quoted) != len(selection):
        out.append(Failure("quote.pcr_selection_mismatch", "the quote selects a bank twice"))
    for bank, pcrs in expected.items():
        missing = set(pcrs) - quoted.get(bank, set())
        if missing:
            out.append(
                Failure(
                    "quote.pcr_selection_mismatch",
                    f"the quote leaves out {bank.value} PCRs {sorted(missing)} that were asked for",
                )
            )
    for bank, pcrs in quoted.items():
        given = set(pcr_values.get(bank, {}))
        if given != pcrs:
            out.append(
                Failure(
                    "quote.pcr_selection_mismatch",
                    f"the quote selects {bank.value} PCRs {sorted(pcrs)} "
                    f"but values came for {sorted(given)}",
                )
            )
    extra = set(pcr_values) - set(quoted)
    if extra:
        out.append(
            Failure(
                "quote.pcr_selection_mismatch",
                f"PCR values came for banks the quote does not select: "
                f"{sorted(b.value for b in extra)}",
            )
        )
    return out


def _went_back(failure_id: str, counter: str, before: int, after: int) -> Failure:
    """A TPMS_CLOCK_INFO counter that only ever goes up went down."""
    return Failure(failure_id, f"{counter} went from {before} back to {after}")


def _clock_failures(now: ClockInfo, previous: ClockInfo | None) -> tuple[list[Failure], bool]:
    out = []
    if not now.safe:
        out.append(
            Failure(
                "quote.clock_unsafe",
                "the TPM clock is not safe: it may have been rolled back since it was last saved",
            )
        )
    if previous is None:
        return out, False
    if now.reset_count < previous.reset_count:
        before, after = previous.reset_count, now.reset_count
        out.append(_went_back("quote.reset_count_rollback", "resetCount", before, after))
        return out, False
    if now.reset_count > previous.reset_count:
        return out, True
    if now.restart_count < previous.restart_count:
        before, after = previous.restart_count, now.restart_count
        out.append(_went_back("quote.restart_count_rollback", "restartCount", before, after))
    elif now.restart_count == previous.restart_count and now.clock < previous.clock:
        out.append(
            Failure(
                "quote.clock_rollback",
                f"the TPM clock went back from {previous.clock} to {now.clock} ms "
                "without a reset or restart",
            )
        )
    return out, False


def verify_quote(
    quote_bytes: bytes,
    signature_bytes: bytes,
    ak_public: bytes,
    nonce: bytes,
    pcr_values: PcrValues,
    previous: ClockInfo | None = None,
    *,
    expected_pcrs: Mapping[HashAlg, Collection[int]] | None = None,
) -> QuoteResult:
    """Check a quote (TPMS_ATTEST bytes) and its TPMT_SIGNATURE.

    ``ak_public`` is the enrolled AK's TPMT_PUBLIC; ``pcr_values`` the PCR values the agent
    reported, which must be exactly those the quote selects; ``previous`` the clock of the last
    accepted quote of this TPM; ``expected_pcrs`` what the verifier asked to be quoted.
    """
    if quote_bytes[4:6] != _QUOTE_TYPE and len(quote_bytes) >= 6:
        typ = int.from_bytes(quote_bytes[4:6], "big")
        return QuoteResult(
            None, (Failure("quote.type_invalid", f"TPMS_ATTEST type 0x{typ:04x} is not a quote"),)
        )
    try:
        attest = parse_attest(quote_bytes)
        sig = parse_signature(signature_bytes)
        ak = _load_ak(ak_public)
    except QuoteParseError as e:
        return QuoteResult(None, (Failure("quote.malformed", str(e)),))

    failures: list[Failure] = []
    if attest.magic != TPM_GENERATED_VALUE:
        failures.append(
            Failure(
                "quote.magic_invalid",
                f"magic 0x{attest.magic:08x} is not TPM_GENERATED_VALUE: not made by a TPM",
            )
        )
    if not hmac.compare_digest(attest.extra_data, nonce):
        failures.append(
            Failure("quote.nonce_mismatch", "the quote's extraData is not the nonce sent")
        )
    if not _signature_ok(ak, sig, quote_bytes):
        failures.append(
            Failure("quote.signature_invalid", "the signature does not verify with the AK")
        )
    selection = attest.pcr_selection
    digest = _digest_if_exact(sig.hash_alg, selection, pcr_values)
    if digest is None or expected_pcrs:
        failures.extend(_selection_failures(selection, pcr_values, expected_pcrs or {}))
        with contextlib.suppress(KeyError):
            digest = pcr_digest(sig.hash_alg, selection, pcr_values)
    if digest is not None and not hmac.compare_digest(digest, attest.pcr_digest):
        failures.append(
            Failure(
                "quote.pcr_digest_mismatch",
                "the reported PCR values do not hash to the quote's pcrDigest",
            )
        )
    clock_failures, rebooted = _clock_failures(attest.clock_info, previous)
    failures.extend(clock_failures)
    return QuoteResult(attest, tuple(failures), rebooted)

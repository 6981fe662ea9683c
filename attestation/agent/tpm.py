"""The agent's access to its TPM through tpm2-pytss (ESAPI): EK, AK, quotes, credential activation.

Every operation opens its own ESAPI context under one lock and flushes every transient handle
before returning. That costs a connection per call but survives what a long-lived context does
not: a TPM reset (transient objects vanish), a restarted resource manager, and swtpm, which has no
resource manager, runs out of object slots after ~3 leaked handles, and serves one connection at
a time. The AK lives outside the TPM as a wrapped blob (child of the EK). Loading it takes an EK
policy session and TPM2_Load (~80% of a quote's cost), so the first load is followed by
TPM2_ContextSave and later calls TPM2_ContextLoad that saved context (one command, no session).
A TPM reset invalidates saved object contexts (their integrity key covers the reset count):
ContextLoad then fails and the AK is loaded from its blob again.

TSS errors become :class:`TpmError` with the decoded return code; the agent answers 503.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import struct
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Final, Literal, NamedTuple

from tpm2_pytss import (
    ESAPI,
    TPM2B_DIGEST,
    TPM2B_ENCRYPTED_SECRET,
    TPM2B_ID_OBJECT,
    TPM2B_PRIVATE,
    TPM2B_PUBLIC,
    TPML_DIGEST,
    TPML_PCR_SELECTION,
    TPMS_CONTEXT,
    TPMT_PUBLIC,
    TPMT_SIG_SCHEME,
    TPMT_SYM_DEF,
    TSS2_Exception,
)
from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPM2_RC, TPM2_SE, TPMA_OBJECT

from attestation.agent.settings import DEFAULT_TCTI
from attestation.core.quote import pcr_digest
from attestation.core.tpm_types import (
    PcrSelection,
    Public,
    parse_attest,
    parse_public,
    parse_signature,
)
from attestation.core.types import HashAlg

__all__ = ["AkAlg", "AkBlob", "EkAlg", "Tpm", "TpmError", "TpmQuote"]

AkAlg = Literal["ecc", "rsa"]
EkAlg = Literal["rsa", "ecc"]

#: Where TCG-conformant platforms (and swtpm_setup) keep the EK and its certificate.
_EK_HANDLES: Final = {"rsa": 0x81010001, "ecc": 0x81010016}
_EK_CERT_NV: Final = {"rsa": (0x01C00002,), "ecc": (0x01C00016, 0x01C0000A)}
_NV_CHUNK: Final = 512
_MAX_PCRS_PER_READ: Final = 8
#: How often a quote is retaken when a PCR changed between TPM2_Quote and TPM2_PCR_Read.
QUOTE_ATTEMPTS: Final = 4

_AK_ATTRS: Final = (
    TPMA_OBJECT.FIXEDTPM
    | TPMA_OBJECT.FIXEDPARENT
    | TPMA_OBJECT.SENSITIVEDATAORIGIN
    | TPMA_OBJECT.USERWITHAUTH
    | TPMA_OBJECT.RESTRICTED
    | TPMA_OBJECT.SIGN_ENCRYPT
)
_AK_TEMPLATES: Final = {"ecc": "ecc256:ecdsa-sha256:null", "rsa": "rsa2048:rsassa-sha256:null"}


class TpmError(RuntimeError):
    """The TPM or its software stack failed; ``rc`` is the TSS return code (0 if none)."""

    def __init__(self, message: str, rc: int = 0) -> None:
        super().__init__(message)
        self.rc = rc


@dataclass(frozen=True, slots=True)
class AkBlob:
    """An AK wrapped by its parent, the EK: only this TPM can load it, so it may be stored on
    disk. ``public`` is the TPMT_PUBLIC, ``private`` the marshalled TPM2B_PRIVATE."""

    public: bytes
    private: bytes

    def to_bytes(self) -> bytes:
        return struct.pack(">H", len(self.public)) + self.public + self.private

    @classmethod
    def from_bytes(cls, data: bytes) -> AkBlob:
        (size,) = struct.unpack_from(">H", data, 0)
        if len(data) < 2 + size + 2:
            raise ValueError("AK blob is truncated")
        return cls(data[2 : 2 + size], data[2 + size :])


class TpmQuote(NamedTuple):
    """A quote with the PCR values it covers: TPMS_ATTEST bytes, TPMT_SIGNATURE bytes."""

    attest: bytes
    signature: bytes
    pcr_values: dict[HashAlg, dict[int, bytes]]


#: Names of the EK Policy NV indices (TCG EK Credential Profile, "Computing Policy Index Names").
_POLICY_INDEX_NAMES: Final = {
    HashAlg.SHA256: "000b0c9d717e9c3fe69fda41769450bb145957f8b3610e084dbf65591a5d11ecd83f",
    HashAlg.SHA384: "000cdb62fca346612c976732ff4e8621fb4e858be82586486504f7d02e621f8d7d61ae32cfc60c"
    "4d120609ed6768afcf090c",
}
_CC_POLICY_SECRET: Final = 0x0151
_CC_POLICY_AUTHORIZE_NV: Final = 0x0192
_RH_ENDORSEMENT: Final = 0x4000000B


def policy_a(alg: HashAlg) -> bytes:
    """PolicyA: PolicySecret(TPM_RH_ENDORSEMENT) with an empty policyRef."""
    zeros = bytes(alg.digest_size)
    step = hashlib.new(alg.value, zeros + struct.pack(">II", _CC_POLICY_SECRET, _RH_ENDORSEMENT))
    return hashlib.new(alg.value, step.digest()).digest()


def ek_policy_b_branches(alg: HashAlg) -> tuple[bytes, bytes] | None:
    """PolicyB's two branches (PolicyA, PolicyC = PolicyAuthorizeNV(policy index))."""
    name = _POLICY_INDEX_NAMES.get(alg)
    if name is None:
        return None
    zeros = bytes(alg.digest_size)
    c = hashlib.new(
        alg.value, zeros + struct.pack(">I", _CC_POLICY_AUTHORIZE_NV) + bytes.fromhex(name)
    ).digest()
    return policy_a(alg), c


def _selection_text(pcrs: Sequence[int], banks: Sequence[HashAlg]) -> str:
    return "+".join(f"{bank.value}:{','.join(map(str, sorted(pcrs)))}" for bank in banks)


@functools.lru_cache(maxsize=64)
def _selection(text: str) -> TPML_PCR_SELECTION:
    """The parsed selection, kept: tpm2-pytss's parse costs ~40 us of CPU and a quote needs three
    (quote, two PCR reads). ESAPI only reads it, and nothing here changes it."""
    return TPML_PCR_SELECTION.parse(text)


def _digests(digests: TPML_DIGEST) -> list[bytes]:
    """The digests of a TPML_DIGEST, read from its marshalled form (count, then size + bytes
    each): one call into the TSS instead of a Python wrapper object per element, which was a
    third of a quote's CPU in the agent."""
    raw = bytes(digests.marshal())
    (count,) = struct.unpack_from(">I", raw, 0)
    out: list[bytes] = []
    offset = 4
    for _ in range(count):
        (size,) = struct.unpack_from(">H", raw, offset)
        out.append(raw[offset + 2 : offset + 2 + size])
        offset += 2 + size
    return out


class Tpm:
    """One node's TPM. ``tcti`` comes from configuration (``device:/dev/tpmrm0`` on a node,
    ``swtpm:host=127.0.0.1,port=P`` in tests); ``ak`` is the stored AK, if enrolled."""

    def __init__(
        self, tcti: str = DEFAULT_TCTI, *, ek_alg: EkAlg = "rsa", ak: AkBlob | None = None
    ) -> None:
        self.tcti = tcti
        self.ek_alg: EkAlg = ek_alg
        self._ak = ak
        self._lock = threading.Lock()
        self._ek_pub: Public | None = None
        #: The loaded AK's TPMS_CONTEXT (marshalled), from its first load; see the module doc.
        self._ak_context: bytes | None = None

    @contextlib.contextmanager
    def _esys(self) -> Iterator[ESAPI]:
        with self._lock:
            try:
                with ESAPI(self.tcti) as esys:
                    yield esys
            except TSS2_Exception as e:
                raise TpmError(f"TPM error: {e}", int(e.rc)) from e

    # --- the EK -----------------------------------------------------------------------------

    def _ek(self, esys: ESAPI) -> ESYS_TR:
        return esys.tr_from_tpmpublic(_EK_HANDLES[self.ek_alg])

    def ek_public(self) -> bytes:
        """The EK's TPMT_PUBLIC."""
        with self._esys() as esys:
            return self._ek_public(esys, self._ek(esys)).raw

    def ek_certificate(self) -> bytes:
        """The EK certificate (DER) the manufacturer stored in NV."""
        with self._esys() as esys:
            for index in _EK_CERT_NV[self.ek_alg]:
                try:
                    nv = esys.tr_from_tpmpublic(index)
                except TSS2_Exception as e:
                    if e.error == TPM2_RC.HANDLE:
                        continue
                    raise
                public, _ = esys.nv_read_public(nv)
                size = int(public.nvPublic.dataSize)
                data = b"".join(
                    bytes(esys.nv_read(nv, min(_NV_CHUNK, size - off), off))
                    for off in range(0, size, _NV_CHUNK)
                )
                return _strip_der_padding(data)
        raise TpmError(f"no {self.ek_alg} EK certificate in NV")

    def _ek_public(self, esys: ESAPI, ek: ESYS_TR) -> Public:
        if self._ek_pub is None:
            public, _, _ = esys.read_public(ek)
            self._ek_pub = parse_public(bytes(public.publicArea.marshal()))
        return self._ek_pub

    @contextlib.contextmanager
    def _ek_policy(self, esys: ESAPI, ek: ESYS_TR) -> Iterator[ESYS_TR]:
        """A policy session satisfying the EK's policy: PolicyA = PolicySecret(endorsement) for
        the low-range templates; high-range ones (swtpm's P-384 EK) have PolicyB, the OR of
        PolicyA and a PolicyAuthorizeNV branch, which PolicyOR over both digests satisfies."""
        ek_public = self._ek_public(esys, ek)
        alg = ek_public.name_alg
        session = esys.start_auth_session(
            ESYS_TR.NONE,
            ESYS_TR.NONE,
            TPM2_SE.POLICY,
            TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL),
            TPM2_ALG(alg.tpm_alg_id),
        )
        try:
            esys.policy_secret(ESYS_TR.ENDORSEMENT, session, b"", b"", b"", 0)
            branches = ek_policy_b_branches(alg)
            if branches is not None and ek_public.auth_policy != policy_a(alg):
                esys.policy_or(session, TPML_DIGEST([TPM2B_DIGEST(b) for b in branches]))
            yield session
        finally:
            # A policy session used by a command is kept (continueSession), so flush it here.
            with contextlib.suppress(TSS2_Exception):
                esys.flush_context(session)

    # --- the AK -----------------------------------------------------------------------------

    def create_ak(self, alg: AkAlg = "ecc") -> AkBlob:
        """Create a restricted signing key under the EK (so ActivateCredential can bind it to
        the EK) and make it this object's AK. Store the returned blob to reuse the AK."""
        template = TPM2B_PUBLIC(
            publicArea=TPMT_PUBLIC.parse(
                _AK_TEMPLATES[alg], objectAttributes=_AK_ATTRS, nameAlg=TPM2_ALG.SHA256
            )
        )
        with self._esys() as esys:
            ek = self._ek(esys)
            with self._ek_policy(esys, ek) as session:
                private, public, _, _, _ = esys.create(ek, None, template, session1=session)
        self._ak = AkBlob(bytes(public.publicArea.marshal()), bytes(private.marshal()))
        self._ak_context = None
        return self._ak

    @property
    def ak(self) -> AkBlob:
        if self._ak is None:
            raise TpmError("no AK: create or load one first")
        return self._ak

    def ak_public(self) -> bytes:
        """The AK's TPMT_PUBLIC."""
        return self.ak.public

    def ak_name(self) -> bytes:
        """The AK's TPM name (nameAlg || digest of its public area)."""
        return parse_public(self.ak.public).name

    @contextlib.contextmanager
    def _loaded_ak(self, esys: ESAPI) -> Iterator[ESYS_TR]:
        """The AK loaded for one operation, flushed after it: from the saved context when it
        still loads, else from the blob under an EK policy session (and its context saved)."""
        blob = self.ak
        handle: ESYS_TR | None = None
        if self._ak_context is not None:
            try:
                handle = esys.context_load(TPMS_CONTEXT.unmarshal(self._ak_context)[0])
            except TSS2_Exception:
                self._ak_context = None  # a TPM reset (or another TPM): load the blob again
        if handle is None:
            ek = self._ek(esys)
            public = TPM2B_PUBLIC(publicArea=TPMT_PUBLIC.unmarshal(blob.public)[0])
            private = TPM2B_PRIVATE.unmarshal(blob.private)[0]
            with self._ek_policy(esys, ek) as session:
                handle = esys.load(ek, private, public, session1=session)
            try:
                self._ak_context = bytes(esys.context_save(handle).marshal())
            except TSS2_Exception:
                self._ak_context = None  # only slower: the next call loads the blob again
        try:
            yield handle
        finally:
            esys.flush_context(handle)

    # --- quotes -------------------------------------------------------------------------------

    def _read_pcrs(
        self, esys: ESAPI, pcrs: Sequence[int], banks: Sequence[HashAlg]
    ) -> dict[HashAlg, dict[int, bytes]]:
        out: dict[HashAlg, dict[int, bytes]] = {}
        ordered = sorted(set(pcrs))
        for bank in banks:
            values: dict[int, bytes] = {}
            for i in range(0, len(ordered), _MAX_PCRS_PER_READ):
                chunk = ordered[i : i + _MAX_PCRS_PER_READ]
                _, _, tpml = esys.pcr_read(_selection(_selection_text(chunk, (bank,))))
                digests = _digests(tpml)
                if len(digests) != len(chunk):
                    raise TpmError(f"{bank.value} bank returned {len(digests)} of {len(chunk)}")
                values.update(zip(chunk, digests, strict=True))
            out[bank] = values
        return out

    def quote(
        self, nonce: bytes, pcrs: Sequence[int], banks: Sequence[HashAlg] = (HashAlg.SHA256,)
    ) -> TpmQuote:
        """Quote ``pcrs`` of ``banks`` with ``nonce`` as qualifying data, and read their values.

        Race: TPM2_Quote and TPM2_PCR_Read are separate commands, and the kernel may extend
        PCR 10 in between. The values read are checked against the quote's pcrDigest and the
        quote retaken (at most QUOTE_ATTEMPTS times) until they agree.
        """
        if not pcrs or not banks:
            raise ValueError("a quote needs at least one PCR and one bank")
        selection = _selection(_selection_text(pcrs, banks))
        with self._esys() as esys, self._loaded_ak(esys) as ak:
            for _ in range(QUOTE_ATTEMPTS):
                attest_2b, signature = esys.quote(
                    ak, selection, nonce, TPMT_SIG_SCHEME(scheme=TPM2_ALG.NULL)
                )
                attest = bytes(attest_2b)
                sig = bytes(signature.marshal())
                values = self._read_pcrs(esys, pcrs, banks)
                parsed = parse_attest(attest)
                quoted: PcrSelection = parsed.pcr_selection
                digest = pcr_digest(parse_signature(sig).hash_alg, quoted, values)
                if digest == parsed.pcr_digest:
                    return TpmQuote(attest, sig, values)
        raise TpmError(f"PCRs kept changing during {QUOTE_ATTEMPTS} quote attempts")

    # --- enrollment -----------------------------------------------------------------------------

    def activate_credential(self, credential_blob: bytes, encrypted_secret: bytes) -> bytes:
        """TPM2_ActivateCredential: recover the verifier's secret, which the TPM releases only
        if the credential names this AK and was encrypted to this EK.

        ``credential_blob`` is a marshalled TPM2B_ID_OBJECT, ``encrypted_secret`` a marshalled
        TPM2B_ENCRYPTED_SECRET, as :func:`attestation.core.enroll.make_credential` produces them.
        """
        try:
            blob, used = TPM2B_ID_OBJECT.unmarshal(credential_blob)
            secret, used_s = TPM2B_ENCRYPTED_SECRET.unmarshal(encrypted_secret)
        except (TSS2_Exception, ValueError) as e:
            raise ValueError(f"malformed credential: {e}") from e
        if used != len(credential_blob) or used_s != len(encrypted_secret):
            raise ValueError("malformed credential: trailing bytes")
        with self._esys() as esys:
            ek = self._ek(esys)
            with self._loaded_ak(esys) as ak, self._ek_policy(esys, ek) as session:
                cert_info = esys.activate_credential(
                    ak, ek, blob, secret, session1=ESYS_TR.PASSWORD, session2=session
                )
        return bytes(cert_info)


def _strip_der_padding(data: bytes) -> bytes:
    """NV indices are sized generously; keep only the DER SEQUENCE at the start."""
    if len(data) < 2 or data[0] != 0x30:
        raise TpmError("EK certificate in NV is not DER")
    first = data[1]
    if first < 0x80:
        return data[: 2 + first]
    n = first & 0x7F
    length = int.from_bytes(data[2 : 2 + n], "big")
    return data[: 2 + n + length]

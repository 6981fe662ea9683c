"""Pure parsers of the TPM 2.0 structures trustgate receives as untrusted bytes.

TPM 2.0 Library Part 2 (Structures) defines every layout here; all integers are big-endian.
We parse with ``struct`` instead of tpm2-pytss so the verifier core needs no TSS library and
runs fast: a quote is parsed on every attestation round of every node.

Every parser raises :class:`QuoteParseError` (a ``ValueError``) naming the structure, field and
offset on malformed input, and nothing else. One file per structure: :mod:`.attest`
(TPMS_ATTEST, TPML_PCR_SELECTION), :mod:`.signature` (TPMT_SIGNATURE), :mod:`.public`
(TPMT_PUBLIC); :mod:`.reader` holds the checked reader, :mod:`.constants` the TPM_ALG_ID,
curve and TPMA_OBJECT values.
"""

from attestation.core.tpm_types.attest import Attest, PcrSelection, parse_attest
from attestation.core.tpm_types.public import Public, PublicKey, parse_public
from attestation.core.tpm_types.reader import QuoteParseError
from attestation.core.tpm_types.signature import Signature, parse_signature

__all__ = [
    "Attest",
    "PcrSelection",
    "Public",
    "PublicKey",
    "QuoteParseError",
    "Signature",
    "parse_attest",
    "parse_public",
    "parse_signature",
]

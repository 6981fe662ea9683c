"""The agent's TPM access against a real swtpm: AK persistence, handle hygiene, errors, threads."""

from __future__ import annotations

import threading

import pytest
from cryptography import x509
from tpm2_pytss.constants import TPM2_CAP, TPM2_HR

from attestation.agent.tpm import AkBlob, Tpm, TpmError
from attestation.core.quote import verify_quote
from attestation.core.tpm_types import parse_public
from attestation.core.types import HashAlg
from tests.support.swtpm import SwTpm

pytestmark = pytest.mark.tpm


def test_ek_certificate_is_der_for_the_ek(swtpm: SwTpm) -> None:
    tpm = Tpm(swtpm.tcti)
    cert = x509.load_der_x509_certificate(tpm.ek_certificate())
    assert cert.public_key() == parse_public(tpm.ek_public()).public_key()


def test_ak_blob_survives_a_reboot(swtpm: SwTpm) -> None:
    blob = Tpm(swtpm.tcti).create_ak("ecc")
    stored = blob.to_bytes()
    swtpm.restart()
    tpm = Tpm(swtpm.tcti, ak=AkBlob.from_bytes(stored))
    q = tpm.quote(b"n", (10,))
    assert verify_quote(q.attest, q.signature, blob.public, b"n", q.pcr_values).ok
    assert tpm.ak_name() == parse_public(blob.public).name


def _loaded(swtpm: SwTpm) -> dict[str, int]:
    """Transient objects and sessions the TPM holds right now (what a caller forgot to flush)."""
    with swtpm.esapi() as esys:
        counts = {}
        for kind, first in (("objects", TPM2_HR.TRANSIENT), ("sessions", TPM2_HR.HMAC_SESSION)):
            _, data = esys.get_capability(TPM2_CAP.HANDLES, first, 64)
            counts[kind] = len(data.data.handles)
        return counts


def test_many_operations_leak_no_handles(swtpm: SwTpm) -> None:
    """swtpm holds ~3 transient objects: a leaked AK or session per call would fail quickly,
    and one leaked by the last call would still be loaded afterwards."""
    tpm = Tpm(swtpm.tcti)
    ak = tpm.create_ak("ecc")
    assert _loaded(swtpm) == {"objects": 0, "sessions": 0}
    for i in range(12):
        nonce = i.to_bytes(2, "big")
        q = tpm.quote(nonce, (0, 10))
        assert verify_quote(q.attest, q.signature, ak.public, nonce, q.pcr_values).ok, i
        ak = tpm.create_ak("ecc")
    assert _loaded(swtpm) == {"objects": 0, "sessions": 0}


def test_quotes_from_threads_are_serialised(swtpm: SwTpm) -> None:
    tpm = Tpm(swtpm.tcti)
    ak = tpm.create_ak("ecc")
    results: list[bool] = []

    def work(n: int) -> None:
        for i in range(4):
            nonce = bytes([n, i])
            q = tpm.quote(nonce, (0, 10), (HashAlg.SHA256,))
            results.append(verify_quote(q.attest, q.signature, ak.public, nonce, q.pcr_values).ok)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert results == [True] * 16


def test_no_ak_is_an_error(swtpm: SwTpm) -> None:
    with pytest.raises(TpmError, match="no AK"):
        Tpm(swtpm.tcti).quote(b"n", (0,))


def test_stopped_tpm_is_a_tpm_error(swtpm: SwTpm) -> None:
    tpm = Tpm(swtpm.tcti)
    swtpm.stop()
    with pytest.raises(TpmError, match="tcti"):
        tpm.ek_public()


def test_malformed_credential_is_a_value_error(swtpm: SwTpm) -> None:
    tpm = Tpm(swtpm.tcti)
    tpm.create_ak("ecc")
    with pytest.raises(ValueError, match="malformed credential"):
        tpm.activate_credential(b"\x00\x05ab", b"\x00\x00")


def test_ak_blob_rejects_truncation() -> None:
    with pytest.raises(ValueError, match="truncated"):
        AkBlob.from_bytes(b"\x00\x10abc")

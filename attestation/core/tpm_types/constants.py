"""The TPM 2.0 constants trustgate reads and judges (TPM 2.0 Library Part 2, Structures)."""

from __future__ import annotations

from typing import Final

__all__ = [
    "ALG_ECC",
    "ALG_ECDAA",
    "ALG_ECDH",
    "ALG_ECDSA",
    "ALG_NULL",
    "ALG_OAEP",
    "ALG_RSA",
    "ALG_RSAES",
    "ALG_RSAPSS",
    "ALG_RSASSA",
    "ECC_NIST_P256",
    "ECC_NIST_P384",
    "ECC_NIST_P521",
    "OBJ_DECRYPT",
    "OBJ_FIXED_PARENT",
    "OBJ_FIXED_TPM",
    "OBJ_RESTRICTED",
    "OBJ_SENSITIVE_DATA_ORIGIN",
    "OBJ_SIGN",
    "TPM_GENERATED_VALUE",
    "TPM_ST_ATTEST_QUOTE",
]

# TPM_ALG_ID values (Part 2, 6.3)
ALG_RSA: Final = 0x0001
ALG_NULL: Final = 0x0010
ALG_RSASSA: Final = 0x0014
ALG_RSAES: Final = 0x0015
ALG_RSAPSS: Final = 0x0016
ALG_OAEP: Final = 0x0017
ALG_ECDSA: Final = 0x0018
ALG_ECDH: Final = 0x0019
ALG_ECDAA: Final = 0x001A
ALG_ECC: Final = 0x0023

# TPM_ECC_CURVE values (Part 2, 6.4)
ECC_NIST_P256: Final = 0x0003
ECC_NIST_P384: Final = 0x0004
ECC_NIST_P521: Final = 0x0005

# TPMA_OBJECT bits (Part 2, 8.3)
OBJ_FIXED_TPM: Final = 0x00000002
OBJ_FIXED_PARENT: Final = 0x00000010
OBJ_SENSITIVE_DATA_ORIGIN: Final = 0x00000020
OBJ_RESTRICTED: Final = 0x00010000
OBJ_DECRYPT: Final = 0x00020000
OBJ_SIGN: Final = 0x00040000

TPM_GENERATED_VALUE: Final = 0xFF544347
TPM_ST_ATTEST_QUOTE: Final = 0x8018

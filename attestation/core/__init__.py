"""The pure core: bytes, dicts and ``now`` in, values out; no I/O, no framework, no asyncio,
no TPM stack (import-linter holds it to that).

Everything that decides whether a node or a pod is trustworthy lives here: TPM structures
(``tpm_types``), the quote (``quote``), enrollment (``enroll``), the IMA log (``ima``), replay,
attribution, policies, the round's log check (``logcheck``, ``fastpath``, the C extension), the
round itself (``verdict``), signing, the NodeAttestation status (``status``, ``nodeattestation``),
the agent's wire format (``evidence``), the audit chain, offline verification, and every
user-visible name (``names``)."""

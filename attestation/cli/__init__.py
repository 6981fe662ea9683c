"""One module per ``trustgate`` subcommand; each has ``register(subparsers)``. The help reads
defaults from the settings dataclasses, which import nothing heavy; everything else — the
cryptography stack, uvicorn, FastAPI, the Kubernetes client, the TPM stack, even ``json`` and
``logging`` — is imported inside the handlers, so ``trustgate --help`` stays near 0.1 s
(``tests/unit/test_cli_defaults.py`` checks what the entry point loads)."""

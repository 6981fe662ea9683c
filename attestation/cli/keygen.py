"""``trustgate keygen``: the verifier's Ed25519 signing key and the public key for the webhook."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from attestation.cli.common import fail

__all__ = ["register", "run"]


def register(sub: Any) -> None:
    p = sub.add_parser("keygen", help="make the verifier's signing key (and its public key)")
    p.add_argument("--key", type=Path, required=True, help="private key (PEM, mode 0600)")
    p.add_argument("--public", type=Path, required=True, help="public key (PEM) for the webhook")
    p.add_argument("--force", action="store_true", help="overwrite existing files")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from attestation.core.signing import (
        generate_private_key,
        key_id,
        private_key_to_pem,
        public_key_to_pem,
    )

    for path in (args.key, args.public):
        if path.exists() and not args.force:
            return fail(f"keygen: {path} exists (use --force to replace it)")
    key = generate_private_key()
    fd = os.open(args.key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private_key_to_pem(key))
    args.public.write_bytes(public_key_to_pem(key.public_key()))
    print(f"key id {key_id(key.public_key())}: {args.key} (private), {args.public} (public)")
    return 0

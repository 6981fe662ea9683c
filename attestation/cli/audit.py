"""``trustgate audit verify FILE``: check the audit trail's hash chain."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["register", "verify"]


def register(sub: Any) -> None:
    p = sub.add_parser("audit", help="work with the verifier's audit trail")
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    v = verbs.add_parser("verify", help="check the hash chain; name the first broken record")
    v.add_argument("file", type=Path)
    v.set_defaults(handler=verify)


def verify(args: argparse.Namespace) -> int:
    from attestation.cli.common import fail
    from attestation.core.audit import verify_chain

    try:
        data = args.file.read_bytes()
    except OSError as e:
        return fail(f"audit verify: {e}")
    report = verify_chain(data)
    import json

    print(json.dumps({
        "ok": report.ok, "records": report.records, "brokenAt": report.broken_at,
        "problem": report.problem or None, "tornTail": report.torn_tail,
    }))  # fmt: skip
    return 0 if report.ok else 1

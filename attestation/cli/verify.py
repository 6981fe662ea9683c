"""``trustgate verify ima|evidence``: check a captured measurement list or evidence bundle
offline. Prints one JSON object; exit 0 trusted, 1 not trusted, 2 unusable input.

``TRUSTGATE_PURE_PYTHON=1`` checks the log with the pure-Python reference instead of the C
extension."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from attestation.cli.common import PURE_PYTHON_HELP, fail, native

__all__ = ["register", "verify_evidence", "verify_ima"]


def register(sub: Any) -> None:
    p = sub.add_parser("verify", help="check a captured IMA log or evidence bundle offline")
    verbs = p.add_subparsers(dest="verb", required=True, metavar="WHAT")
    ima = verbs.add_parser(
        "ima", help="an IMA measurement list against a PCR 10 value", epilog=PURE_PYTHON_HELP
    )
    ima.add_argument("--log", type=Path, required=True, help="the IMA measurement list (a copy)")
    ima.add_argument(
        "--format", choices=["binary", "ascii"], default="binary",
        help="the list's format: binary_runtime_measurements or ascii (default: %(default)s)",
    )  # fmt: skip
    ima.add_argument(
        "--pcr10",
        required=True,
        help="PCR 10 of the sha256 bank, hex; entries logged after it was read are reported "
        "as uncovered",
    )
    ima.add_argument(
        "--column-size",
        type=int,
        default=20,
        help="binary: template-hash column size (20 SHA-1, 32 SHA-256; default: %(default)s)",
    )
    _policy_args(ima)
    ima.set_defaults(handler=verify_ima)
    ev = verbs.add_parser(
        "evidence", help="an evidence bundle: quote, PCRs and log", epilog=PURE_PYTHON_HELP
    )
    ev.add_argument(
        "--bundle", type=Path, required=True, help="the evidence bundle (JSON: quote, PCRs, log)"
    )
    ev.add_argument("--ak", type=Path, help="pin the AK: its public key, PEM")
    _policy_args(ev)
    ev.set_defaults(handler=verify_evidence)


def _policy_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--policy",
        type=Path,
        action="append",
        required=True,
        help="a runtime policy (ours or Keylime's); repeat for host + NFs",
    )
    p.add_argument(
        "--pod",
        action="append",
        default=[],
        metavar="UID=NF",
        help="judge this pod with that network function's policy (repeatable)",
    )


def _policies(args: argparse.Namespace) -> Any:
    from attestation.adapters.safefile import read_capped
    from attestation.core.offline import OfflinePolicies
    from attestation.core.policy import load_policy

    loaded = {}
    for path in args.policy:
        policy = load_policy(read_capped(path), source=str(path))
        loaded[policy.network_function.lower()] = policy
    pods = {}
    for item in args.pod:
        uid, sep, nf = item.partition("=")
        if not sep:
            raise ValueError(f"--pod {item!r}: expected UID=NF")
        pods[uid.lower()] = nf.lower()
    return OfflinePolicies(loaded, pods)


def _print(result: Any) -> int:
    import json

    print(json.dumps(result.as_json(), indent=2))
    return 0 if result.trusted else 1


def verify_ima(args: argparse.Namespace) -> int:
    from attestation.adapters.safefile import read_capped
    from attestation.core.fastpath import select
    from attestation.core.ima import ImaParseError
    from attestation.core.offline import verify_log
    from attestation.core.policy import PolicyError
    from attestation.core.types import HashAlg

    try:
        pcr10 = bytes.fromhex(args.pcr10)
        if len(pcr10) != HashAlg.SHA256.digest_size:
            raise ValueError(f"--pcr10: {len(pcr10)} bytes, sha256 has 32")
        policies = _policies(args)
        result = verify_log(read_capped(args.log), args.format, {HashAlg.SHA256: pcr10},
                            policies, column_size=args.column_size,
                            check_log=select(native(os.environ)))  # fmt: skip
    except (OSError, ValueError, PolicyError, ImaParseError) as e:
        return fail(f"verify ima: {e}")
    return _print(result)


def verify_evidence(args: argparse.Namespace) -> int:
    import json

    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    from attestation.adapters.safefile import read_capped
    from attestation.core.fastpath import select
    from attestation.core.ima import ImaParseError
    from attestation.core.offline import BundleError, verify_bundle
    from attestation.core.policy import PolicyError

    try:
        bundle = json.loads(read_capped(args.bundle))
        policies = _policies(args)
        pinned = load_pem_public_key(read_capped(args.ak)) if args.ak else None
        result = verify_bundle(
            bundle,
            policies,
            ak_key=pinned,  # type: ignore[arg-type]
            check_log=select(native(os.environ)),
        )
    except (OSError, ValueError, PolicyError, BundleError, ImaParseError) as e:
        return fail(f"verify evidence: {e}")
    return _print(result)

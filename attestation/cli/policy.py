"""``trustgate policy generate``: a runtime policy for a network function (or the host), from an
unpacked image root file system or from a known-good IMA measurement list."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from attestation.cli.common import fail

__all__ = ["generate", "register"]


def register(sub: Any) -> None:
    p = sub.add_parser("policy", help="make runtime policies")
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    g = verbs.add_parser(
        "generate",
        help="from an image root fs (--from-dir) or a known-good IMA log (--from-log)",
    )
    source = g.add_mutually_exclusive_group(required=True)
    source.add_argument("--from-dir", type=Path, help="an unpacked image root file system")
    source.add_argument("--from-log", type=Path, help="an IMA measurement list of a good run")
    g.add_argument("--nf", required=True, help="network function: amf, smf, upf, ... or host")
    g.add_argument("--name", help="the policy's name (default: the --nf value)")
    g.add_argument(
        "--format",
        choices=["binary", "ascii"],
        default="binary",
        help="--from-log: the list's format (binary_runtime_measurements or ascii)",
    )
    g.add_argument(
        "--column-size",
        type=int,
        default=20,
        help="--from-log binary: template-hash column size (20 SHA-1, 32 SHA-256)",
    )
    g.add_argument(
        "--pod",
        action="append",
        default=[],
        metavar="UID",
        help="--from-log: take the measurements of this pod (repeatable); "
        "without --pod, --nf host takes the host's, others take every pod's",
    )
    g.add_argument("-o", "--output", type=Path, help="write here instead of stdout")
    g.set_defaults(handler=generate)


def generate(args: argparse.Namespace) -> int:
    from attestation.adapters import filetree
    from attestation.core import policy_gen
    from attestation.core.ima import ImaParseError, parse_ascii, parse_binary
    from attestation.core.policy import PolicyError, policy_from_document
    from attestation.core.types import PodRef

    name = args.name or args.nf
    if args.from_dir is not None:
        if not args.from_dir.is_dir():
            return fail(f"policy generate: {args.from_dir} is not a directory")

        def progress(done: int, path: str) -> None:
            print(f"  hashed {done} files ({path})", file=sys.stderr)

        doc = filetree.from_tree(
            args.from_dir, name=name, network_function=args.nf, progress=progress
        )
    else:
        try:
            data = args.from_log.read_bytes()
            log = (parse_ascii(data) if args.format == "ascii"
                   else parse_binary(data, column_size=args.column_size))  # fmt: skip
        except (OSError, ImaParseError, ValueError) as e:
            return fail(f"policy generate: {args.from_log}: {e}")
        wanted = {uid.lower() for uid in args.pod}

        def owner(pod: PodRef | None) -> bool:
            if wanted:
                return pod is not None and pod.uid in wanted
            return pod is None if args.nf == "host" else pod is not None

        doc = policy_gen.from_log(log, name=name, network_function=args.nf, owner=owner)
    try:
        policy_from_document(doc, source=name)  # a generated policy passes the same checks
    except PolicyError as e:
        return fail(f"policy generate: the result does not load: {e}")
    text = policy_gen.dump(doc)
    if args.output:
        args.output.write_text(text)
        print(f"wrote {args.output} ({len(doc['spec']['digests'])} files)", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0

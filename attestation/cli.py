"""The ``trustgate`` command: one entry point, a subcommand per role or tool."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

Handler = Callable[[argparse.Namespace], int]


def _not_yet(what: str) -> Handler:
    def run(_args: argparse.Namespace) -> int:
        print(f"trustgate {what}: not implemented yet", file=sys.stderr)
        return 2

    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trustgate",
        description="Hardware-rooted, continuous, per-pod attestation for 5G core pods.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text in [
        ("agent", "serve TPM quotes and IMA log entries of this node"),
        ("verifier", "re-attest every node continuously and publish signed verdicts"),
        ("webhook", "admission webhook that gates 5G core pods on attestation"),
        ("demo", "run the end-to-end scenario on this machine"),
    ]:
        p = sub.add_parser(name, help=help_text)
        p.set_defaults(handler=_not_yet(name))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())

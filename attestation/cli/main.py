"""The ``trustgate`` command: one entry point, a subcommand per role or tool."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

from attestation.cli import (
    agent,
    audit,
    demo,
    keygen,
    node,
    policy,
    status,
    uninstall,
    verifier,
    verify,
    webhook,
)
from attestation.cli.common import Handler, UsageError, fail

__all__ = ["COMMANDS", "build_parser", "installed_version", "main"]

COMMANDS = (agent, verifier, webhook, verify, policy, keygen, audit, node, status, uninstall, demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trustgate",
        description="Hardware-rooted, continuous, per-pod attestation for 5G core pods.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {installed_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(sub)
    return parser


def installed_version() -> str:
    """The installed distribution's version: what the image's label and tag name too."""
    try:
        return version("trustgate")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except UsageError as e:  # unusable options, whichever command: one line, exit 2
        return fail(f"{args.command}: {e}")


if __name__ == "__main__":
    sys.exit(main())

"""``trustgate demo``: the end-to-end scenario on this machine (needs `make setup`'s tools).

The scenario lives in the lab (``attestation.lab``), which stays out of the container image: there
the command says so in one line instead of failing with a traceback."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from attestation.cli.common import default_of, fail
from attestation.verifier.settings import VerifierSettings

__all__ = ["register", "run"]

_LAB = "attestation.lab"


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="run the end-to-end scenario on this machine")
    p.add_argument(
        "--out",
        type=Path,
        default=Path("demo-out"),
        help="where logs and timeline.png go (emptied first; default: demo-out)",
    )
    p.add_argument(
        "--interval",
        type=float,
        default=argparse.SUPPRESS,
        help=f"the verifier's pull interval (default: {default_of(VerifierSettings, 'interval')})",
    )
    p.add_argument(
        "--max-age",
        type=float,
        default=argparse.SUPPRESS,
        help=f"how long a verdict stays valid (default: {default_of(VerifierSettings, 'max_age')})",
    )
    p.add_argument(
        "--real-node",
        action="store_true",
        help="then a worker on a real Linux kernel: ours, with the ima-cgpath patch, under QEMU "
        "(built once, ~9 min on 2 idle cores, cached; each run boots it: minutes)",
    )
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    try:
        from attestation.lab.demo import run_demo
    except ModuleNotFoundError as e:
        if e.name != _LAB and not (e.name or "").startswith(f"{_LAB}."):
            raise
        return fail(
            f"demo: the lab ({_LAB}) is not installed here (it stays out of the container "
            "image); run the demo from a source checkout: make demo"
        )
    given = {name: getattr(args, name) for name in ("interval", "max_age") if hasattr(args, name)}
    return run_demo(args.out, real_node=args.real_node, **given)

"""``trustgate demo``: the end-to-end scenario on this machine (needs `make setup`'s tools)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="run the end-to-end scenario on this machine")
    p.add_argument(
        "--out",
        type=Path,
        default=Path("demo-out"),
        help="where logs and timeline.png go (emptied first)",
    )
    p.add_argument("--interval", type=float, default=2.0, help="the verifier's pull interval")
    p.add_argument("--max-age", type=float, default=10.0, help="how long a verdict stays valid")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from attestation.lab.demo import run_demo

    return run_demo(args.out, interval=args.interval, max_age=args.max_age)

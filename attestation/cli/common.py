"""Small pieces shared by the subcommands."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Mapping


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # One line per agent request would drown what matters.
    logging.getLogger("httpx").setLevel(logging.WARNING)


def env_default(name: str, fallback: str | None = None) -> str | None:
    return os.environ.get(name, fallback)


def node_map(text: str) -> Mapping[str, str]:
    """``worker-1=https://127.0.0.1:9001,worker-2=...`` -> {node: url}; argparse type."""
    out: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        node, sep, url = item.partition("=")
        if not sep or not node or not url:
            raise argparse.ArgumentTypeError(f"expected NODE=URL, got {item!r}")
        out[node] = url
    return out


Handler = Callable[[argparse.Namespace], int]


def fail(message: str) -> int:
    """Unusable input: one line on stderr, exit 2."""
    print(f"trustgate: {message}", file=sys.stderr)
    return 2

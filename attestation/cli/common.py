"""Small pieces shared by the subcommands.

Defaults live in one place, the settings dataclasses. A flag that sets a field has the argparse
default ``SUPPRESS``, so ``args`` carries only what the user set (:func:`given` collects it) and
the dataclass fills in the rest; the help text reads the default from the field
(:func:`default_of`), so the two cannot drift apart.

``TRUSTGATE_PURE_PYTHON=1`` makes the round's log check use the pure-Python reference instead of
the C extension (``attestation.core.fastpath``), e.g. to rule the extension out when chasing a
problem. The core reads no environment; :func:`native` is the one place that reads this.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = [
    "LOG_LEVELS",
    "PURE_PYTHON_ENV",
    "PURE_PYTHON_HELP",
    "Handler",
    "JsonFormatter",
    "UsageError",
    "add_logging_args",
    "default_of",
    "env_fallback",
    "fail",
    "given",
    "native",
    "node_map",
    "setup_logging",
]

#: Set to ``1`` to check logs with the pure-Python reference (see the module docstring).
PURE_PYTHON_ENV = "TRUSTGATE_PURE_PYTHON"
#: The epilog of the commands that check logs.
PURE_PYTHON_HELP = (
    f"environment: {PURE_PYTHON_ENV}=1 checks IMA logs with the pure-Python reference instead of "
    "the C extension (same results, slower)"
)

Handler = Callable[[argparse.Namespace], int]


class UsageError(ValueError):
    """Options that do not fit together or name something unusable; ``main`` turns it into
    :func:`fail`'s one line, prefixed with the command."""


#: ``--log-level`` choices, lowest first.
LOG_LEVELS = ("debug", "info", "warning", "error")
_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def add_logging_args(parser: argparse.ArgumentParser) -> None:
    """``--log-format`` and ``--log-level``, for the long-running commands."""
    parser.add_argument(
        "--log-format", choices=("text", "json"), default="text",
        help="text lines, or one JSON object a line for a log collector (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--log-level", choices=LOG_LEVELS, default="info",
        help="the least severe level written (default: %(default)s)",
    )  # fmt: skip


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ``time`` (RFC 3339, UTC), ``level``, ``logger``, ``message``, and
    ``error`` with the traceback when there is one; what Loki, Elasticsearch or Cloud Logging
    parse without a pattern."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def setup_logging(level: str = "info", log_format: str = "text") -> None:
    """The root logger at ``level``, to stderr, as text lines or JSON lines (uvicorn's loggers
    propagate to it: one format for the whole process)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if log_format == "json" else logging.Formatter(_TEXT_FORMAT)
    )
    logging.basicConfig(level=getattr(logging, level.upper()), handlers=[handler], force=True)


def default_of(cls: type[Any], name: str) -> Any:
    """The default of the dataclass field ``cls.name``, for a flag's help text."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            if f.default is not dataclasses.MISSING:
                return f.default
            if f.default_factory is not dataclasses.MISSING:
                return f.default_factory()
            raise TypeError(f"{cls.__name__}.{name} has no default")
    raise AttributeError(f"{cls.__name__} has no field {name!r}")


def given(args: argparse.Namespace, cls: type[Any]) -> dict[str, Any]:
    """The options the user set whose ``dest`` is a field of the dataclass ``cls``, by field."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}


def env_fallback(options: dict[str, Any], env: Mapping[str, str], **variables: str) -> None:
    """For each ``field=VARIABLE``: a field the user did not set takes the variable's value when
    it is in the environment (even empty), else keeps the dataclass default."""
    for name, variable in variables.items():
        if name not in options and variable in env:
            options[name] = env[variable]


def native(env: Mapping[str, str]) -> bool:
    """Whether the round's log check may use the C extension: not with TRUSTGATE_PURE_PYTHON=1."""
    return env.get(PURE_PYTHON_ENV) != "1"


def node_map(text: str) -> Mapping[str, str]:
    """``worker-1=https://127.0.0.1:9001,worker-2=...`` -> {node: url}; argparse type."""
    out: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        node, sep, url = item.partition("=")
        if not sep or not node or not url:
            raise argparse.ArgumentTypeError(f"expected NODE=URL, got {item!r}")
        out[node] = url
    return out


def operator_kube(kubeconfig: Path | None) -> Any:
    """The Kubernetes adapter for an operator's command (``adapters.kube.load_operator_client``:
    found as kubectl finds it); UsageError naming the kubeconfig tried when there is none. The
    adapter is imported here, not at module level: ``trustgate --help`` loads no client."""
    from attestation.adapters.kube import Kube, KubeError, load_operator_client

    try:
        return Kube(load_operator_client(kubeconfig))
    except KubeError as e:
        raise UsageError(str(e)) from e


def fail(message: str) -> int:
    """Unusable input: one line on stderr, exit 2."""
    print(f"trustgate: {message}", file=sys.stderr)
    return 2

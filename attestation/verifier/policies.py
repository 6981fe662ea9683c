"""Load the runtime policies from a directory into a PolicySet, naming every bad file, and say
what loads but leaves a door open (``policy.lint``): in the log and in the
``trustgate_policy_warnings{policy}`` gauge, since a warning only in a log is easily missed."""

from __future__ import annotations

import logging
from pathlib import Path
from types import MappingProxyType

from prometheus_client import Gauge

from attestation.core.policy import PolicyError, RuntimePolicy, lint_policy, load_policy
from attestation.core.verdict import PolicySet

__all__ = ["HOST", "load_policy_dir", "publish_policy_warnings"]

log = logging.getLogger("trustgate.verifier.policies")

HOST = "host"
_SUFFIXES = (".yaml", ".yml", ".json")


def load_policy_dir(directory: Path) -> PolicySet:
    """Every ``*.yaml|*.yml|*.json`` in ``directory``: one policy per network function and at
    most one for the host. Raises PolicyError naming the file on the first bad or duplicate one
    (a verifier must not start with half its policies)."""
    if not directory.is_dir():
        raise PolicyError(f"policy directory {directory} does not exist")
    by_nf: dict[str, RuntimePolicy] = {}
    host: RuntimePolicy | None = None
    for path in sorted(directory.iterdir()):
        if path.suffix not in _SUFFIXES or not path.is_file():
            continue
        policy = load_policy(path.read_bytes(), source=str(path))
        nf = policy.network_function.lower()
        if nf == HOST:
            if host is not None:
                raise PolicyError(f"{path}: a second host policy (first: {host.name})")
            host = policy
        elif nf in by_nf:
            raise PolicyError(f"{path}: a second policy for {nf} (first: {by_nf[nf].name})")
        else:
            by_nf[nf] = policy
    return PolicySet(MappingProxyType(by_nf), host)


def publish_policy_warnings(policies: PolicySet, gauge: Gauge) -> int:
    """Log every lint warning of the loaded policies and set ``gauge{policy}`` to each policy's
    count (0 for a clean one, so a fixed policy shows its fix); returns the total."""
    loaded = [*policies.by_network_function.values(), *([policies.host] if policies.host else [])]
    total = 0
    for policy in loaded:
        warnings = lint_policy(policy)
        for warning in warnings:
            log.warning("%s: %s", warning.id, warning.message)
        gauge.labels(policy.name).set(len(warnings))
        total += len(warnings)
    return total

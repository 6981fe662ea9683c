"""Make a runtime policy for a network function: from its image's root file system, or from the
measurements of a known-good run.

The image route lists every regular file (what *could* run; the files are read by
``attestation.adapters.filetree``); the log route lists what *did* run
on a node that was trusted at the time, split by owner (a pod or the host), so the same log yields
the host policy and each network function's. Both produce our policy document (a dict, ready for
YAML/JSON) and leave judging to ``policy.load_policy``, so a generated policy goes
through the same checks as a hand-written one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import yaml

from attestation.core.attribution import attribute
from attestation.core.names import RUNTIME_POLICY_API_VERSION, RUNTIME_POLICY_KIND
from attestation.core.types import ImaEntry, PodRef

__all__ = ["DEFAULT_EXCLUDES", "document", "dump", "from_log"]

#: Nothing is excluded by default: an excluded path is never judged, and /tmp, /run, /dev/shm
#: and the like are exactly where an attacker puts what it runs (``policy.lint``).
DEFAULT_EXCLUDES: tuple[str, ...] = ()


def document(
    name: str,
    network_function: str,
    digests: Mapping[str, Iterable[str]],
    excludes: Iterable[str] = DEFAULT_EXCLUDES,
) -> dict[str, Any]:
    """Our policy document; digests are ``alg:hex`` strings, sorted for stable diffs."""
    return {
        "apiVersion": RUNTIME_POLICY_API_VERSION,
        "kind": RUNTIME_POLICY_KIND,
        "metadata": {"name": name},
        "spec": {
            "networkFunction": network_function,
            "digests": {path: sorted(set(values)) for path, values in sorted(digests.items())},
            "excludes": list(excludes),
        },
    }


def dump(doc: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(doc), sort_keys=False, width=200)


def from_log(
    entries: Iterable[ImaEntry],
    *,
    name: str,
    network_function: str,
    owner: Callable[[PodRef | None], bool],
    excludes: Iterable[str] = DEFAULT_EXCLUDES,
) -> dict[str, Any]:
    """A policy allowing every file measured by an owner that ``owner(pod)`` selects (``None``:
    the host). Violations and ``boot_aggregate`` are left out: neither names a file's content."""
    digests: dict[str, set[str]] = {}
    for entry in entries:
        if entry.is_violation or entry.path == "boot_aggregate":
            continue
        pod = attribute(entry.cgroup_path) if entry.cgroup_path else None
        if owner(pod):
            value = f"{entry.file_digest_alg}:{entry.file_digest.hex()}"
            digests.setdefault(entry.path, set()).add(value)
    return document(name, network_function, digests, excludes)

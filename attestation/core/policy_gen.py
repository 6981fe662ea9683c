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

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import yaml

from attestation.core.attribution import attribute
from attestation.core.layers import ImageFile
from attestation.core.names import RUNTIME_POLICY_API_VERSION, RUNTIME_POLICY_KIND
from attestation.core.policy.model import RuntimePolicy
from attestation.core.types import ImaEntry, PodRef

__all__ = [
    "DEFAULT_EXCLUDES",
    "document",
    "dump",
    "from_image",
    "from_log",
    "runnable",
    "with_base",
]

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


#: A shared object by name (``libc.so.6``, ``libgtp5g.so``), for images that ship them 0644.
_SHARED_OBJECT = re.compile(r"\.so(\.[0-9]+)*$")
#: Digest algorithms by digest size: a loaded policy keeps raw digests, a document names them.
_ALG_BY_SIZE = {20: "sha1", 32: "sha256", 48: "sha384", 64: "sha512"}


def runnable(path: str, file: ImageFile) -> bool:
    """Whether IMA's exec/mmap rules can measure this file: executable by mode, an ELF object,
    or named like a shared object. Data files (configs, certificates, docs) are left out, so a
    policy lists what can run, not every byte of the image."""
    return file.executable or file.elf or _SHARED_OBJECT.search(path) is not None


def from_image(
    files: Mapping[str, ImageFile],
    *,
    name: str,
    network_function: str,
    everything: bool = False,
    excludes: Iterable[str] = DEFAULT_EXCLUDES,
) -> dict[str, Any]:
    """The policy document of an assembled image (``core.layers``): its runnable files, or every
    regular file with ``everything``."""
    digests = {
        path: [f"sha256:{file.sha256}"]
        for path, file in files.items()
        if everything or runnable(path, file)
    }
    return document(name, network_function, digests, excludes)


def with_base(doc: Mapping[str, Any], base: RuntimePolicy) -> dict[str, Any]:
    """``doc`` with a base policy's digests and excludes added (e.g. the base image's policy
    under an NF image's): a path keeps every digest either allows."""
    spec = doc["spec"]
    digests: dict[str, set[str]] = {p: set(v) for p, v in spec["digests"].items()}
    for path, values in base.digests.items():
        for value in values:
            digests.setdefault(path, set()).add(f"{_ALG_BY_SIZE[len(value)]}:{value.hex()}")
    excludes = [*spec["excludes"], *(e for e in base.excludes if e not in spec["excludes"])]
    return document(doc["metadata"]["name"], spec["networkFunction"], digests, excludes)

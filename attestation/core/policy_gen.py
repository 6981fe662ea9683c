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
    "MAX_OBJECT_BYTES",
    "as_objects",
    "document",
    "dump",
    "dump_all",
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


def dump_all(docs: Iterable[Mapping[str, Any]]) -> str:
    return yaml.safe_dump_all([dict(d) for d in docs], sort_keys=False, width=200)


#: An object's size the API server stores comfortably under its 1.5 MiB request and etcd's
#: ~1 MiB value limits, with room for metadata and status.
MAX_OBJECT_BYTES = 900_000


#: A path YAML writes as is (no quotes, no escapes): its size is counted, not dumped.
_PLAIN_PATH = re.compile(r"/[A-Za-z0-9/._+-]*")


def _entry_bytes(path: str, values: list[str]) -> int:
    """What one path adds to an object's YAML (its lines, indented under ``spec.digests``)."""
    if _PLAIN_PATH.fullmatch(path) and len(path) < 120:
        return len(path) + 6 + sum(len(v) + 7 for v in values)
    text = yaml.safe_dump({path: values}, width=200)
    return len(text.encode()) + 4 * (len(values) + 1)


def as_objects(
    doc: Mapping[str, Any], *, namespace: str, max_bytes: int = MAX_OBJECT_BYTES
) -> list[dict[str, Any]]:
    """``doc`` as RuntimePolicy objects for ``kubectl apply``: in ``namespace`` (the verifier's;
    it reads no other), and split into ``<name>-1..N`` with ``spec.parts: N`` when its digests
    would make an object bigger than ``max_bytes`` (the verifier loads the set once all N are
    there). Paths stay whole and sorted; the excludes and the rest go with the first part."""
    spec = dict(doc["spec"])
    digests: Mapping[str, list[str]] = spec.pop("digests")
    chunks: list[dict[str, list[str]]] = [{}]
    # everything else, the metadata (namespace, a -N suffix) and spec.parts, with room to spare
    fixed = len(dump({**doc, "spec": spec}).encode()) + len(namespace) + 100
    budget = max(max_bytes - fixed, 1)
    used = 0
    for path, values in digests.items():
        cost = _entry_bytes(path, values)
        if chunks[-1] and used + cost > budget:
            chunks.append({})
            used = 0
        chunks[-1][path] = values
        used += cost
    name = doc["metadata"]["name"]
    out = []
    for i, chunk in enumerate(chunks, 1):
        rest = spec if i == 1 else {"networkFunction": spec["networkFunction"]}
        part_spec = {**rest, "digests": chunk}
        if len(chunks) > 1:
            part_spec["parts"] = len(chunks)
        out.append({
            "apiVersion": doc["apiVersion"],
            "kind": doc["kind"],
            "metadata": {"name": f"{name}-{i}" if len(chunks) > 1 else name,
                         "namespace": namespace},
            "spec": part_spec,
        })  # fmt: skip
    return out


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

"""The runtime policy as the evaluator uses it: one frozen value per network function (or the
host), whatever document format it was loaded from."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from attestation.core.ima.names import as_logged, name_bytes
from attestation.core.ima_signature import PublicKey

__all__ = ["PolicyError", "RuntimePolicy", "build_policy", "merge_policies"]


class PolicyError(ValueError):
    """A policy document is malformed; the message names the policy and the field."""


@dataclass(frozen=True, slots=True)
class RuntimePolicy:
    """One network function's (or the host's) allowed measurements. Immutable: evaluating
    never changes it, and one instance is shared by every round and pod."""

    name: str
    network_function: str
    digests: Mapping[str, frozenset[bytes]]
    excludes: tuple[str, ...] = ()
    keys: Mapping[int, PublicKey] = field(default_factory=lambda: MappingProxyType({}))
    boot_aggregates: frozenset[bytes] = frozenset()
    #: ima-buf entries (keys measured into keyrings, kexec command lines) by buffer name
    buffers: Mapping[str, frozenset[bytes]] = field(default_factory=lambda: MappingProxyType({}))
    ignored_keyrings: frozenset[str] = frozenset()
    #: the same digests keyed by the path's UTF-8 bytes: the parser's raw columns look up here
    by_raw_path: Mapping[bytes, frozenset[bytes]] = field(
        default_factory=lambda: MappingProxyType({}), repr=False, compare=False
    )
    exclude_re: re.Pattern[str] | None = field(default=None, repr=False, compare=False)


def _by_logged_name(digests: Mapping[str, frozenset[bytes]]) -> dict[bytes, frozenset[bytes]]:
    """The digests keyed by each name as a log holds it: bytes ("\udcff", a surrogate escape,
    names the byte 0xff), under the name as written and as the kernel logs it (spaces as ``_``:
    ``ima.names.as_logged``). Names that log alike allow the digests of each; the digest still
    decides, so a file at ``/opt/my_app`` is allowed only with the content listed for either."""
    out: dict[bytes, frozenset[bytes]] = {}
    for path, allowed in digests.items():
        for key in {name_bytes(path), name_bytes(as_logged(path))}:
            out[key] = out.get(key, frozenset()) | allowed
    return out


def build_policy(
    name: str,
    nf: str,
    digests: dict[str, frozenset[bytes]],
    excludes: list[str],
    keys: dict[int, PublicKey],
    boot: frozenset[bytes],
    buffers: dict[str, frozenset[bytes]],
    ignored: frozenset[str],
) -> RuntimePolicy:
    """The frozen policy, with the lookup tables the evaluator needs built once."""
    combined = re.compile("|".join(f"(?:{e})" for e in excludes)) if excludes else None
    return RuntimePolicy(
        name=name,
        network_function=nf,
        digests=MappingProxyType(digests),
        excludes=tuple(excludes),
        keys=MappingProxyType(keys),
        boot_aggregates=boot,
        buffers=MappingProxyType(buffers),
        ignored_keyrings=ignored,
        by_raw_path=MappingProxyType(_by_logged_name(digests)),
        exclude_re=combined,
    )


def merge_policies(name: str, nf: str, parts: Sequence[RuntimePolicy]) -> RuntimePolicy:
    """The union of ``parts`` as one policy of ``nf``: every digest any part allows for a path,
    every exclude, key, boot aggregate, buffer and ignored keyring."""
    digests: dict[str, frozenset[bytes]] = {}
    buffers: dict[str, frozenset[bytes]] = {}
    excludes: list[str] = []
    keys: dict[int, PublicKey] = {}
    boot: frozenset[bytes] = frozenset()
    ignored: frozenset[str] = frozenset()
    for part in parts:
        for path, allowed in part.digests.items():
            digests[path] = digests.get(path, frozenset()) | allowed
        for buf, allowed in part.buffers.items():
            buffers[buf] = buffers.get(buf, frozenset()) | allowed
        excludes += [e for e in part.excludes if e not in excludes]
        keys.update(part.keys)
        boot |= part.boot_aggregates
        ignored |= part.ignored_keyrings
    return build_policy(name, nf, digests, excludes, keys, boot, buffers, ignored)

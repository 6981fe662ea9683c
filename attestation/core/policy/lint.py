"""Warnings about a policy that loads but leaves a door open: an exclude that covers a place a pod
or root can write to.

An excluded path is never judged, so ``cp x /tmp/x && /tmp/x`` runs unseen when ``^/tmp/`` is
excluded: the attacker chooses where the file lands. An operator's exclude is still honoured as
written (a Keylime policy keeps meaning what it says); trustgate only says so, when the verifier
loads the policy and in ``trustgate policy lint``.

Whether a regular expression covers a directory cannot be decided in general; each writable place
is probed with a few file names an attacker might use there, and any match is a warning.
"""

from __future__ import annotations

import re
from typing import Final

from attestation.core.policy.model import RuntimePolicy
from attestation.core.types import Failure

__all__ = ["WRITABLE_PLACES", "exclude_covers", "lint_policy"]

#: Where a pod (its own tmpfs, emptyDir-like mounts, /dev/shm) or a user on the node can write
#: and then execute: none of it may be excluded without a warning.
#: (``/memfd:x (deleted)``: how IMA names a file executed from anonymous memory.)
WRITABLE_PLACES: Final = (
    "/tmp",  # noqa: S108 - a place named, never opened
    "/var/tmp",  # noqa: S108
    "/dev/shm",  # noqa: S108
    "/dev/mqueue",
    "/dev",
    "/run",
    "/var/run",
    "/run/lock",
    "/run/user/1000",
    "/var/lock",
    "/home/user",
    "/root",
    "/var/lib/kubelet/pods",
    "/memfd:x (deleted)",
)
_NAMES: Final = ("x", "x.sh", "x.so", "x.py", ".x", "a/b/x")


def exclude_covers(pattern: str) -> tuple[str, ...]:
    """The writable places ``pattern`` (matched at the start of a path, as the evaluator
    matches excludes) excludes files in."""
    try:
        regex = re.compile(pattern)
    except re.error:
        return ()
    return tuple(
        place
        for place in WRITABLE_PLACES
        if regex.match(place) or any(regex.match(f"{place}/{name}") for name in _NAMES)
    )


def lint_policy(policy: RuntimePolicy) -> tuple[Failure, ...]:
    """One ``policy.exclude_writable`` warning per exclude that covers a writable place."""
    out = []
    for pattern in policy.excludes:
        places = exclude_covers(pattern)
        if places:
            shown = ", ".join(places[:6]) + (f" and {len(places) - 6} more" if places[6:] else "")
            out.append(
                Failure(
                    "policy.exclude_writable",
                    f"policy {policy.name}: exclude {pattern!r} covers {shown}, where a pod or "
                    "root can write: a file put there runs without being judged. Honoured as "
                    "written; narrow it to paths nobody can write, or remove it",
                    severity="warning",
                    path=pattern,
                )
            )
    return tuple(out)

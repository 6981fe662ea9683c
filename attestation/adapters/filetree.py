"""An unpacked image's root file system as a runtime policy: the file-reading half of
``trustgate policy generate --from-dir`` (the document itself is built by the pure
``attestation.core.policy_gen``)."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from attestation.core.policy_gen import DEFAULT_EXCLUDES, document

__all__ = ["from_tree", "hash_tree"]


def hash_tree(
    root: Path, progress: Callable[[int, str], None] | None = None
) -> dict[str, list[str]]:
    """SHA-256 of every regular file under ``root``, by path rooted at ``/``. Symlinks are not
    followed: IMA measures the file they resolve to, which is listed under its own path.
    ``progress(files_done, path)`` is called every 1000 files and at the end."""
    digests: dict[str, list[str]] = {}
    done = 0
    path = ""
    for top, dirs, files in os.walk(root, followlinks=False):
        dirs.sort()
        for filename in sorted(files):
            full = os.path.join(top, filename)
            if not stat.S_ISREG(os.lstat(full).st_mode):
                continue
            with open(full, "rb") as f:
                digest = hashlib.file_digest(f, "sha256").hexdigest()
            path = "/" + os.path.relpath(full, root).replace(os.sep, "/")
            digests[path] = [f"sha256:{digest}"]
            done += 1
            if progress is not None and done % 1000 == 0:
                progress(done, path)
    if progress is not None:
        progress(done, path)
    return digests


def from_tree(
    root: Path,
    *,
    name: str,
    network_function: str,
    excludes: Iterable[str] = DEFAULT_EXCLUDES,
    progress: Callable[[int, str], None] | None = None,
) -> dict[str, Any]:
    """The policy document of an unpacked image (see :func:`hash_tree`)."""
    return document(name, network_function, hash_tree(root, progress), excludes)

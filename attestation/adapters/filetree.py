"""An unpacked image's root file system as a runtime policy: the file-reading half of
``trustgate policy generate --from-dir`` (the document itself is built by the pure
``attestation.core.policy_gen``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from attestation.adapters.safefile import DEFAULT_MAX_FILE_BYTES, hash_file_at, walk_regular
from attestation.core.policy_gen import DEFAULT_EXCLUDES, document

__all__ = ["from_tree", "hash_tree"]


def hash_tree(
    root: Path,
    progress: Callable[[int, str], None] | None = None,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
) -> dict[str, list[str]]:
    """SHA-256 of every regular file under ``root``, by path rooted at ``/``. Links are not
    followed (IMA measures the file a link resolves to, which is listed under its own path) and
    FIFOs, sockets and devices are skipped (``attestation.adapters.safefile``); a file over
    ``max_file_bytes`` raises ``FileRefused`` naming it. ``progress(files_done, path)`` is called
    every 1000 files and at the end."""
    digests: dict[str, list[str]] = {}
    done = 0
    path = ""
    for dir_fd, name, path in walk_regular(root):
        digests[path] = [f"sha256:{hash_file_at(dir_fd, name, path, max_file_bytes)}"]
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
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
) -> dict[str, Any]:
    """The policy document of an unpacked image (see :func:`hash_tree`)."""
    digests = hash_tree(root, progress, max_file_bytes)
    return document(name, network_function, digests, excludes)

"""A container image's file system from its layers, as the runtime assembles it: each layer's
entries applied in order over the ones below, with the OCI whiteouts honoured.

Pure: the reader (``attestation.adapters.imagefs``) turns each layer's tar stream into
:class:`LayerEntry` values (hashing regular files as it streams); this module decides what is in
the final file system. The rules are the OCI image spec's ("Layer Changesets", "Whiteouts"):

- ``dir/.wh.name`` deletes ``dir/name`` (and everything under it) from the layers below;
- ``dir/.wh..wh..opq`` makes ``dir`` opaque: everything under it from the layers below goes, the
  entries of this layer stay (whatever their order in the tar);
- an entry replaces whatever the layers below had at its path; a non-directory also removes
  what was under that path;
- a hard link is the file it links to, as it is at that point of the stream.

Paths are normalised to start at ``/``; an entry that leaves the root (``..``) is refused with an
error naming it, not silently dropped: a layer that does that was made to escape an unpacker.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum

__all__ = [
    "WHITEOUT_PREFIX",
    "EntryKind",
    "ImageFile",
    "LayerEntry",
    "LayerError",
    "apply_layer",
    "normalise",
]

WHITEOUT_PREFIX = ".wh."
OPAQUE = ".wh..wh..opq"


class LayerError(ValueError):
    """A layer entry no runtime would apply: the message names the layer and the entry."""


class EntryKind(Enum):
    FILE = "file"
    DIR = "dir"
    LINK = "hardlink"
    OTHER = "other"  # symlink, device, FIFO: present in the image, nothing IMA measures by path


@dataclass(frozen=True, slots=True)
class ImageFile:
    """A regular file of the assembled image: its SHA-256 (hex), and what it looks like."""

    sha256: str
    executable: bool
    elf: bool


@dataclass(frozen=True, slots=True)
class LayerEntry:
    """One tar member of a layer. ``file`` for regular files, ``target`` for hard links."""

    path: str
    kind: EntryKind
    file: ImageFile | None = None
    target: str | None = None


def normalise(name: str, layer: str) -> str:
    """A tar member name as an absolute path (``./usr/bin/x`` -> ``/usr/bin/x``); LayerError
    for a name that leaves the root or is empty."""
    parts: list[str] = []
    for part in name.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            raise LayerError(f"{layer}: entry {name!r} leaves the image's root")
        parts.append(part)
    if not parts:
        raise LayerError(f"{layer}: entry {name!r} names the root itself")
    return "/" + "/".join(parts)


def _remove(files: dict[str, ImageFile], path: str) -> None:
    files.pop(path, None)
    prefix = path + "/"
    for other in [p for p in files if p.startswith(prefix)]:
        del files[other]


def apply_layer(
    below: Mapping[str, ImageFile], entries: Iterable[LayerEntry], layer: str
) -> dict[str, ImageFile]:
    """The image's regular files after applying one layer's entries (in tar order) over
    ``below``. ``layer`` names the layer in errors."""
    files = dict(below)
    added: set[str] = set()  # this layer's own paths: an opaque whiteout keeps them
    for entry in entries:
        path = normalise(entry.path, layer)
        parent, base = posixpath.split(path)
        if base == OPAQUE:
            keep = parent.rstrip("/") + "/"
            for other in [p for p in files if p.startswith(keep) and p not in added]:
                del files[other]
            continue
        if base.startswith(WHITEOUT_PREFIX):
            _remove(files, posixpath.join(parent, base[len(WHITEOUT_PREFIX) :]))
            continue
        if entry.kind is EntryKind.DIR:
            files.pop(path, None)  # a directory where a file was
            continue
        _remove(files, path)
        if entry.kind is EntryKind.FILE and entry.file is not None:
            files[path] = entry.file
            added.add(path)
        elif entry.kind is EntryKind.LINK:
            target = normalise(entry.target or "", layer)
            if target not in files:
                raise LayerError(f"{layer}: hard link {path} -> {target}: no such file")
            files[path] = files[target]
            added.add(path)
    return files

"""Reading files that someone else may have put in place or swapped: an image tree unpacked from
a registry, a log or bundle copied off a node, a policy from a ticket.

Three rules, each closing a way such a file stops a tool: a FIFO, socket or device is refused
(a FIFO with no writer blocks ``open`` and ``read`` forever; ``/dev/zero`` never ends), the
check is made on the open descriptor (``fstat``), never on the name before opening it (a name
checked with ``lstat`` can be swapped for a FIFO or a link before ``open``), and nothing is read
past a cap (a sparse file of 64 GiB costs no disk but minutes to hash).

Inside a tree, links are never followed (``O_NOFOLLOW`` on every file, ``os.fwalk`` without
following for directories): a link leads out of the image. A path the user names on the command
line is theirs, so a link there is followed — but it must still end at a regular file.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import IO, BinaryIO

__all__ = [
    "DEFAULT_MAX_FILE_BYTES",
    "FileRefused",
    "FileTooBig",
    "hash_file_at",
    "hash_stream",
    "open_capped",
    "read_capped",
    "walk_regular",
]

#: The default cap on one file: bigger than any executable or log we have seen, small enough
#: that a planted sparse file is refused at once instead of hashed for minutes.
DEFAULT_MAX_FILE_BYTES = 1 << 30

_READ_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC
_CHUNK = 1 << 20


class FileRefused(ValueError):
    """A file the tools will not read: not a regular file, or bigger than the cap. The message
    names the file and the reason."""


class FileTooBig(FileRefused):
    """A regular file over the cap (the caller may say which option raises it)."""


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISDIR, "a directory"), (stat.S_ISLNK, "a link")):  # fmt: skip
        if test(mode):
            return name
    return "not a file"


def _open_regular(
    name: str | Path, shown: str, limit: int, *, dir_fd: int | None, follow: bool
) -> tuple[int, int]:
    """An open descriptor of a regular file no bigger than ``limit``, and its size."""
    flags = _READ_FLAGS if follow else _READ_FLAGS | os.O_NOFOLLOW
    try:
        fd = os.open(name, flags, dir_fd=dir_fd)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENXIO):  # a link with O_NOFOLLOW; a socket
            raise FileRefused(f"{shown}: not a regular file ({e.strerror})") from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise FileRefused(f"{shown}: not a regular file ({_kind(info.st_mode)})")
        if info.st_size > limit:
            raise FileTooBig(f"{shown}: {info.st_size} bytes, over the cap of {limit}")
    except BaseException:
        os.close(fd)
        raise
    return fd, info.st_size


def open_capped(path: Path, limit: int) -> BinaryIO:
    """The regular file ``path`` open for reading (a link the user named is followed), or
    FileRefused when it is not a regular file or is bigger than ``limit``."""
    fd, _ = _open_regular(path, str(path), limit, dir_fd=None, follow=True)
    return os.fdopen(fd, "rb")


def read_capped(path: Path, limit: int = DEFAULT_MAX_FILE_BYTES) -> bytes:
    """The bytes of the regular file ``path`` (a link the user named is followed), or
    FileRefused; a file that grows past ``limit`` while it is read is refused too."""
    fd, _ = _open_regular(path, str(path), limit, dir_fd=None, follow=True)
    with os.fdopen(fd, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise FileTooBig(f"{path}: grew past the cap of {limit} bytes while it was read")
    return data


def hash_stream(f: IO[bytes], shown: str, limit: int) -> tuple[str, bytes]:
    """SHA-256 (hex) of what ``f`` gives, and its first 4 bytes (an ELF file starts
    ``\x7fELF``); FileTooBig once more than ``limit`` bytes came (a file growing as it is read,
    or a size the caller could not check first)."""
    digest, head, done = hashlib.sha256(), b"", 0
    while chunk := f.read(_CHUNK):
        done += len(chunk)
        if done > limit:
            raise FileTooBig(f"{shown}: grew past the cap of {limit} bytes while it was read")
        head = head or chunk[:4]
        digest.update(chunk)
    return digest.hexdigest(), head


def hash_file_at(dir_fd: int, name: str, shown: str, limit: int = DEFAULT_MAX_FILE_BYTES) -> str:
    """SHA-256 (hex) of the regular file ``name`` in the directory ``dir_fd``, never following a
    link; FileRefused when it is not a regular file or is over ``limit``."""
    fd, _ = _open_regular(name, shown, limit, dir_fd=dir_fd, follow=False)
    with os.fdopen(fd, "rb") as f:
        return hash_stream(f, shown, limit)[0]


def walk_regular(root: Path) -> Iterator[tuple[int, str, str]]:
    """``(dir_fd, name, path-rooted-at-/)`` for every entry under ``root`` that looked like a
    regular file when its directory was listed, in a stable order; directories reached through
    links are not entered. The caller opens with :func:`hash_file_at`, which checks again."""
    if not root.is_dir():
        raise FileRefused(f"{root}: not a directory")
    for top, dirs, files, dir_fd in os.fwalk(root, follow_symlinks=False):
        dirs.sort()
        for name in sorted(files):
            try:
                mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
            except FileNotFoundError:
                continue  # gone since the listing
            if stat.S_ISREG(mode):
                rel = os.path.relpath(os.path.join(top, name), root)
                yield dir_fd, name, "/" + rel.replace(os.sep, "/")

"""A Linux kernel for the realnode lab: Debian 12's stock kernel, fetched with ``apt-get download``
and unpacked with ``dpkg-deb -x`` (never installed on this machine), cached under
``~/.cache/trustgate/kernel/<package>_<version>`` like the control plane's binaries.

:class:`Kernel` is what a VM boots: a bzImage, the modules its initramfs needs (or none: a kernel
with everything built in), the IMA template it logs with and the boot parameters it wants. The
patched ``ima-cgpath`` kernel (attestation.lab.kernelbuild) returns one too.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Kernel", "KernelFetchError", "cache_root", "debian_kernel"]

#: ``TRUSTGATE_KERNEL_PACKAGE=linux-image-6.1.0-57-amd64`` pins the package; by default the one
#: ``linux-image-amd64`` depends on (what a Debian 12 node installs today).
_PACKAGE_ENV = "TRUSTGATE_KERNEL_PACKAGE"
_META_PACKAGE = "linux-image-amd64"
_IMAGE_PACKAGE = re.compile(r"linux-image-(\d+\.\d+\.\d+-\d+-amd64)(?:-unsigned)?$")
_STAMP = ".complete"


class KernelFetchError(RuntimeError):
    """The kernel package could not be resolved, downloaded or unpacked."""


@dataclass(frozen=True, slots=True)
class Kernel:
    """A kernel a lab VM can boot."""

    #: ``uname -r`` (also the name of its modules directory)
    release: str
    bzimage: Path
    #: ``lib/modules/<release>`` of the kernel's modules; None when everything the guest needs is
    #: built in (a kernel built without modules)
    modules: Path | None
    #: The IMA template the kernel can log with: the node policy's ``template=`` is written
    #: with it (a stock kernel rejects a policy naming ``ima-cgpath``, which it does not have).
    ima_template: str = "ima-ng"
    #: Boot parameters the kernel needs beyond the lab's own
    cmdline: tuple[str, ...] = ()


def cache_root() -> Path:
    """``$TRUSTGATE_CACHE/kernel`` (default ``~/.cache/trustgate/kernel``)."""
    base = Path(os.environ.get("TRUSTGATE_CACHE", Path.home() / ".cache" / "trustgate"))
    return base / "kernel"


def _run(argv: list[str], cwd: Path | None = None, timeout: float = 600) -> str:
    try:
        proc = subprocess.run(
            argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise KernelFetchError(f"{argv[0]}: {e}") from e
    if proc.returncode != 0:
        raise KernelFetchError(
            f"{' '.join(argv)} failed ({proc.returncode}): {(proc.stderr or proc.stdout)[-800:]}"
        )
    return proc.stdout


def _resolve_package() -> str:
    """The image package a Debian 12 node gets today (``linux-image-amd64``'s dependency)."""
    pinned = os.environ.get(_PACKAGE_ENV)
    if pinned:
        return pinned
    out = _run(["apt-cache", "depends", _META_PACKAGE], timeout=60)
    for line in out.splitlines():
        word = line.strip().removeprefix("Depends:").strip()
        if _IMAGE_PACKAGE.match(word):
            return word
    raise KernelFetchError(f"apt-cache depends {_META_PACKAGE}: no linux-image-*-amd64 in {out!r}")


def _candidate_version(package: str) -> str:
    out = _run(["apt-cache", "policy", package], timeout=60)
    match = re.search(r"Candidate:\s*(\S+)", out)
    if match is None or match.group(1) == "(none)":
        raise KernelFetchError(f"apt knows no version of {package} (apt-get update?)")
    return match.group(1)


def _from_dir(root: Path, package: str) -> Kernel:
    match = _IMAGE_PACKAGE.match(package)
    if match is None:
        raise KernelFetchError(f"{package} is not a linux-image-<release>-amd64 package")
    release = match.group(1)
    bzimage = root / "boot" / f"vmlinuz-{release}"
    modules = root / "lib" / "modules" / release
    if not bzimage.is_file() or not modules.is_dir():
        raise KernelFetchError(f"{root}: no boot/vmlinuz-{release} or lib/modules/{release}")
    return Kernel(release=release, bzimage=bzimage, modules=modules)


def _cached(package: str) -> Path | None:
    """The newest complete cache entry of ``package``, when apt cannot say (offline)."""
    found = sorted(cache_root().glob(f"{package}_*/{_STAMP}"))
    return found[-1].parent if found else None


def debian_kernel(log: object = None) -> Kernel:
    """Debian 12's stock kernel, downloaded and unpacked once per package version (~70 MB,
    ~30 s cold), then served from the cache. The modules get a ``depmod`` index, which the
    initramfs builder reads to load modules in dependency order."""
    package = _resolve_package()
    try:
        version = _candidate_version(package)
    except KernelFetchError:
        cached = _cached(package)
        if cached is None:
            raise
        return _from_dir(cached, package)
    root = cache_root() / f"{package}_{version.replace(':', '%')}"
    if (root / _STAMP).is_file():
        return _from_dir(root, package)
    if callable(log):
        log(f"fetching {package} {version} into {root}")
    root.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=root.parent) as scratch:
        work = Path(scratch)
        _run(["apt-get", "download", f"{package}={version}"], cwd=work)
        debs = sorted(work.glob("*.deb"))
        if not debs:
            raise KernelFetchError(f"apt-get download {package}={version} left no .deb")
        tree = work / "tree"
        _run(["dpkg-deb", "-x", str(debs[0]), str(tree)])
        kernel = _from_dir(tree, package)
        _run(["depmod", "-b", str(tree), kernel.release])
        shutil.rmtree(root, ignore_errors=True)
        tree.rename(root)
    (root / _STAMP).write_text(f"{package} {version}\n")
    return _from_dir(root, package)

"""The trustgate node kernel for the realnode lab: Debian's ``linux-source-6.1`` with our
``ima-cgpath`` patch (kernel/patches) and a trimmed configuration (kernel/config), built by
``scripts/build-kernel.sh`` and cached under ``~/.cache/trustgate/kernel/<key>`` (key: source
package version, gcc version, hash of the fragment, the patches and the script).

A cold build takes ~8.5 min on 2 idle cores (longer while other work runs); the script's progress
goes to ``log`` line by line. Everything the guest needs is built in: the :class:`Kernel` has no
modules and logs with ``ima-cgpath``.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Final

from attestation.lab.kernel import Kernel

__all__ = ["BUILD_SCRIPT", "KernelBuildError", "cached_node_kernel", "node_kernel"]

BUILD_SCRIPT: Final = Path(__file__).resolve().parents[2] / "scripts" / "build-kernel.sh"
#: The template the patch adds; the VM passes it as ``ima_template=`` and the node policy names it.
TEMPLATE: Final = "ima-cgpath"
#: A cold build under load on 2 cores stays well below this.
_BUILD_TIMEOUT: Final = 3600.0
_TAIL: Final = 30


class KernelBuildError(RuntimeError):
    """The node kernel could not be built (the message carries the script's last lines)."""


def _from_dir(out: Path) -> Kernel:
    bzimage = out / "bzImage"
    release = (out / "kernel.release").read_text().strip()
    return Kernel(release=release, bzimage=bzimage, modules=None, ima_template=TEMPLATE)


def _key_dir() -> Path:
    proc = subprocess.run(
        ["bash", str(BUILD_SCRIPT), "--print-key"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    if proc.returncode != 0 or not proc.stdout.strip():
        raise KernelBuildError(f"{BUILD_SCRIPT} --print-key failed: {proc.stderr[-800:]}")
    return Path(proc.stdout.strip().splitlines()[-1])


def cached_node_kernel() -> Kernel | None:
    """The node kernel if this checkout's inputs are already built, without building."""
    out = _key_dir()
    if (out / "bzImage").is_file() and (out / "kernel.release").is_file():
        return _from_dir(out)
    return None


def node_kernel(
    log: Callable[[str], None] | None = None, timeout: float = _BUILD_TIMEOUT
) -> Kernel:
    """The patched node kernel: from the cache, or built now (progress lines go to ``log``)."""
    cached = cached_node_kernel()
    if cached is not None:
        return cached
    tail: list[str] = []
    with subprocess.Popen(
        ["bash", str(BUILD_SCRIPT)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    ) as proc:  # fmt: skip
        assert proc.stdout is not None
        # the output is read line by line; a build that hangs is killed, which ends the loop
        watchdog = threading.Timer(timeout, proc.kill)
        watchdog.start()
        try:
            for line in proc.stdout:
                line = line.rstrip("\n")
                tail = [*tail[-(_TAIL - 1) :], line]
                if log is not None:
                    log(line)
            rc = proc.wait()
        except BaseException:
            proc.kill()
            raise
        finally:
            watchdog.cancel()
    if rc != 0:
        raise KernelBuildError(f"{BUILD_SCRIPT} failed ({rc}):\n" + "\n".join(tail))
    out = Path(tail[-1]) if tail else None
    if out is None or not (out / "bzImage").is_file():
        raise KernelBuildError(f"{BUILD_SCRIPT} printed no kernel directory:\n" + "\n".join(tail))
    return _from_dir(out)

"""A real Linux kernel as a lab node: a QEMU guest under software emulation (TCG) with swtpm as
its TPM, for the realnode test layer.

The API (helper modules and tests use only this)::

    kernel = debian_kernel()                      # attestation.lab.kernel (or kernelbuild's)
    vm = Vm("real-1", workdir, kernel, tpm_ca, services={"agent": "trustgate agent ..."},
            forwards={9443: host_port})           # guest port -> host loopback port
    vm.start()                                    # boots, returns when the command channel answers
    r = vm.run([b"/tmp/x", b"arg"])               # argv as bytes or str, no shell -> GuestResult
    vm.put("/tmp/x", data, mode=0o755)           # write a file in the guest (bytes path ok)
    vm.get("/sys/kernel/security/ima/ascii_runtime_measurements")   # read one (to EOF)
    vm.reboot()                                   # orderly guest reboot, TPM state kept; waits
    vm.stop()                                     # power off (bounded), then kill; idempotent

What the guest is: ``qemu-system-x86_64 -accel tcg`` (this machine's KVM cannot boot a stock
kernel), 1 vCPU, 1 GiB; a TPM 2.0 (``tpm-crb``) backed by swtpm whose state directory is kept in
``workdir/tpm`` for the VM's life, reboots included, and was provisioned with an EK certificate
from the lab's TPM CA; the host's ``/`` shared read-only over 9p and chrooted into, so the host's
Python and the project's ``.venv`` run in the guest unchanged, paths included; ``workdir/share``
shared writable and mounted at that same path in the guest (the boot script, logs, the agent's
state: the node's disk); user networking, guest address 10.0.2.15, the host reachable as
10.0.2.2 (``HOST_FROM_GUEST``), guest ports forwarded to 127.0.0.1. The kernel loads the node
IMA policy the project ships before anything runs (attestation.lab.initramfs), then the boot
script starts ``services`` (each a shell command line, run in the background with its output in
``share/<name>.log``) and the command channel (attestation.lab.guestshell).

What the kernel logs: IMA names a file by its path from the root of the mount tree, not from
the chroot, so everything run in the guest's chroot is logged as ``/host<path>`` (``GUEST_ROOT``):
``/tmp/x`` run by a test is ``/host/tmp/x`` in the log.

Times under TCG on 2 busy cores: the kernel reaches /init in ~2 s; the command channel answers
25-35 s after start (Python start-up over 9p under TCG); a reboot ~40 s.
"""

from __future__ import annotations

import base64
import compileall
import contextlib
import ctypes
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from attestation.lab.guestshell import GUEST_PORT
from attestation.lab.initramfs import build_initramfs
from attestation.lab.kernel import Kernel
from attestation.lab.poll import wait_for
from attestation.lab.process import free_port
from attestation.lab.swtpm import LocalCa

__all__ = ["GUEST_ROOT", "HOST_FROM_GUEST", "GuestError", "GuestResult", "Vm", "VmError"]

#: The host as the guest reaches it (QEMU user networking's gateway).
HOST_FROM_GUEST: Final = "10.0.2.2"
#: Where the host's file system is in the guest: the prefix of every path the kernel logs for
#: what runs in the chroot.
GUEST_ROOT: Final = "/host"
_BOOT_SCRIPT: Final = "boot.sh"
_BOOT_TIMEOUT: Final = 900.0
_STOP_TIMEOUT: Final = 30.0
_PR_SET_PDEATHSIG: Final = 1
_SU_CLEAR_EXIT: Final = 0


#: Where the guest mounts a tmpfs of its own, hiding the host's files there.
_GUEST_TMPFS: Final = ("/tmp", "/run", "/dev/shm")  # noqa: S108 - paths, not files made here


def _kept() -> str:
    """The host paths the guest runs from (this checkout, its venv, the Python it was made
    from) that lie under the guest's own tmpfs mounts, colon-separated for ``tg_keep``: a
    checkout under /tmp (a CI clone) must stay visible in the guest."""
    roots = {Path(__file__).resolve().parents[2], Path(sys.prefix).resolve(),
             Path(sys.base_prefix).resolve()}  # fmt: skip
    under = [r for r in sorted(roots) if any(r.is_relative_to(t) for t in _GUEST_TMPFS)]
    return ":".join(str(r) for r in under)


class VmError(RuntimeError):
    """The guest did not boot, answer or stop; the message carries the console's tail."""


class GuestError(VmError):
    """A command in the guest failed (non-zero exit, or the channel refused it)."""


@dataclass(frozen=True, slots=True)
class GuestResult:
    rc: int
    stdout: bytes
    stderr: bytes


def _child_setup() -> None:
    """In the child before exec: its own session (stop ends the group) and SIGKILL when the
    process that started it dies, so no VM outlives a killed test run."""
    os.setsid()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _b64(part: bytes | str) -> str:
    raw = part if isinstance(part, bytes) else os.fsencode(part)
    return base64.b64encode(raw).decode()


class Vm:
    """One guest. Not thread-safe; ``stop`` is safe to call at any point, any number of times."""

    def __init__(
        self,
        name: str,
        workdir: Path,
        kernel: Kernel,
        tpm_ca: LocalCa,
        *,
        services: Mapping[str, str] | None = None,
        forwards: Mapping[int, int] | None = None,
        memory_mib: int = 1024,
        cmdline: Sequence[str] = (),
        log: Callable[[str], None] = lambda _m: None,
    ) -> None:
        self.name = name
        self.workdir = workdir.resolve()
        self.kernel = kernel
        self.share = self.workdir / "share"
        self.tpm_state = self.workdir / "tpm"
        self.services = dict(services or {})
        #: guest port -> host port on 127.0.0.1 (the command channel's is added)
        self.forwards = {**(forwards or {}), GUEST_PORT: free_port()}
        self.memory_mib = memory_mib
        self.cmdline = tuple(cmdline)
        self.log = log
        self.console = self.workdir / "console.log"
        self.boot_seconds: float | None = None
        self._token = secrets.token_hex(16)
        self._qemu: subprocess.Popen[bytes] | None = None
        self._swtpm: subprocess.Popen[bytes] | None = None
        self.share.mkdir(parents=True, exist_ok=True)
        self.share.chmod(0o700)
        if not (self.tpm_state / "tpm2-00.permall").exists():
            tpm_ca.provision(self.tpm_state)  # manufactured once: its EK and EK cert stay

    # -- life cycle --------------------------------------------------------------------------

    def host_port(self, guest_port: int) -> int:
        return self.forwards[guest_port]

    def start(self, timeout: float = _BOOT_TIMEOUT) -> None:
        """Boot and wait until the command channel answers (the boot script has run)."""
        if self._qemu is not None and self._qemu.poll() is None:
            return
        self._write_share()
        _compile_project()
        initrd = build_initramfs(self.kernel)
        sock = self.workdir / "swtpm.sock"
        sock.unlink(missing_ok=True)
        self._swtpm = self._spawn("swtpm", [
            "swtpm", "socket", "--tpm2", "--tpmstate", f"dir={self.tpm_state}",
            "--ctrl", f"type=unixio,path={sock}", "--terminate",
            "--log", f"file={self.workdir / 'swtpm.log'}",
        ])  # fmt: skip
        wait_for("swtpm's control socket", sock.exists, 10, 0.01)
        started = time.monotonic()
        self._qemu = self._spawn("qemu", self._qemu_argv(initrd, sock))
        try:
            self.wait_booted(timeout)
        except BaseException:
            self.stop()
            raise
        self.boot_seconds = time.monotonic() - started
        self.log(f"{self.name}: booted in {self.boot_seconds:.1f}s")

    def wait_booted(self, timeout: float = _BOOT_TIMEOUT) -> str:
        """Wait until the command channel answers; returns the guest's boot id."""

        def answers() -> str | None:
            if self._qemu is None or self._qemu.poll() is not None:
                raise VmError(f"{self.name}: QEMU exited during boot\n{self.console_tail()}")
            with contextlib.suppress(OSError, VmError, ValueError):
                return self.boot_id()
            return None

        try:
            return str(wait_for(f"{self.name}: guest command channel", answers, timeout, 0.5))
        except TimeoutError as e:
            raise VmError(f"{e}\n{self.console_tail()}\n{self.share_log('boot')}") from e

    def reboot(self, timeout: float = _BOOT_TIMEOUT) -> None:
        """An orderly reboot (the kernel shuts the TPM down, the firmware starts it again:
        resetCount goes up, the PCRs reset); the swtpm state is kept. Waits for the new boot."""
        old = self.boot_id()
        started = time.monotonic()
        self._call({"op": "reboot"})

        def new_boot() -> str | None:
            if self._qemu is None or self._qemu.poll() is not None:
                raise VmError(f"{self.name}: QEMU exited on reboot\n{self.console_tail()}")
            with contextlib.suppress(OSError, VmError, ValueError):
                boot = self.boot_id()
                return boot if boot != old else None
            return None

        try:
            wait_for(f"{self.name}: rebooted", new_boot, timeout, 0.5)
        except TimeoutError as e:
            raise VmError(f"{e}\n{self.console_tail()}") from e
        self.boot_seconds = time.monotonic() - started

    def stop(self, timeout: float = _STOP_TIMEOUT) -> None:
        """Power off (orderly when the guest answers), then make sure QEMU and swtpm are gone."""
        qemu, self._qemu = self._qemu, None
        if qemu is not None and qemu.poll() is None:
            with contextlib.suppress(OSError, VmError, ValueError):
                self._call({"op": "poweroff"}, timeout=5)
            try:
                qemu.wait(timeout)
            except subprocess.TimeoutExpired:
                _kill(qemu)
        swtpm, self._swtpm = self._swtpm, None
        if swtpm is not None:
            try:
                swtpm.wait(5)  # --terminate: it ends with QEMU's control connection
            except subprocess.TimeoutExpired:
                _kill(swtpm)

    @property
    def running(self) -> bool:
        return self._qemu is not None and self._qemu.poll() is None

    # -- commands ----------------------------------------------------------------------------

    def run(
        self, argv: Sequence[bytes | str], *, timeout: float = 60, check: bool = True
    ) -> GuestResult:
        """Execute ``argv`` in the guest (no shell) and wait for it."""
        answer = self._call(
            {"op": "run", "argv": [_b64(a) for a in argv], "timeout": timeout}, timeout + 10
        )
        result = GuestResult(
            int(answer["rc"]),
            base64.b64decode(answer["stdout"]),
            base64.b64decode(answer["stderr"]),
        )
        if check and result.rc != 0:
            raise GuestError(
                f"{self.name}: {list(argv)!r} exited {result.rc}: "
                f"{result.stderr[-500:].decode(errors='replace')}"
            )
        return result

    def put(self, path: bytes | str, data: bytes, mode: int = 0o644) -> None:
        self._call({"op": "put", "path": _b64(path), "data": _b64(data), "mode": mode})

    def get(self, path: bytes | str, offset: int = 0, size: int = 16 << 20) -> bytes:
        answer = self._call({"op": "get", "path": _b64(path), "offset": offset, "size": size})
        return base64.b64decode(answer["data"])

    def boot_id(self) -> str:
        return self.get("/proc/sys/kernel/random/boot_id", size=64).decode().strip()

    def _call(self, request: dict[str, Any], timeout: float = 60) -> dict[str, Any]:
        request = {**request, "token": self._token}
        port = self.forwards[GUEST_PORT]
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(json.dumps(request).encode() + b"\n")
            chunks = []
            while chunk := s.recv(1 << 20):
                chunks.append(chunk)
        if not chunks:
            raise VmError(f"{self.name}: the command channel closed without an answer")
        answer: dict[str, Any] = json.loads(b"".join(chunks))
        if "error" in answer:
            raise GuestError(f"{self.name}: {request['op']}: {answer['error']}")
        return answer

    # -- diagnostics -------------------------------------------------------------------------

    def console_tail(self, lines: int = 40) -> str:
        return _tail(self.console, lines, "console")

    def share_log(self, name: str, lines: int = 40) -> str:
        """The tail of ``share/<name>.log``: a service's output, or ``boot``'s."""
        return _tail(self.share / f"{name}.log", lines, f"{name}.log")

    # -- internals ---------------------------------------------------------------------------

    def _write_share(self) -> None:
        token = self.share / "token"
        token.write_text(self._token)
        token.chmod(0o600)
        lines = [
            "#!/bin/sh",
            "# written by attestation.lab.vm for each boot; run by the initramfs in the chroot",
            "export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root",
            "export PYTHONDONTWRITEBYTECODE=1  # the share of / is read-only",
            f"cd {self.share}",
        ]
        for name, command in self.services.items():
            lines.append(f"{command} > {self.share / name}.log 2>&1 &")
        lines.append(
            f"exec {sys.executable} -m attestation.lab.guestshell {token} {GUEST_PORT} "
            f"> {self.share / 'guestshell.log'} 2>&1"
        )
        (self.share / _BOOT_SCRIPT).write_text("\n".join(lines) + "\n")

    def _qemu_argv(self, initrd: Path, tpm_sock: Path) -> list[str]:
        fwd = ",".join(f"hostfwd=tcp:127.0.0.1:{h}-:{g}" for g, h in self.forwards.items())
        append = " ".join([
            "console=ttyS0", "panic=-1", "quiet", "loglevel=4", "ima_hash=sha256",
            f"ima_template={self.kernel.ima_template}",
            f"tg_share={self.share}", f"tg_boot={_BOOT_SCRIPT}", f"tg_keep={_kept()}",
            *self.kernel.cmdline, *self.cmdline,
        ])  # fmt: skip
        return [
            "qemu-system-x86_64", "-accel", "tcg", "-smp", "1", "-m", str(self.memory_mib),
            "-nodefaults", "-no-user-config", "-display", "none",
            "-serial", f"file:{self.console}",
            "-kernel", str(self.kernel.bzimage), "-initrd", str(initrd), "-append", append,
            "-chardev", f"socket,id=chrtpm,path={tpm_sock}",
            "-tpmdev", "emulator,id=tpm0,chardev=chrtpm", "-device", "tpm-crb,tpmdev=tpm0",
            "-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,"
            "multidevs=remap",
            "-virtfs", f"local,path={self.share},mount_tag=labshare,security_model=none,"
            "multidevs=remap",
            "-netdev", f"user,id=n0,{fwd}", "-device", "virtio-net-pci,netdev=n0",
        ]  # fmt: skip

    def _spawn(self, what: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = (self.workdir / f"{what}.out").open("ab")
        with log:
            return subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                preexec_fn=_child_setup,  # setsid + PDEATHSIG, nothing else
            )  # fmt: skip


def _compile_project() -> None:
    """Byte-compile the project's packages on the host: the guest sees them read-only and
    would otherwise compile every module at each start under TCG (tens of seconds)."""
    root = Path(__file__).resolve().parents[2]
    for package in ("attestation", "webhook"):
        compileall.compile_dir(root / package, quiet=1)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


def _tail(path: Path, lines: int, label: str) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"({label}: none)"
    return f"--- {label} (last {lines} lines) ---\n" + "\n".join(text.splitlines()[-lines:])

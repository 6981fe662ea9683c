"""Child processes of the lab that never outlive it.

Each child runs in its own session (process group) with its output in a log file, so a failed
start can say why, and ``stop`` ends the whole group: SIGTERM, a bounded wait, then SIGKILL.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from attestation.lab.poll import wait_for

__all__ = ["ManagedProcess", "ProcessError", "free_port", "free_ports", "tcp_open"]


class ProcessError(RuntimeError):
    """A lab process failed to start or to become ready; the message carries its log's tail."""


#: Servers of the lab listen below the kernel's ephemeral range (32768-60999 by default): a load
#: test that leaves tens of thousands of client sockets in TIME_WAIT exhausts that range, and a
#: bind-to-0 then fails although plenty of other ports are free.
_SERVER_PORTS = (20000, 32000)
#: Ports this process has handed out (``free_ports``).
_HANDED_OUT: set[int] = set()


def free_ports(count: int = 1) -> int:
    """A port P such that P..P+count-1 are free on 127.0.0.1 right now and were not handed out
    before by this process (a lab picks its verifier and webhook ports before it starts the
    swtpms whose own picks could otherwise land on them: a CI run saw the webhook fail to bind).
    A tiny race with other processes remains between this check and the server's bind."""
    for _ in range(200):
        port = random.randrange(_SERVER_PORTS[0], _SERVER_PORTS[1] - count)  # noqa: S311
        span = range(port, port + count)
        if _HANDED_OUT.intersection(span) or not all(_bindable(p) for p in span):
            continue
        if len(_HANDED_OUT) > (_SERVER_PORTS[1] - _SERVER_PORTS[0]) // 2:
            _HANDED_OUT.clear()  # a long session: the oldest labs are long gone
        _HANDED_OUT.update(span)
        return port
    raise RuntimeError(f"no {count} consecutive free loopback ports in {_SERVER_PORTS}")


def free_port() -> int:
    return free_ports(1)


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # As servers do: a port whose old connections linger in TIME_WAIT is still usable.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class ManagedProcess:
    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        *,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self._env = env
        self._cwd = cwd
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self) -> ManagedProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self._env,
                cwd=self._cwd,
                start_new_session=True,
            )
        return self

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_until(self, ready: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll ``ready`` until it holds; fail early if the process died. ``ready`` raising is
        "not yet" (a port that refuses, a server still starting)."""

        def check() -> bool:
            if not self.running():
                raise ProcessError(
                    f"{self.name} exited before {what} (log {self.log_path}):\n{self.log_tail()}"
                )
            with contextlib.suppress(Exception):
                return bool(ready())
            return False

        try:
            wait_for(what, check, timeout)
        except TimeoutError as e:
            raise ProcessError(
                f"{self.name}: {what} not reached in {timeout:.0f}s (log {self.log_path}):\n"
                f"{self.log_tail()}"
            ) from e

    def signal(self, sig: signal.Signals) -> None:
        if self._proc is not None and self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, sig)

    def stop(self, timeout: float = 5.0) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self._proc.wait(timeout)
        # Children that outlived the leader (none expected) go with the group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, signal.SIGKILL)
        self._proc = None


def tcp_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0

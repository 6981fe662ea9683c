"""The realnode guest's command channel: a tiny server the guest's boot script starts (stdlib
only, run by the host's Python over the read-only share) so that a test can run programs, write
and read files, and reboot the guest. One JSON line in, one JSON line out, per connection.

Bytes stay bytes (base64 on the wire): file names that are not UTF-8 are the point of some tests.
``run`` executes an argv directly, no shell: what the kernel measures is exactly what the test
asked to run. A request carries the token the lab wrote into the share (0600) — the channel is
forwarded to host loopback only, but other local users share that loopback.

Ops: ``run`` {argv, timeout} -> {rc, stdout, stderr}; ``put`` {path, data, mode} -> {};
``get`` {path, offset, size} -> {data}; ``reboot`` / ``poweroff`` -> {} (answered first).
"""

from __future__ import annotations

import base64
import ctypes
import hmac
import json
import os
import socketserver
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Final

__all__ = ["GUEST_PORT", "MAX_REQUEST", "main"]

GUEST_PORT: Final = 7000
#: A request carries at most a file to write: a few MiB.
MAX_REQUEST: Final = 32 * 1024 * 1024
#: linux/reboot.h
_RB_AUTOBOOT: Final = 0x01234567
_RB_POWER_OFF: Final = 0x4321FEDC


def _b(text: str) -> bytes:
    return base64.b64decode(text)


def _s(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _halt(cmd: int) -> None:
    """The reboot(2) system call after a moment (the answer goes out first). The kernel shuts
    devices down on the way, so the TPM gets its TPM2_Shutdown as on an orderly reboot."""
    time.sleep(0.3)
    os.sync()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.reboot(cmd)


def _handle(req: dict[str, Any]) -> dict[str, Any]:
    op = req.get("op")
    if op == "run":
        argv = [_b(a) for a in req["argv"]]
        try:
            proc = subprocess.run(
                argv, capture_output=True, timeout=float(req.get("timeout", 60)), check=False
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            return {"error": f"run {argv!r}: {e}"}
        return {"rc": proc.returncode, "stdout": _s(proc.stdout), "stderr": _s(proc.stderr)}
    if op == "put":
        path = Path(os.fsdecode(_b(req["path"])))
        path.write_bytes(_b(req["data"]))
        path.chmod(int(req.get("mode", 0o644)))
        return {}
    if op == "get":
        with open(_b(req["path"]), "rb", buffering=0) as f:
            f.seek(int(req.get("offset", 0)))
            # securityfs lists are seq_files: one read returns a page at most
            size, parts = int(req.get("size", MAX_REQUEST)), []
            while size > 0 and (part := f.read(min(size, 1 << 20))):
                parts.append(part)
                size -= len(part)
            return {"data": _s(b"".join(parts))}
    if op in ("reboot", "poweroff"):
        cmd = _RB_AUTOBOOT if op == "reboot" else _RB_POWER_OFF
        threading.Thread(target=_halt, args=(cmd,), daemon=True).start()
        return {}
    return {"error": f"unknown op {op!r}"}


class _Handler(socketserver.StreamRequestHandler):
    token: bytes = b""

    def handle(self) -> None:
        line = self.rfile.readline(MAX_REQUEST)
        try:
            req = json.loads(line)
            if not hmac.compare_digest(str(req.get("token", "")).encode(), self.token):
                answer: dict[str, Any] = {"error": "bad token"}
            else:
                answer = _handle(req)
        except Exception as e:  # the channel keeps serving whatever one request did
            answer = {"error": f"{type(e).__name__}: {e}"}
        self.wfile.write(json.dumps(answer).encode() + b"\n")


class _Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


def main(argv: list[str]) -> int:
    """``guestshell TOKEN_FILE [PORT]``"""
    _Handler.token = Path(argv[0]).read_text().strip().encode()
    port = int(argv[1]) if len(argv) > 1 else GUEST_PORT
    with _Server(("0.0.0.0", port), _Handler) as server:  # noqa: S104 - QEMU's user net only
        print(f"guestshell listening on {port}", flush=True)
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

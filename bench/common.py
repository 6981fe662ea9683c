"""Helpers the process-level benchmarks share: another process's CPU time and memory as the
kernel accounts them, percentiles, machine load, and writing bench/out/<name>.json.

CPU is read from ``/proc/<pid>/stat`` (utime + stime of every thread of the process), so a
figure belongs to the process measured and not to the load generator sharing the cores.
The kernel counts in clock ticks (10 ms): measure over enough work that a tick is noise.

Waiting (``poll``), the install path (``install_trustgate``) and finding ``trustgate`` are the
lab's own (attestation.lab), under the names the benches use.
"""

from __future__ import annotations

import json
import math
import os
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from attestation.lab.cluster import install_manifests as install_trustgate
from attestation.lab.cluster import service_account_kubeconfig
from attestation.lab.controlplane import ControlPlane
from attestation.lab.node import trustgate_exe
from attestation.lab.poll import wait_for as poll
from tests.support.lab import FILES, policy_document

__all__ = [
    "OUT_DIR",
    "ROOT",
    "http_ok",
    "install_trustgate",
    "machine",
    "percentile",
    "poll",
    "proc_cpu_seconds",
    "proc_memory_mib",
    "trustgate_exe",
    "verifier_kubeconfig",
    "write_policies",
    "write_result",
]

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "bench" / "out"
_TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of all threads of ``pid`` so far."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # the command name may contain spaces
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime (fields 14, 15)


def proc_memory_mib(pid: int) -> dict[str, float]:
    """Resident set now (VmRSS) and its peak (VmHWM), in MiB."""
    out: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024
    return out


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100): an observed value, never an interpolation."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def machine() -> dict[str, Any]:
    """What else the machine was doing: load averages and cores, for the record."""
    load1, load5, load15 = os.getloadavg()
    return {"cpus": os.cpu_count(), "loadavg": [round(load1, 2), round(load5, 2), round(load15, 2)]}


def write_result(name: str, result: dict[str, Any]) -> Path:
    result = {"bench": name, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **result}
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    path = OUT_DIR / f"{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path.relative_to(ROOT)}")
    return path


# --- a real control plane with trustgate installed ------------------------------------------


def write_policies(directory: Path) -> None:
    """The runtime policies the lab's simulated nodes satisfy (tests/support/lab.py FILES)."""
    directory.mkdir(parents=True, exist_ok=True)
    for nf in FILES:
        (directory / f"{nf}.yaml").write_text(yaml.safe_dump(policy_document(nf)))


def verifier_kubeconfig(plane: ControlPlane, workdir: Path) -> Path:
    """A kubeconfig holding the verifier ServiceAccount's token: RBAC as deployed applies."""
    return service_account_kubeconfig(plane, "trustgate-verifier", workdir)


def http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=1) as resp:  # noqa: S310 - loopback only
        return bool(resp.status == 200)

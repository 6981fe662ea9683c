"""`trustgate demo --real-node` as a newcomer runs it: the simulated scenario, then a worker on our
patched kernel under QEMU where an unknown program in the UPF pod's cgroup gets exactly that pod
evicted. The default `make demo` stays as fast as before (tests/cluster/test_demo.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from attestation.lab.node import trustgate_exe

#: the simulated scenario (~1 min), a boot under TCG (minutes on busy cores), the act itself;
#: the kernel is cached by then (test_cgpath builds it first) or built here
pytestmark = pytest.mark.timeout(3600)


def test_demo_with_a_real_node_evicts_only_the_tampered_pod(tmp_path: Path) -> None:
    result = subprocess.run(
        [trustgate_exe(), "demo", "--real-node", "--out", str(tmp_path / "demo-out")],
        capture_output=True, text=True, timeout=3500, check=False,
    )  # fmt: skip
    out = result.stdout
    assert result.returncode == 0, out[-6000:] + result.stderr[-3000:]
    assert "== 6: a worker on a real Linux kernel" in out
    assert "ok: real-1 Trusted" in out
    assert "ok: upf-real evicted" in out
    assert "ok: smf-real on the same node untouched" in out
    assert "ok: real-1 itself still Trusted" in out
    assert "DEMO PASSED" in out

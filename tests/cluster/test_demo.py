"""`make demo` is the README's main command: run the same scenario and check its exit status."""

from __future__ import annotations

import subprocess
from pathlib import Path

from attestation.lab.node import trustgate_exe


def test_demo_scenario_holds(tmp_path: Path) -> None:
    """As `make demo` runs it: the default, relative --out (kubeconfigs must get absolute paths)."""
    out = tmp_path / "demo-out"
    result = subprocess.run(
        [trustgate_exe(), "demo"],
        capture_output=True, text=True, timeout=600, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "DEMO PASSED" in result.stdout
    assert (out / "timeline.png").stat().st_size > 10_000

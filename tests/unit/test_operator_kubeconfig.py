"""The operator's commands find a kubeconfig as kubectl does, and say so when there is none
(they printed a traceback and exited 0 before)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

COMMANDS = [["uninstall", "--dry-run"], ["status"], ["node", "approve", "n1", "--ek", "a" * 64]]


@pytest.mark.parametrize("argv", COMMANDS, ids=lambda a: a[0])
def test_no_kubeconfig_anywhere_is_a_clear_error(argv: list[str], tmp_path: Path) -> None:
    env = {
        k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST")
    }
    env["HOME"] = str(tmp_path)  # no ~/.kube/config
    run = subprocess.run(
        [sys.executable, "-m", "attestation.cli.main", *argv],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert run.returncode == 2, run.stderr
    assert "no usable kubeconfig (~/.kube/config)" in run.stderr
    assert "give --kubeconfig" in run.stderr
    assert "Traceback" not in run.stderr


def test_kubeconfig_from_the_environment_is_used(tmp_path: Path) -> None:
    broken = tmp_path / "cfg"
    broken.write_text("not: a kubeconfig\n")
    env = {k: v for k, v in os.environ.items() if k != "KUBERNETES_SERVICE_HOST"}
    env.update(HOME=str(tmp_path), KUBECONFIG=str(broken))
    run = subprocess.run(
        [sys.executable, "-m", "attestation.cli.main", "status"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert run.returncode == 2
    assert f"no usable kubeconfig ({broken})" in run.stderr

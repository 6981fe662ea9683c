"""Kubeconfig files for the lab's control plane: one cluster, one user, one context."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import yaml

__all__ = ["write_kubeconfig"]


def write_kubeconfig(path: Path, server: str, ca_file: Path, user: Mapping[str, str]) -> Path:
    """``user``: ``client-certificate`` and ``client-key`` paths, or a bearer ``token``. The
    file is private (mode 0600): it holds credentials or points at them."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "lab",
        "clusters": [
            {"name": "lab", "cluster": {"server": server, "certificate-authority": str(ca_file)}}
        ],
        "users": [{"name": "lab", "user": dict(user)}],
        "contexts": [{"name": "lab", "context": {"cluster": "lab", "user": "lab"}}],
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path

"""The samples and the example policies agree: every container of each sample (manifests/samples)
runs, by absolute path, a binary that its network function's example policy
(manifests/policies/<nf>.yaml) allows. An install walked with both must not evict its own
samples for running a binary their policy does not name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from attestation.core.policy import load_policy
from webhook.protect import ProtectionRules, network_function

MANIFESTS = Path(__file__).parents[2] / "manifests"
SAMPLES = sorted(p for p in (MANIFESTS / "samples").glob("*.yaml") if p.stem != "kustomization")


def _workloads() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in SAMPLES:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") in ("Deployment", "StatefulSet", "DaemonSet"):
                out.append((f"{path.name}: {doc['metadata']['name']}", doc))
    return out


def test_every_nf_has_a_sample() -> None:
    kinds = {network_function(d["spec"]["template"], ProtectionRules()) for _, d in _workloads()}
    assert kinds == {"amf", "smf", "upf"}


@pytest.mark.parametrize(("where", "workload"), _workloads(), ids=lambda v: str(v)[:30])
def test_each_samples_command_is_in_its_nfs_policy(where: str, workload: dict[str, Any]) -> None:
    template = workload["spec"]["template"]
    nf = network_function(template, ProtectionRules())
    assert nf is not None, f"{where}: not recognised as a network function"
    policy_file = MANIFESTS / "policies" / f"{nf}.yaml"
    policy = load_policy(policy_file.read_text(), source=str(policy_file))
    for container in template["spec"]["containers"]:
        command = container.get("command") or []
        assert command, f"{where}: container {container['name']} names no command (the image's "
        "entry point is not checkable against the policy)"
        binary = command[0]
        assert binary.startswith("/"), f"{where}: command {binary!r} is not an absolute path"
        assert binary in policy.digests, (
            f"{where}: runs {binary}, which {policy_file.name} does not allow "
            f"(it allows {sorted(policy.digests)})"
        )

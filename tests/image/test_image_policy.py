"""`trustgate policy generate --image` on a real image: the agent image, written out by buildah
as an oci-archive and as an OCI layout, must give exactly the files of that image's assembled
root file system (buildah's own mount of a fresh working container, hashed by ``--from-dir``),
nothing more or less."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.image import buildah as img
from tests.image.buildah import BUILD_TIMEOUT

pytestmark = [pytest.mark.image, pytest.mark.timeout(BUILD_TIMEOUT)]


def _digests(*argv: str) -> dict[str, list[str]]:
    result = subprocess.run(
        [sys.executable, "-m", "attestation.cli.main", "policy", "generate", "--nf", "upf", *argv],
        capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    # RuntimePolicy objects: an image's policy is split into several (spec.parts) past ~900 kB
    digests: dict[str, list[str]] = {}
    parts = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    for doc in parts:
        assert doc["kind"] == "RuntimePolicy"
        assert doc["spec"].get("parts", 1) == len(parts)
        digests.update(doc["spec"]["digests"])
    return digests


@pytest.fixture(scope="module")
def mounted(images: dict[str, img.Built]) -> dict[str, list[str]]:
    """The agent image's files as buildah assembles them, from a working container of its own
    (the session's shared one carries what other image tests wrote into it)."""
    with img.working_container(images["agent"].name) as container:
        root = img.buildah("mount", container).stdout.strip()
        return _digests("--from-dir", root)


@pytest.mark.parametrize("transport", ["oci-archive", "oci"])
def test_an_image_read_from_its_layers_is_its_root_file_system(
    images: dict[str, img.Built], mounted: dict[str, list[str]], tmp_path: Path, transport: str
) -> None:
    target = tmp_path / ("agent.tar" if transport == "oci-archive" else "agent-layout")
    img.buildah("push", images["agent"].name, f"{transport}:{target}", timeout=900)
    from_layers = _digests("--image", str(target), "--all-files")
    assert from_layers.keys() - mounted.keys() == set()
    assert mounted.keys() - from_layers.keys() == set()
    assert from_layers == mounted
    runnable = _digests("--image", str(target))
    assert runnable.keys() < from_layers.keys()  # data files left out by default
    assert any(p.endswith("/python3.11") for p in runnable)
    assert all(runnable[p] == from_layers[p] for p in runnable)

"""The images as an operator receives them, built from the Dockerfile by buildah from the
stand-in base: who they run as, what they start, what they carry and what they must not, and
that the installed package (not a source tree) answers inside them.

The stand-in is not the official python:3.11-slim-bookworm (see scripts/build-base-image.sh), so
what a final stage must not add is judged against the base it was built on, not by file lists
of a particular base.
"""

from __future__ import annotations

import os
from importlib.metadata import version
from pathlib import Path

import pytest

from tests.image import buildah as img
from tests.image.buildah import BUILD_TIMEOUT

#: The first test's set-up builds the images: minutes cold on a busy machine (see conftest).
pytestmark = [pytest.mark.image, pytest.mark.timeout(BUILD_TIMEOUT)]

UID = "65532:65532"
#: What our build stage installs (gcc, binutils, the -dev packages) and a final stage must not keep.
COMPILERS = ("gcc", "cc", "cpp", "c++", "ld", "as", "x86_64-linux-gnu-gcc-12", "pkg-config")
BUILD_HEADERS = ("openssl", "tss2")
#: What the images may add to their base, at most (MB): a budget that a new dependency or a
#: leftover cache (pip's, apt's, a compiler) overruns. Measured: see the layer's summary line.
ADDED_MB = {"controller": 120, "agent": 150}


@pytest.mark.parametrize("target", sorted(img.TARGETS))
def test_runs_as_a_numeric_non_root_user_with_the_trustgate_entrypoint(
    images: dict[str, img.Built], target: str
) -> None:
    config = img.config(images[target].name)["config"]
    # Numeric, so that the kubelet can check runAsNonRoot without reading /etc/passwd.
    assert config["User"] == UID
    assert config["Entrypoint"] == ["trustgate"]
    assert config["Cmd"] == ["--help"]
    assert "PYTHONSAFEPATH=1" in config["Env"]  # no working directory shadows the package


@pytest.mark.parametrize("target", sorted(img.TARGETS))
def test_labels_name_the_image_and_the_installed_version(
    images: dict[str, img.Built], target: str
) -> None:
    labels = img.config(images[target].name)["config"]["Labels"]
    assert labels["org.opencontainers.image.title"] == img.TARGETS[target]
    assert labels["org.opencontainers.image.version"] == version("trustgate")
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert images[target].name.endswith(f":{version('trustgate')}")


@pytest.mark.parametrize("target", sorted(img.TARGETS))
def test_size_over_the_base_stays_within_budget(
    images: dict[str, img.Built], base: str, target: str
) -> None:
    added = (img.size_bytes(images[target].name) - img.size_bytes(base)) / 1e6
    assert 0 < added <= ADDED_MB[target], f"{target} adds {added:.0f} MB to its base"


@pytest.mark.parametrize("target", sorted(img.TARGETS))
def test_final_stage_adds_no_compilers_headers_or_caches(
    opened: dict[str, img.Opened], target: str
) -> None:
    base_root, root = opened["base"].root, opened[target].root
    for tool in COMPILERS:
        for directory in ("usr/bin", "usr/local/bin", "opt/trustgate/bin"):
            assert not (root / directory / tool).exists(), f"{directory}/{tool}"
    assert not (root / "usr/lib/gcc").exists()
    for header in BUILD_HEADERS:
        assert not (root / "usr/include" / header).exists()
    assert _names(root / "usr/include") <= _names(base_root / "usr/include")
    assert not (root / "src").exists()  # the build's source tree
    for cache in ("root/.cache", "var/lib/apt/lists", "var/cache/apt/archives"):
        leftovers = [p for p in _files(root / cache) if p.name not in {"lock", "partial"}]
        assert leftovers == [], f"{cache}: {leftovers[:5]}"
    venv = root / "opt/trustgate"
    assert not list(venv.rglob("__pycache__")), "bytecode caches in the venv"
    assert not list(venv.glob("lib/python3.11/site-packages/pip")), "pip left in the venv"


@pytest.mark.parametrize("target", sorted(img.TARGETS))
def test_only_the_agent_image_has_the_tpm_stack(opened: dict[str, img.Opened], target: str) -> None:
    root = opened[target].root
    pytss = list((root / "opt/trustgate/lib").glob("python3.11/site-packages/tpm2_pytss"))
    tctis = [p for p in _files(root / "usr/lib") if p.name.startswith("libtss2-esys")]
    assert bool(pytss) == (target == "agent")
    assert bool(tctis) == (target == "agent")


def test_trustgate_version_inside_the_image(container: str) -> None:
    result = img.run(container, ["trustgate", "--version"])
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"trustgate {version('trustgate')}\n"


def test_runs_as_uid_65532_inside_the_image(container: str) -> None:
    result = img.run(container, ["id", "-u"])
    assert result.stdout.strip() == "65532", (result.returncode, result.stderr)


def test_native_log_check_is_the_installed_one_even_beside_a_source_tree(container: str) -> None:
    # The bug the first build met: a source tree (no compiled extension) in the working
    # directory shadowed the installed package. Make one, stand in it, and ask from there.
    probe = (
        "mkdir -p /tmp/shadow/attestation/core && touch /tmp/shadow/attestation/__init__.py "
        "/tmp/shadow/attestation/core/__init__.py && cd /tmp/shadow && python -c '"
        "import attestation.core._imafast as m; from attestation.core.fastpath import "
        "IMPLEMENTATIONS as i; print(m.__file__); print(sorted(i))'"
    )
    result = img.run(container, ["sh", "-c", probe])
    assert result.returncode == 0, result.stderr
    where, implementations = result.stdout.splitlines()
    assert where.startswith("/opt/trustgate/lib/python3.11/site-packages/attestation/core/")
    assert implementations == "['native', 'pure']"


def test_agent_image_loads_the_tpm_stack_with_its_own_libraries(
    opened: dict[str, img.Opened],
) -> None:
    # built against libtss2-dev in the build stage; loaded from the runtime's libtss2 packages
    probe = "import tpm2_pytss.ESAPI, attestation.agent.app; print('ok')"
    result = img.run(opened["agent"].container, ["python", "-c", probe])
    assert result.stdout == "ok\n", result.stderr


def _names(directory: Path) -> set[str]:
    return set(os.listdir(directory)) if directory.is_dir() else set()


def _files(directory: Path) -> list[Path]:
    return [p for p in directory.rglob("*") if p.is_file()] if directory.is_dir() else []

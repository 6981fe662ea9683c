"""Dependencies per role (issue 11): the TPM stack only where the TPM is used, the floors in
pyproject.toml no lower than the APIs the code calls, and the venv the tests run in is the pinned
set the images install (constraints.txt)."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
import uvicorn
from packaging.requirements import Requirement
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]

#: The uvicorn release that introduced each keyword the code passes to ``uvicorn.Config`` or
#: ``uvicorn.run``, and each ``uvicorn.Server`` method it overrides. A keyword that is not here
#: fails the test below: look up its release (uvicorn's release notes) and add it.
UVICORN_INTRODUCED = {
    "ssl_context_factory": "0.47.0",  # webhook/tls.py renews the certificate in place
    "capture_signals": "0.29.0",  # adapters/serving.py: the verifier owns its signals
    # present long before 0.29 (uvicorn 0.1x)
    **dict.fromkeys(
        ["host", "port", "log_level", "access_log", "timeout_keep_alive", "lifespan"], "0.20.0"
    ),
    **dict.fromkeys(["ssl_certfile", "ssl_keyfile", "ssl_ca_certs", "ssl_cert_reqs"], "0.20.0"),
}

#: Modules of the roles that never touch a TPM: the webhook, the verifier, the operator's CLI.
NO_TPM_PACKAGES = ("attestation.cli", "attestation.verifier", "attestation.adapters", "webhook")

_BLOCK_TPM = """
import importlib.abc, importlib.util, pkgutil, sys

class NoTpmStack(importlib.abc.MetaPathFinder):
    '''What an install without trustgate[agent] looks like: tpm2_pytss is not there.'''
    def find_spec(self, name, path=None, target=None):
        if name == "tpm2_pytss" or name.startswith("tpm2_pytss."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NoTpmStack())
"""


_CONFIGURING = {("uvicorn", "Config"), ("uvicorn", "run")}


def _uvicorn_uses() -> set[str]:
    """Keywords passed to uvicorn.Config/uvicorn.run, and uvicorn.Server methods overridden."""
    used: set[str] = set()
    for path in [*REPO.glob("attestation/**/*.py"), *REPO.glob("webhook/**/*.py")]:
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                owner, called = node.func.value, node.func.attr
                if isinstance(owner, ast.Name) and (owner.id, called) in _CONFIGURING:
                    used |= {k.arg for k in node.keywords if k.arg is not None}
            if isinstance(node, ast.ClassDef) and any(
                ast.unparse(base) == "uvicorn.Server" for base in node.bases
            ):
                used |= {f.name for f in node.body if isinstance(f, ast.FunctionDef)}
    return used


def _requirement(name: str) -> Requirement:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    found = [Requirement(r) for r in project["dependencies"] if Requirement(r).name == name]
    assert len(found) == 1, f"pyproject.toml declares {name} {len(found)} times"
    return found[0]


def test_uvicorn_floor_is_the_release_of_the_newest_api_used() -> None:
    used = _uvicorn_uses()
    assert "ssl_context_factory" in used  # the scan sees the code (a guard on the scan itself)
    unknown = used - UVICORN_INTRODUCED.keys()
    assert not unknown, f"add these uvicorn APIs with the release that introduced them: {unknown}"
    floor = max(Version(UVICORN_INTRODUCED[name]) for name in used)
    specifier = _requirement("uvicorn").specifier
    assert specifier.contains(str(floor)), f"pyproject's uvicorn{specifier} excludes {floor}"
    below = Version(f"{floor.major}.{floor.minor - 1}.99")
    assert not specifier.contains(str(below)), f"uvicorn{specifier} allows {below}, without APIs"
    # and the installed uvicorn has them
    config = inspect.signature(uvicorn.Config).parameters
    assert "ssl_context_factory" in config
    assert hasattr(uvicorn.Server, "capture_signals")


def test_the_roles_without_a_tpm_import_without_the_tpm_stack() -> None:
    """Every module of the webhook, the verifier, the adapters and the CLI imports, and
    ``trustgate --help`` runs, where tpm2_pytss cannot be imported (the controller image, a
    ``pip install trustgate`` without ``[agent]``); the agent's app, as a control, does not."""
    code = _BLOCK_TPM + (
        f"for package in {NO_TPM_PACKAGES!r}:\n"
        "    root = importlib.import_module(package)\n"
        "    if hasattr(root, '__path__'):\n"
        "        for info in pkgutil.walk_packages(root.__path__, package + '.'):\n"
        "            importlib.import_module(info.name)\n"
        "assert 'tpm2_pytss' not in sys.modules\n"
        "try:\n"
        "    import attestation.agent.app\n"
        "except ModuleNotFoundError as e:\n"
        "    assert e.name == 'tpm2_pytss', e\n"
        "else:\n"
        "    raise SystemExit('the blocker let tpm2_pytss in')\n"
        "from attestation.cli.main import main\n"
        "main(['--help'])\n"
    )
    done = subprocess.run(
        [sys.executable, "-P", "-c", code], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "usage: trustgate" in done.stdout


def test_the_venv_runs_the_pinned_versions() -> None:
    """The tests run what the images ship: every package constraints.txt pins is installed here
    at that version (scripts/setup.sh installs with ``-c constraints.txt``)."""
    wrong = []
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        name, pinned = line.split("==")
        try:
            installed = version(name)
        except PackageNotFoundError:
            wrong.append(f"{name}: not installed")
            continue
        if Version(installed) != Version(pinned):
            wrong.append(f"{name}: {installed} installed, {pinned} pinned")
    assert not wrong, "the venv is not the pinned set (make setup): " + "; ".join(wrong)


@pytest.mark.parametrize("name", ["fastapi", "starlette", "uvicorn", "prometheus-client"])
def test_serving_dependencies_are_declared_directly(name: str) -> None:
    """What the code imports is declared, not borrowed from another package's requirements
    (the agent imports Starlette itself; FastAPI's range for it may change)."""
    assert _requirement(name).name == name

"""Keylime 7.14 in its own venv (bench/.venv-keylime), shared by every benchmark that compares
against it. Idempotent and safe to call from two benchmarks at once (a file lock serialises
the install); a marker file makes later calls instant.

Keylime's wheel leaves out dependencies its verifier code imports, so they are installed
explicitly, and ``gpg`` (python-gnupg bindings, only for signed policies) is stubbed.
"""

from __future__ import annotations

import fcntl
import subprocess
import sys
from pathlib import Path

VENV = Path(__file__).resolve().parent / ".venv-keylime"
PYTHON = VENV / "bin" / "python"
_MARKER = VENV / ".keylime-ready"
_LOCK = VENV / ".install.lock"
PACKAGES = (
    "keylime==7.14.*",
    "cryptography", "jsonschema", "pyyaml", "typing_extensions", "lark", "pyasn1",
    "pyasn1-modules", "packaging", "requests", "tornado", "sqlalchemy", "alembic", "psutil",
    "jinja2",
)  # fmt: skip
_GPG_STUB = (
    '"""Stub: keylime imports gpg only to check signed policies, which benchmarks skip."""\n'
)


def _site_packages() -> Path:
    out = subprocess.run(
        [str(PYTHON), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    return Path(out.stdout.strip())


def ensure() -> Path:
    """Create or complete the venv; return its python."""
    if _MARKER.exists():
        return PYTHON
    VENV.mkdir(parents=True, exist_ok=True)
    with _LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _MARKER.exists():
            return PYTHON
        if not PYTHON.exists():
            subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True, timeout=300)
        subprocess.run(
            [str(PYTHON), "-m", "pip", "install", "--quiet", *PACKAGES], check=True, timeout=1800
        )
        stub = _site_packages() / "gpg"
        stub.mkdir(exist_ok=True)
        init = stub / "__init__.py"
        if not init.exists():
            init.write_text(_GPG_STUB)
        subprocess.run(
            [str(PYTHON), "-c", "import keylime.tpm.tpm_util, keylime.ima.ima, gpg"],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        _MARKER.write_text("keylime 7.14 ready\n")
    return PYTHON


if __name__ == "__main__":
    print(ensure())

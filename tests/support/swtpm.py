"""pytest fixtures for real software TPMs (swtpm): the session's local CA, a second independent
CA, and TPMs that are always stopped at teardown. The TPMs themselves: attestation.lab.swtpm."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from attestation.lab.swtpm import PCR_BANKS, LocalCa, SwTpm

__all__ = ["PCR_BANKS", "LocalCa", "SwTpm", "SwTpmFactory"]


# --- pytest fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def swtpm_ca(tmp_path_factory: pytest.TempPathFactory) -> LocalCa:
    """The session's local CA that manufactures every test TPM's EK certificate."""
    return LocalCa.create(tmp_path_factory.mktemp("swtpm-ca"))


@pytest.fixture(scope="session")
def swtpm_other_ca(tmp_path_factory: pytest.TempPathFactory) -> LocalCa:
    """A second, independent CA: its TPMs' EK certificates are unknown to ``swtpm_ca``."""
    return LocalCa.create(tmp_path_factory.mktemp("swtpm-other-ca"))


SwTpmFactory = Callable[..., SwTpm]


@pytest.fixture
def swtpm_factory(swtpm_ca: LocalCa, tmp_path: Path) -> Iterator[SwTpmFactory]:
    """Make running TPMs: ``make()`` or ``make(ca=other_ca)``; all are stopped at teardown."""
    made: list[SwTpm] = []

    def make(ca: LocalCa | None = None) -> SwTpm:
        workdir = tmp_path / f"swtpm{len(made)}"
        workdir.mkdir()
        tpm = SwTpm(ca or swtpm_ca, workdir)
        made.append(tpm)
        tpm.start()
        return tpm

    try:
        yield make
    finally:
        for tpm in made:
            tpm.stop(orderly=False)


@pytest.fixture
def swtpm(swtpm_factory: SwTpmFactory) -> SwTpm:
    """One running TPM with EK certificates from ``swtpm_ca``."""
    return swtpm_factory()

"""``trustgate --version``: the installed distribution's version, which the images' label and tag
carry too (tests/image checks the image's own answer)."""

from __future__ import annotations

from importlib.metadata import version

import pytest

from attestation.cli.main import main


def test_version_prints_the_installed_distribution_version(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"trustgate {version('trustgate')}\n"

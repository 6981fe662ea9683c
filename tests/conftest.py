"""Test layers by folder: tests/unit (pure), tests/tpm (real swtpm), tests/cluster (real control
plane), tests/adversarial (attacks on the whole system; needs what cluster tests need). Folder
markers are applied here so `-m "not cluster"` works without decorating each test."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["tests.support.controlplane", "tests.support.swtpm", "tests.support.lab"]

_LAYER_MARKERS = {
    "tpm": pytest.mark.tpm,
    "cluster": pytest.mark.cluster,
    "adversarial": pytest.mark.adversarial,
    "realnode": pytest.mark.realnode,
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        layer = Path(str(item.fspath)).parent.name
        marker = _LAYER_MARKERS.get(layer)
        if marker is not None:
            item.add_marker(marker)

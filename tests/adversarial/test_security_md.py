"""SECURITY.md's attack table names the test that proves each row: every name must exist, so a
renamed or deleted test cannot leave a claim without its proof. (That they pass is the rest of
this folder's job, and tests/cluster's for the rows linked there.)"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINK = re.compile(r"`(tests/[\w/]+\.py)::(\w+)(?:\[([^\]`]+)\])?`")


def test_every_test_named_in_security_md_exists() -> None:
    text = (ROOT / "SECURITY.md").read_text()
    links = LINK.findall(text)
    assert len(links) >= 30
    for path, name, param in links:
        source = (ROOT / path).read_text()
        assert f"def {name}(" in source, f"{path}::{name} is named in SECURITY.md but not defined"
        for part in filter(None, (param or "").split("-")):
            assert part in source, f"{path}::{name}[{param}]: no parameter {part!r}"

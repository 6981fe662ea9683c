"""The lab's pure pieces: the Kubernetes version it runs (pinned in the build script only) and
the one poll every test and bench waits with."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest

from attestation.lab.binaries import BUILD_SCRIPT, pinned_version
from attestation.lab.poll import hold_for, wait_for


def test_pinned_version_is_read_from_the_build_script(tmp_path: Path) -> None:
    script = tmp_path / "build.sh"
    script.write_text('#!/bin/sh\nK8S_VERSION="${K8S_VERSION:-v1.99.7}"\nOUT=x\n')
    assert pinned_version(script) == "v1.99.7"
    assert re.fullmatch(r"v1\.\d+\.\d+", pinned_version(BUILD_SCRIPT))  # the real script parses


def test_a_script_without_the_pin_is_an_error(tmp_path: Path) -> None:
    script = tmp_path / "build.sh"
    script.write_text("K8S_VERSION=v1.2.3\n")
    with pytest.raises(ValueError, match="K8S_VERSION"):
        pinned_version(script)


def test_wait_for_returns_the_first_truthy_value() -> None:
    calls = itertools.count(1)
    assert wait_for("the third call", lambda: (n := next(calls)) >= 3 and n, every=0) == 3


def test_wait_for_names_what_did_not_happen_and_the_last_value() -> None:
    with pytest.raises(TimeoutError, match=r"the node Trusted: not within 0s \(last seen: ''\)"):
        wait_for("the node Trusted", lambda: "", timeout=0.05, every=0.01)


def test_hold_for_checks_until_the_end_and_stops_at_the_first_failure() -> None:
    assert hold_for(0.05, lambda: None, every=0.01) >= 2
    seen = itertools.count(1)

    def fails_third_time() -> None:
        assert next(seen) < 3

    with pytest.raises(AssertionError):
        hold_for(10, fails_third_time, every=0)

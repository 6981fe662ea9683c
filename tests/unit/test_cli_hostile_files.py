"""The offline tools on files someone else put in place: a FIFO where a log or a policy should
be, a link out of an image tree, a sparse file of many gigabytes. Each runs the real `trustgate`
entry point as its own process with a deadline, so a tool that blocks or reads forever fails the
test instead of hanging it; each must end with exit 2 and one line naming the file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

#: Far longer than any of these commands needs; the old tools never ended at all.
DEADLINE_S = 30


def _trustgate(*argv: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            [sys.executable, "-m", "attestation.cli.main", *argv],
            capture_output=True,
            text=True,
            timeout=DEADLINE_S,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"trustgate {' '.join(argv)}: still running after {DEADLINE_S}s")


def _policy(path: Path) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "trustgate.io/v1alpha1", "kind": "RuntimePolicy",
        "metadata": {"name": "host"}, "spec": {"networkFunction": "host", "digests": {}},
    }))  # fmt: skip
    return path


def _refused(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = (result.stderr or result.stdout).strip().splitlines()  # lint reports on stdout
    assert len(lines) == 1, (result.stdout, result.stderr)
    for word in words:
        assert word in lines[0], lines[0]


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "swapped-in"
    os.mkfifo(path)
    return path


@pytest.mark.parametrize(
    "command",
    [
        ["policy", "generate", "--nf", "upf", "--from-log"],
        ["policy", "lint"],
        ["verify", "ima", "--pcr10", "00" * 32, "--policy", "{policy}", "--log"],
        ["verify", "evidence", "--policy", "{policy}", "--bundle"],
        ["verify", "ima", "--pcr10", "00" * 32, "--log", "{log}", "--policy"],
    ],
    ids=["generate-log", "lint", "verify-log", "verify-bundle", "verify-policy"],
)
def test_a_fifo_given_as_a_file_is_refused_without_blocking(
    command: list[str], fifo: Path, tmp_path: Path
) -> None:
    policy = _policy(tmp_path / "host.yaml")
    log = tmp_path / "log"
    log.write_bytes(b"")
    argv = [a.format(policy=policy, log=log) for a in command]
    _refused(_trustgate(*argv, str(fifo)), str(fifo), "not a regular file")


def test_a_device_given_as_a_log_is_refused_not_read_forever() -> None:
    _refused(_trustgate("policy", "generate", "--nf", "upf", "--from-log", "/dev/zero"),
             "/dev/zero", "not a regular file")  # fmt: skip


def test_a_fifo_inside_an_image_tree_is_skipped_not_opened(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/upfd").write_bytes(b"upf")
    os.mkfifo(root / "usr/bin/pipe")
    result = _trustgate("policy", "generate", "--nf", "upf", "--from-dir", str(root))
    assert result.returncode == 0, result.stderr
    assert list(yaml.safe_load(result.stdout)["spec"]["digests"]) == ["/usr/bin/upfd"]


def test_links_in_an_image_tree_are_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    (outside / "secrets").mkdir(parents=True)
    (outside / "secrets/key").write_bytes(b"not the image's")
    root = tmp_path / "root"
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/upfd").write_bytes(b"upf")
    (root / "usr/bin/key").symlink_to(outside / "secrets/key")
    (root / "opt").symlink_to(outside / "secrets", target_is_directory=True)
    result = _trustgate("policy", "generate", "--nf", "upf", "--from-dir", str(root))
    assert result.returncode == 0, result.stderr
    assert list(yaml.safe_load(result.stdout)["spec"]["digests"]) == ["/usr/bin/upfd"]


def test_a_huge_file_in_an_image_tree_is_refused_by_the_size_cap(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "usr/lib").mkdir(parents=True)
    with open(root / "usr/lib/huge.so", "wb") as f:
        f.truncate(64 << 30)  # sparse: costs no disk, but 64 GiB to hash
    result = _trustgate("policy", "generate", "--nf", "upf", "--from-dir", str(root))
    _refused(result, "/usr/lib/huge.so", "--max-file-bytes")

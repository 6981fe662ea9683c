"""`trustgate policy generate --image`: a policy from a container image as the runtime would
assemble it (layers in order, whiteouts, opaque directories, hard links), in the three forms
images travel in, and the refusals for images that are not what their manifest says."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from attestation.core.layers import EntryKind, ImageFile, LayerEntry, LayerError, apply_layer
from tests.support.oci import Entry, docker_save, oci_archive, oci_layout

ELF = b"\x7fELF" + b"\x02\x01\x01" + b"\x00" * 9


def sha(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


BASE = [
    Entry("usr/", kind="dir", mode=0o755),
    Entry("usr/bin/upfd", ELF + b"upf", 0o755),
    Entry("usr/bin/old-tool", ELF + b"old", 0o755),
    Entry("usr/lib/libgtp5g.so.1", ELF + b"gtp", 0o644),
    Entry("usr/lib/plugin.so", b"not elf but named so", 0o644),
    Entry("etc/upf.conf", b"n3: eth1", 0o644),
    Entry("opt/vendor/agent", ELF + b"vendor", 0o755),
    Entry("opt/vendor/helper.sh", b"#!/bin/sh\n", 0o755),
    Entry("bin/sh", kind="symlink", link="/usr/bin/busybox"),
]
TOP = [
    Entry("usr/bin/.wh.old-tool"),  # deleted by this layer
    Entry("opt/vendor/new", ELF + b"new", 0o755),  # before the opaque marker, still kept
    Entry("opt/vendor/.wh..wh..opq"),  # everything below from lower layers goes
    Entry("usr/bin/upf-link", kind="hardlink", link="usr/bin/upfd"),
    Entry("usr/bin/upfd-debug", ELF + b"dbg", 0o755),
]
RUNNABLE = {
    "/usr/bin/upfd": sha(ELF + b"upf"),
    "/usr/bin/upf-link": sha(ELF + b"upf"),
    "/usr/bin/upfd-debug": sha(ELF + b"dbg"),
    "/usr/lib/libgtp5g.so.1": sha(ELF + b"gtp"),
    "/usr/lib/plugin.so": sha(b"not elf but named so"),
    "/opt/vendor/new": sha(ELF + b"new"),
}


def _generate(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "attestation.cli.main", "policy", "generate",
                           "--nf", "upf", *argv], capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)  # fmt: skip


def _digests(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    assert result.returncode == 0, result.stderr
    doc = yaml.safe_load(result.stdout)
    assert (doc["kind"], doc["spec"]["networkFunction"]) == ("RuntimePolicy", "upf")
    return {path: values[0] for path, values in doc["spec"]["digests"].items()}


@pytest.mark.parametrize("form", ["oci-layout", "oci-archive", "docker-save"])
def test_an_image_gives_its_runnable_files_after_every_layer(form: str, tmp_path: Path) -> None:
    if form == "oci-layout":
        image = oci_layout(tmp_path / "layout", [BASE, TOP])
    else:
        image = (oci_archive if form == "oci-archive" else docker_save)(tmp_path, [BASE, TOP])
    result = _generate("--image", str(image))
    assert _digests(result) == RUNNABLE
    assert "layer 2/2" in result.stderr  # progress, one line a layer


def test_all_files_adds_data_files(tmp_path: Path) -> None:
    got = _digests(_generate("--image", str(oci_layout(tmp_path / "l", [BASE, TOP])),
                             "--all-files"))  # fmt: skip
    assert got == {**RUNNABLE, "/etc/upf.conf": sha(b"n3: eth1")}


def test_a_base_policy_is_added(tmp_path: Path) -> None:
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump({
        "apiVersion": "trustgate.io/v1alpha1", "kind": "RuntimePolicy",
        "metadata": {"name": "base"},
        "spec": {"networkFunction": "upf", "digests": {"/usr/bin/upfd": [sha(b"older upfd")],
                                                        "/lib/ld.so": [sha(b"ld")]}},
    }))  # fmt: skip
    result = _generate("--image", str(oci_layout(tmp_path / "l", [BASE, TOP])),
                       "--base-policy", str(base))  # fmt: skip
    doc = yaml.safe_load(result.stdout)
    assert sorted(doc["spec"]["digests"]["/usr/bin/upfd"]) == sorted(
        [sha(ELF + b"upf"), sha(b"older upfd")]
    )
    assert doc["spec"]["digests"]["/lib/ld.so"] == [sha(b"ld")]


def test_a_multi_platform_index_needs_a_platform(tmp_path: Path) -> None:
    layout = oci_layout(tmp_path / "l", [BASE], platforms=("linux/amd64", "linux/arm64"))
    refused = _generate("--image", str(layout))
    assert refused.returncode == 2
    assert "linux/amd64" in refused.stderr
    assert "--platform" in refused.stderr
    assert "/usr/bin/upfd" in _digests(
        _generate("--image", str(layout), "--platform", "linux/amd64")
    )


def _one_line(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    (line,) = result.stderr.strip().splitlines()
    for word in words:
        assert word in line, line


def test_a_layer_that_is_not_the_one_the_manifest_names_is_refused(tmp_path: Path) -> None:
    layout = oci_layout(tmp_path / "l", [BASE, TOP])
    blobs = sorted((layout / "blobs/sha256").iterdir(), key=lambda p: p.stat().st_size)
    biggest = blobs[-1]  # a layer (configs and manifests are smaller)
    data = bytearray(biggest.read_bytes())
    data[-20] ^= 0xFF
    biggest.write_bytes(bytes(data))
    result = _generate("--image", str(layout))
    assert result.returncode == 2
    assert biggest.name in result.stderr


def test_an_entry_leaving_the_root_is_refused(tmp_path: Path) -> None:
    layout = oci_layout(tmp_path / "l", [[Entry("../../etc/cron.d/x", b"* * * * * root sh")]])
    _one_line(_generate("--image", str(layout)), "leaves the image's root")


def test_a_file_over_the_cap_is_refused_without_reading_it(tmp_path: Path) -> None:
    layout = oci_layout(tmp_path / "l", [[Entry("usr/bin/big", b"x" * 4096, 0o755)]])
    _one_line(_generate("--image", str(layout), "--max-file-bytes", "1024"),
              "usr/bin/big", "--max-file-bytes")  # fmt: skip


def test_a_directory_that_is_no_image_says_what_to_use(tmp_path: Path) -> None:
    (tmp_path / "rootfs/usr").mkdir(parents=True)
    _one_line(_generate("--image", str(tmp_path / "rootfs")), "--from-dir")


# the layer rules themselves, on data


def _file(tag: str) -> ImageFile:
    return ImageFile(hashlib.sha256(tag.encode()).hexdigest(), True, True)


def test_a_whiteout_removes_a_whole_directory_below() -> None:
    below = {"/opt/a/x": _file("x"), "/opt/a/y/z": _file("z"), "/opt/ab": _file("ab")}
    after = apply_layer(below, [LayerEntry("opt/.wh.a", EntryKind.FILE)], "l2")
    assert after == {"/opt/ab": _file("ab")}


def test_a_directory_or_link_replaces_a_file_below() -> None:
    below = {"/usr/bin/x": _file("x"), "/usr/bin/y": _file("y")}
    after = apply_layer(below, [LayerEntry("usr/bin/x/", EntryKind.DIR),
                                LayerEntry("usr/bin/y", EntryKind.OTHER)], "l2")  # fmt: skip
    assert after == {}


def test_a_hard_link_to_nothing_is_an_error() -> None:
    with pytest.raises(LayerError, match="hard link /a -> /b: no such file"):
        apply_layer({}, [LayerEntry("a", EntryKind.LINK, target="b")], "l1")

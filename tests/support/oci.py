"""Container images written byte for byte as the OCI image spec and `docker save` lay them out,
for the image reader's tests: layers are real tar streams (gzip where the spec allows), blobs
are named by their SHA-256, manifests and indexes are the spec's JSON."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Entry", "docker_save", "layer_tar", "oci_archive", "oci_layout"]

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


@dataclass(frozen=True)
class Entry:
    """One tar member: a file (``data``), a directory, a hard link or symlink (``link``)."""

    name: str
    data: bytes | None = None
    mode: int = 0o644
    kind: str = "file"  # file | dir | hardlink | symlink | fifo
    link: str = ""


def layer_tar(entries: list[Entry]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for e in entries:
            info = tarfile.TarInfo(e.name)
            info.mode = e.mode
            if e.kind == "file":
                info.size = len(e.data or b"")
                tar.addfile(info, io.BytesIO(e.data or b""))
                continue
            info.type = {"dir": tarfile.DIRTYPE, "hardlink": tarfile.LNKTYPE,
                         "symlink": tarfile.SYMTYPE, "fifo": tarfile.FIFOTYPE}[e.kind]  # fmt: skip
            info.linkname = e.link
            tar.addfile(info)
    return out.getvalue()


def _blob(root: Path, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    (root / "blobs/sha256").mkdir(parents=True, exist_ok=True)
    (root / "blobs/sha256" / digest).write_bytes(data)
    return f"sha256:{digest}"


def _descriptor(media_type: str, root: Path, data: bytes) -> dict[str, object]:
    return {"mediaType": media_type, "digest": _blob(root, data), "size": len(data)}


def _image(root: Path, layers: list[list[Entry]]) -> dict[str, object]:
    """Writes one image's layers, config and manifest; returns the manifest's descriptor."""
    tars = [layer_tar(layer) for layer in layers]
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers",
                   "diff_ids": [f"sha256:{hashlib.sha256(t).hexdigest()}" for t in tars]},
    }).encode()  # fmt: skip
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": _descriptor("application/vnd.oci.image.config.v1+json", root, config),
        "layers": [_descriptor(OCI_LAYER_GZIP, root, gzip.compress(t, mtime=0)) for t in tars],
    }).encode()  # fmt: skip
    return _descriptor(OCI_MANIFEST, root, manifest)


def oci_layout(root: Path, layers: list[list[Entry]], *, platforms: tuple[str, ...] = ()) -> Path:
    """An OCI image layout directory; with ``platforms``, an index naming one image each."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    if platforms:
        entries = []
        for platform in platforms:
            os_name, arch = platform.split("/")
            platform_of = {"os": os_name, "architecture": arch}
            entries.append({**_image(root, layers), "platform": platform_of})
        inner = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries})
        manifests = [_descriptor(OCI_INDEX, root, inner.encode())]
    else:
        manifests = [_image(root, layers)]
    (root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": manifests}))
    return root


def _pack(source: Path, target: Path) -> Path:
    with tarfile.open(target, "w") as tar:
        for path in sorted(source.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(source)), recursive=False)
    return target


def oci_archive(work: Path, layers: list[list[Entry]]) -> Path:
    """The same layout packed into one tarball (what ``oci-archive:`` writes)."""
    return _pack(oci_layout(work / "layout", layers), work / "image.tar")


def docker_save(work: Path, layers: list[list[Entry]]) -> Path:
    """A ``docker save`` tarball: uncompressed ``<n>/layer.tar`` files named in manifest.json,
    checked against the config's diff_ids."""
    root = work / "docker"
    tars = [layer_tar(layer) for layer in layers]
    paths = []
    for n, data in enumerate(tars):
        (root / str(n)).mkdir(parents=True)
        (root / str(n) / "layer.tar").write_bytes(data)
        paths.append(f"{n}/layer.tar")
    diff_ids = [f"sha256:{hashlib.sha256(t).hexdigest()}" for t in tars]
    config = {"rootfs": {"type": "layers", "diff_ids": diff_ids}}
    (root / "config.json").write_text(json.dumps(config))
    (root / "manifest.json").write_text(
        json.dumps([{"Config": "config.json", "RepoTags": ["upf:1"], "Layers": paths}])
    )
    return _pack(root, work / "docker.tar")

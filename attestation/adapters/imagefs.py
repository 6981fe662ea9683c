"""A container image read the way a runtime assembles it, without unpacking it anywhere: an OCI
image layout directory (``skopeo copy docker://... oci:DIR``, ``buildah push ... oci:DIR``), or
a tarball of one (``oci-archive:``), or a ``docker save`` tarball.

Each layer is streamed once: regular files are hashed as they pass (capped per file), nothing is
written to disk, nothing an entry names is opened on the host. The layer's bytes are checked
against the digest its manifest gives before its entries count: a layer that is not the one the
manifest names is an error, not a policy. What the entries add up to (whiteouts, opaque
directories, hard links) is decided by the pure ``attestation.core.layers``.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from attestation.adapters.safefile import DEFAULT_MAX_FILE_BYTES, hash_stream, open_capped
from attestation.core.layers import EntryKind, ImageFile, LayerEntry, LayerError, apply_layer

__all__ = ["ImageError", "image_files"]

#: Largest index, manifest or config JSON read (real ones are a few KiB).
_MAX_JSON_BYTES = 4 << 20
#: More layers than any runtime accepts (overlayfs stacks at most ~128 lower directories).
_MAX_LAYERS = 256
#: Largest layer blob opened (compressed size); files inside are capped one by one.
_MAX_BLOB_BYTES = 64 << 30
_CHUNK = 1 << 20
_HEX64 = re.compile(r"[0-9a-f]{64}")
_INDEX_TYPES = {
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
}


_ZSTD = ("{}: zstd layers are not supported; copy the image with gzip layers "
         "(skopeo copy --dest-compress-format gzip)")  # fmt: skip
_NOT_AN_IMAGE = ("neither an OCI image layout (index.json) nor a docker save tarball "
                 "(manifest.json); for an unpacked root file system use --from-dir")  # fmt: skip


class ImageError(ValueError):
    """An image that cannot be read as one: the message names the file, blob or entry."""


@dataclass(frozen=True, slots=True)
class _Layer:
    name: str  # how errors name it: its digest, or its path in a docker tarball
    member: str  # where its bytes are in the source
    digest: str  # "sha256:<hex>" of those bytes


class _Hashing(io.RawIOBase):
    """A stream that hashes what is read through it."""

    def __init__(self, inner: IO[bytes]) -> None:
        self.inner = inner
        self.sha256 = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.inner.read(len(buffer))
        self.sha256.update(data)
        buffer[: len(data)] = data
        return len(data)


def _json(data: bytes, what: str) -> Any:
    if len(data) > _MAX_JSON_BYTES:
        raise ImageError(f"{what}: {len(data)} bytes, over the cap of {_MAX_JSON_BYTES}")
    try:
        return json.loads(data)
    except ValueError as e:
        raise ImageError(f"{what}: not JSON: {e}") from None


def _field(obj: Any, key: str, kind: type, what: str) -> Any:
    value = obj.get(key) if isinstance(obj, dict) else None
    if not isinstance(value, kind):
        raise ImageError(f"{what}: missing or malformed {key!r}")
    return value


class _Source:
    """Blobs and named files of an image, from a directory or a tarball."""

    def __init__(self, path: Path, tar: tarfile.TarFile | None) -> None:
        self.path, self.tar = path, tar

    def has(self, name: str) -> bool:
        if self.tar is None:
            return (self.path / name).is_file()
        try:
            return self.tar.getmember(name).isfile()
        except KeyError:
            return False

    def open(self, name: str) -> IO[bytes]:
        if self.tar is None:
            return open_capped(self.path / name, _MAX_BLOB_BYTES)
        try:
            member = self.tar.getmember(name)
        except KeyError:
            raise ImageError(f"{self.path}: no {name} in the tarball") from None
        stream = self.tar.extractfile(member) if member.isfile() else None
        if stream is None:
            raise ImageError(f"{self.path}: {name} is not a regular file in the tarball")
        return stream

    def read(self, name: str) -> bytes:
        with self.open(name) as f:
            return f.read(_MAX_JSON_BYTES + 1)

    def blob(self, digest: str) -> str:
        alg, _, hexdigest = digest.partition(":")
        if (
            alg != "sha256"
            or len(hexdigest) != 64
            or not all(c in "0123456789abcdef" for c in hexdigest)
        ):
            raise ImageError(f"{self.path}: unsupported or malformed digest {digest!r}")
        return f"blobs/sha256/{hexdigest}"


def _described(descriptor: Any) -> str:
    """How an index entry is shown when the user must choose: its ref name or platform."""
    if not isinstance(descriptor, dict):
        return "?"
    ref = (descriptor.get("annotations") or {}).get("org.opencontainers.image.ref.name")
    platform = descriptor.get("platform") or {}
    return str(ref or f"{platform.get('os', '?')}/{platform.get('architecture', '?')}")


def _oci_manifest(src: _Source, platform: str | None) -> dict[str, Any]:
    """The one image manifest the layout's index leads to (through nested indexes), picking
    ``platform`` (``os/arch``) where an index offers several."""
    descriptors: list[Any] = _field(_json(src.read("index.json"), "index.json"), "manifests", list,
                                    "index.json")  # fmt: skip
    for _ in range(8):  # nested indexes, bounded
        if platform is not None:
            chosen = [d for d in descriptors if isinstance(d, dict) and isinstance(
                d.get("platform"), dict) and "/".join((d["platform"].get("os", ""),
                d["platform"].get("architecture", ""))) == platform] or descriptors  # fmt: skip
        else:
            chosen = descriptors
        if len(chosen) != 1:
            refs = [_described(d) for d in chosen]
            raise ImageError(f"{src.path}: {len(chosen)} images in the index ({refs}); "
                             "name one with --platform OS/ARCH")  # fmt: skip
        digest = _field(chosen[0], "digest", str, "index entry")
        doc = _json(src.read(src.blob(digest)), digest)
        if chosen[0].get("mediaType") in _INDEX_TYPES or "manifests" in doc:
            descriptors = _field(doc, "manifests", list, digest)
            continue
        return dict(doc)
    raise ImageError(f"{src.path}: indexes nested more than 8 deep")


def _layers(src: _Source, platform: str | None) -> list[_Layer]:
    if src.has("index.json"):
        manifest = _oci_manifest(src, platform)
        out = []
        for d in _field(manifest, "layers", list, "manifest"):
            digest = _field(d, "digest", str, "manifest layer")
            if "zstd" in str(d.get("mediaType", "")):
                raise ImageError(_ZSTD.format(digest))
            out.append(_Layer(digest, src.blob(digest), digest))
        return out
    if src.has("manifest.json"):  # docker save: layers named by path, checked by diff_id
        images = _json(src.read("manifest.json"), "manifest.json")
        if not isinstance(images, list) or len(images) != 1:
            raise ImageError(f"{src.path}: manifest.json must list exactly one image; save one")
        paths = _field(images[0], "Layers", list, "manifest.json")
        config = _json(src.read(_field(images[0], "Config", str, "manifest.json")), "image config")
        diff_ids = _field(_field(config, "rootfs", dict, "image config"), "diff_ids", list,
                          "image config")  # fmt: skip
        if len(diff_ids) != len(paths):
            raise ImageError(f"{src.path}: {len(paths)} layers but {len(diff_ids)} diff_ids")
        return [_Layer(p, p, d) for p, d in zip(paths, diff_ids, strict=True)]
    raise ImageError(f"{src.path}: {_NOT_AN_IMAGE}")


def _entries(tar: tarfile.TarFile, layer: str, cap: int, most: int) -> Iterator[LayerEntry]:
    for count, m in enumerate(tar, 1):
        if count > most:
            raise ImageError(f"{layer}: over {most} entries in one layer")
        if m.isreg():
            if m.size > cap:
                raise ImageError(f"{layer}: {m.name}: {m.size} bytes, over the cap of {cap} "
                                 "(--max-file-bytes)")  # fmt: skip
            f = tar.extractfile(m)
            assert f is not None  # a regular member always has a stream
            digest, head = hash_stream(f, f"{layer}: {m.name}", cap)
            file = ImageFile(digest, bool(m.mode & 0o111), head == b"\x7fELF")
            yield LayerEntry(m.name, EntryKind.FILE, file=file)
        elif m.isdir():
            yield LayerEntry(m.name, EntryKind.DIR)
        elif m.islnk():
            yield LayerEntry(m.name, EntryKind.LINK, target=m.linkname)
        else:
            yield LayerEntry(m.name, EntryKind.OTHER)


def _apply(
    src: _Source, files: dict[str, ImageFile], layer: _Layer, cap: int, most: int
) -> dict[str, ImageFile]:
    with src.open(layer.member) as raw:
        hashing = _Hashing(raw)
        stream = io.BufferedReader(hashing, _CHUNK)
        try:
            with tarfile.open(fileobj=stream, mode="r|*") as tar:
                files = apply_layer(files, _entries(tar, layer.name, cap, most), layer.name)
            while stream.read(_CHUNK):  # the tar's end padding: the digest covers every byte
                pass
        except (tarfile.TarError, EOFError, OSError) as e:
            raise ImageError(f"{layer.name}: not a readable tar layer: {e}") from None
    seen = f"sha256:{hashing.sha256.hexdigest()}"
    if layer.digest is not None and seen != layer.digest:
        raise ImageError(
            f"{layer.name}: its bytes hash to {seen}, the manifest says {layer.digest}"
        )
    return files


@contextmanager
def _source(path: Path) -> Iterator[_Source]:
    if path.is_dir():
        yield _Source(path, None)
        return
    with open_capped(path, _MAX_BLOB_BYTES << 2) as f:
        try:
            tar = tarfile.open(fileobj=f, mode="r:*")  # noqa: SIM115 - closed by the with below
        except (tarfile.TarError, OSError) as e:
            raise ImageError(f"{path}: not an image directory or tarball: {e}") from None
        with tar:
            yield _Source(path, tar)


def image_files(
    path: Path,
    *,
    platform: str | None = None,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    max_files: int = 1_000_000,
    progress: Callable[[int, int, str, int], None] | None = None,
) -> dict[str, ImageFile]:
    """The regular files of the image at ``path``, by absolute path. ``progress(done, layers,
    layer, files)`` after each layer. ImageError (or ``safefile.FileRefused``) names what is
    wrong."""
    with _source(path) as src:
        layers = _layers(src, platform)
        if len(layers) > _MAX_LAYERS:
            raise ImageError(f"{path}: {len(layers)} layers, over the cap of {_MAX_LAYERS}")
        files: dict[str, ImageFile] = {}
        for n, layer in enumerate(layers, 1):
            try:
                files = _apply(src, files, layer, max_file_bytes, max_files)
            except LayerError as e:
                raise ImageError(str(e)) from None
            if len(files) > max_files:
                raise ImageError(f"{layer.name}: over {max_files} files in the image")
            if progress is not None:
                progress(n, len(layers), layer.name, len(files))
        return files

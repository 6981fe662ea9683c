"""The kernel's IMA, stood in for: this machine's kernel has no IMA, so the tests and the demo write
the measurement list themselves and extend PCR 10 of a real swtpm with the same digests.

The encoding here is written independently of ``core.ima`` (it never imports it): the parser
is tested against a second implementation, not against itself. It follows the kernel's
``ima_measurements_show`` / ``ima_calc_field_array_hash`` byte for byte:

binary entry: ``u32 pcr || column digest || u32 len || template name || u32 len || template data``
(little-endian), template data = the template's fields, each ``u32 len || bytes``; ``d-ng`` is
``algo ":" NUL digest``, ``n-ng`` and the string fields are NUL-terminated. The column holds
H(template data) for the file's bank (SHA-1 in ``binary_runtime_measurements``, SHA-256 in
``binary_runtime_measurements_sha256``); a violation holds zeros and extends all-0xFF.

Order as the kernel: the entry is appended to the list, then the PCR is extended.

Paths and cgroup paths are bytes to the kernel (any byte but NUL): every name here may be given as
``bytes``, or as ``str`` whose lone surrogates U+DC80..U+DCFF stand for the bytes 0x80..0xFF that
are not UTF-8 (``os.fsdecode``'s convention), which is also how ``Written`` reports them.
"""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from attestation.core.types import IMA_PCR, HashAlg

__all__ = [
    "TEMPLATES",
    "BuiltLog",
    "Digest",
    "Extend",
    "ImaWriter",
    "Written",
    "ascii_line",
    "build_log",
    "cgroupfs_pod_cgroup",
    "encode_entry",
    "encode_legacy_ima",
    "encode_template_data",
    "systemd_pod_cgroup",
]

Extend = Callable[[int, Mapping[HashAlg, bytes]], None]

TEMPLATES = ("ima-ng", "ima-sig", "ima-cgpath")


@dataclass(frozen=True)
class Digest:
    """Pass to :meth:`ImaWriter.measure` to log a given file digest instead of hashing content."""

    value: bytes


def _h(alg: HashAlg, data: bytes) -> bytes:
    return hashlib.new(alg.value, data).digest()


def _le32(n: int) -> bytes:
    return n.to_bytes(4, "little")


def _lv(value: bytes) -> bytes:
    return _le32(len(value)) + value


def _raw(name: str | bytes) -> bytes:
    """A name as the kernel logs it: bytes as given, text as UTF-8 with surrogate escapes."""
    return name if isinstance(name, bytes) else name.encode("utf-8", "surrogateescape")


def _text(name: str | bytes) -> str:
    return name.decode("utf-8", "surrogateescape") if isinstance(name, bytes) else name


def encode_template_data(
    template: str,
    path: str | bytes,
    digest_alg: str,
    digest: bytes,
    *,
    cgroup_path: str | bytes = "",
    dep: str | bytes = "",
    signature: bytes = b"",
) -> bytes:
    """The template data the kernel hashes and logs for one file measurement."""
    d_ng = _lv(digest_alg.encode() + b":\x00" + digest)
    n_ng = _lv(_raw(path) + b"\x00")
    if template == "ima-ng":
        return d_ng + n_ng
    if template == "ima-sig":
        return d_ng + n_ng + _lv(signature)
    if template == "ima-cgpath":
        return _lv(_raw(dep) + b"\x00") + _lv(_raw(cgroup_path) + b"\x00") + d_ng + n_ng
    raise ValueError(f"the writer does not do template {template!r}")


def encode_entry(column: bytes, template: str, data: bytes, pcr: int = IMA_PCR) -> bytes:
    return _le32(pcr) + column + _lv(template.encode()) + _lv(data)


def encode_legacy_ima(column: bytes, sha1_digest: bytes, path: str) -> tuple[bytes, bytes]:
    """The old ``ima`` template: (binary entry, the bytes its template hash covers: digest ||
    name zero-padded to 256). Its binary form has no data length and an unterminated name."""
    name = path.encode()
    entry = _le32(IMA_PCR) + column + _lv(b"ima") + sha1_digest + _lv(name)
    return entry, sha1_digest + name + bytes(256 - len(name))


def ascii_line(
    column: bytes,
    template: str,
    digest_alg: str,
    digest: bytes,
    path: str | bytes,
    **extra: str | bytes,
) -> bytes:
    """One line of ``ascii_runtime_measurements`` (without its newline): the kernel prints the
    names' bytes as they are."""
    fields = [str(IMA_PCR).encode(), column.hex().encode(), template.encode()]
    if template == "ima-cgpath":
        fields += [_raw(extra.get("dep", "")), _raw(extra.get("cgroup_path", ""))]
    fields += [f"{digest_alg}:{digest.hex()}".encode(), _raw(path)]
    if template == "ima-sig":
        sig = extra.get("signature", b"")
        assert isinstance(sig, bytes)
        fields.append(sig.hex().encode())
    return b" ".join(fields)


# --- cgroup paths as kubelet + the container runtime make them ---------------------------------


def systemd_pod_cgroup(
    uid: str, container_id: str = "", qos: str = "burstable", runtime: str = "cri-containerd"
) -> str:
    """``/kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid_>.slice/<runtime>-<id>.scope``;
    guaranteed pods sit directly under kubepods.slice."""
    u = uid.replace("-", "_")
    if qos == "guaranteed":
        base = f"/kubepods.slice/kubepods-pod{u}.slice"
    else:
        base = f"/kubepods.slice/kubepods-{qos}.slice/kubepods-{qos}-pod{u}.slice"
    return f"{base}/{runtime}-{container_id}.scope" if container_id else base


def cgroupfs_pod_cgroup(uid: str, container_id: str = "", qos: str = "burstable") -> str:
    base = f"/kubepods/pod{uid}" if qos == "guaranteed" else f"/kubepods/{qos}/pod{uid}"
    return f"{base}/{container_id}" if container_id else base


# --- the writer ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Written:
    """One entry as written: what a test compares the parser's output with."""

    index: int
    template: str
    template_data: bytes
    path: str
    digest_alg: str
    digest: bytes
    cgroup_path: str | None
    violation: bool
    #: the template-hash column root wrote instead of H(template data) (the PCR still gets the
    #: true digests: root can rewrite the list file, not undo an extend)
    forged_column: bytes | None = None

    def column(self, alg: HashAlg) -> bytes:
        """The entry's column in the list of ``alg``'s bank."""
        if self.forged_column is not None:
            return self.forged_column
        return bytes(alg.digest_size) if self.violation else _h(alg, self.template_data)


@dataclass
class ImaWriter:
    """Appends entries to ``log_path`` (binary, column of ``column_alg``) and extends PCR 10 in
    every bank through ``extend`` (a swtpm's ``extend_pcr``), keeping the expected PCR 10 values."""

    log_path: Path
    extend: Extend | None = None
    banks: Sequence[HashAlg] = (HashAlg.SHA1, HashAlg.SHA256)
    column_alg: HashAlg = HashAlg.SHA1
    digest_alg: HashAlg = HashAlg.SHA256
    template: str = "ima-ng"
    entries: list[Written] = field(default_factory=list)
    pcr10: dict[HashAlg, bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.pcr10 = {alg: bytes(alg.digest_size) for alg in self.banks}
        self.log_path.touch()

    def _append(self, written: Written) -> Written:
        raw = encode_entry(written.column(self.column_alg), written.template, written.template_data)
        with self.log_path.open("ab") as f:  # the kernel: add to the list first ...
            f.write(raw)
        digests = {
            alg: (
                b"\xff" * alg.digest_size if written.violation else _h(alg, written.template_data)
            )
            for alg in self.banks
        }
        for alg, d in digests.items():
            self.pcr10[alg] = _h(alg, self.pcr10[alg] + d)
        if self.extend is not None:  # ... then extend the TPM
            self.extend(IMA_PCR, digests)
        self.entries.append(written)
        return written

    def boot_aggregate(self, pcr_values: Mapping[int, bytes], *, with_8_9: bool = False) -> Written:
        """The first record: H(PCR0..7) (or 0..9) of the ``digest_alg`` bank's ``pcr_values``."""
        last = 10 if with_8_9 else 8
        value = _h(self.digest_alg, b"".join(pcr_values[i] for i in range(last)))
        return self.measure("boot_aggregate", Digest(value))

    def measure(
        self,
        path: str | bytes,
        content_or_digest: bytes | Digest,
        *,
        cgroup_path: str | bytes = "",
        dep: str | bytes = "",
        template: str | None = None,
        signature: bytes = b"",
        forged_column: bytes | None = None,
    ) -> Written:
        if isinstance(content_or_digest, Digest):
            digest = content_or_digest.value
        else:
            digest = _h(self.digest_alg, content_or_digest)
        tpl = template or self.template
        data = encode_template_data(
            tpl,
            path,
            self.digest_alg.value,
            digest,
            cgroup_path=cgroup_path,
            dep=dep,
            signature=signature,
        )
        cg = _text(cgroup_path) if tpl == "ima-cgpath" else None
        written = Written(
            len(self.entries), tpl, data, _text(path), self.digest_alg.value, digest, cg, False,
            forged_column,
        )  # fmt: skip
        return self._append(written)

    def violation(self, path: str | bytes, *, cgroup_path: str | bytes = "") -> Written:
        """A ToMToU / open-writers violation: zero digest in the entry, zero column, 0xFF extend."""
        zero = bytes(self.digest_alg.digest_size)
        data = encode_template_data(
            self.template, path, self.digest_alg.value, zero, cgroup_path=cgroup_path
        )
        cg = _text(cgroup_path) if self.template == "ima-cgpath" else None
        written = Written(
            len(self.entries), self.template, data, _text(path), self.digest_alg.value, zero, cg,
            True,
        )  # fmt: skip
        return self._append(written)

    def binary(self, column_alg: HashAlg | None = None) -> bytes:
        """The whole list as the binary file of ``column_alg``'s bank would show it."""
        alg = column_alg or self.column_alg
        out = []
        for w in self.entries:
            out.append(encode_entry(w.column(alg), w.template, w.template_data))
        return b"".join(out)

    def ascii(self, column_alg: HashAlg | None = None) -> bytes:
        """``ascii_runtime_measurements`` for the same entries."""
        alg = column_alg or self.column_alg
        lines = []
        for w in self.entries:
            column = w.column(alg)
            extra: dict[str, str | bytes] = {}
            if w.template == "ima-cgpath":
                dep_len = int.from_bytes(w.template_data[:4], "little")
                extra["dep"] = w.template_data[4 : 4 + dep_len - 1]
                extra["cgroup_path"] = w.cgroup_path or ""
            if w.template == "ima-sig":
                extra["signature"] = _last_field(w.template_data)
            line = ascii_line(column, w.template, w.digest_alg, w.digest, w.path, **extra)
            lines.append(line + b"\n")
        return b"".join(lines)


def _last_field(data: bytes) -> bytes:
    pos, last = 0, b""
    while pos < len(data):
        n = int.from_bytes(data[pos : pos + 4], "little")
        last = data[pos + 4 : pos + 4 + n]
        pos += 4 + n
    return last


# --- big logs for benchmarks, no TPM ------------------------------------------------------------


@dataclass(frozen=True)
class BuiltLog:
    binary: bytes
    ascii: bytes
    pcr10: Mapping[HashAlg, bytes]
    #: path -> the sha256 digest logged for it, for a policy that allows everything in the log
    digests: Mapping[str, bytes]
    pods: Sequence[str]


def build_log(
    n: int,
    *,
    template: str = "ima-ng",
    column_alg: HashAlg = HashAlg.SHA256,
    banks: Sequence[HashAlg] = (HashAlg.SHA256,),
    pods: int = 3,
    pod_share: float = 0.1,
    seed: int = 1,
) -> BuiltLog:
    """``n`` entries after boot_aggregate: mostly host files, ``pod_share`` of them in ``pods``
    pods' containers (systemd driver). Pure: bytes and expected PCR 10 values, nothing extended."""
    rng = random.Random(seed)  # noqa: S311 - reproducible test data, not secrets
    pod_uids = [f"{rng.getrandbits(128):032x}" for _ in range(pods)]
    pod_uids = [f"{u[:8]}-{u[8:12]}-{u[12:16]}-{u[16:20]}-{u[20:]}" for u in pod_uids]
    pod_cgs = [
        systemd_pod_cgroup(
            u, f"{rng.getrandbits(256):064x}", qos=("burstable", "besteffort")[i % 2]
        )
        for i, u in enumerate(pod_uids)
    ]
    host_cg = "/system.slice/containerd.service"
    dirs = ["/usr/bin", "/usr/lib/x86_64-linux-gnu", "/usr/sbin", "/etc", "/opt/upf/lib"]
    pcr = {alg: bytes(alg.digest_size) for alg in banks}
    binary: list[bytes] = []
    text: list[bytes] = []
    digests: dict[str, bytes] = {}
    for i in range(n + 1):
        if i == 0:
            path, digest, cg = "boot_aggregate", _h(HashAlg.SHA256, b"boot"), host_cg
        else:
            path = f"{dirs[i % len(dirs)]}/file-{i:07d}.so"
            digest = _h(HashAlg.SHA256, os.urandom(8) if i % 97 == 0 else path.encode())
            cg = pod_cgs[i % pods] if rng.random() < pod_share else host_cg
        dep = "/usr/lib/systemd/systemd:/usr/bin/containerd-shim-runc-v2"
        data = encode_template_data(template, path, "sha256", digest, cgroup_path=cg, dep=dep)
        column = _h(column_alg, data)
        binary.append(encode_entry(column, template, data))
        line = ascii_line(column, template, "sha256", digest, path, dep=dep, cgroup_path=cg)
        text.append(line + b"\n")
        for alg in banks:
            pcr[alg] = _h(alg, pcr[alg] + _h(alg, data))
        digests[path] = digest
    return BuiltLog(b"".join(binary), b"".join(text), pcr, digests, pod_uids)

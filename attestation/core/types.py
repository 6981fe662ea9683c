"""The attestation domain shared by every module: frozen values, no behaviour beyond formatting.

Wire payloads (agent JSON, Kubernetes objects) are TypedDicts next to the code that speaks them;
these dataclasses are what the pure core takes and returns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

__all__ = [
    "IMA_PCR",
    "ClockInfo",
    "Failure",
    "HashAlg",
    "ImaEntry",
    "NodeVerdict",
    "PodRef",
    "PodVerdict",
    "Severity",
]

Severity = Literal["error", "warning"]

#: The PCR the kernel's IMA extends.
IMA_PCR = 10


class HashAlg(StrEnum):
    """TPM hash algorithms trustgate handles, with their TPM_ALG_ID values."""

    SHA1 = "sha1"
    SHA256 = "sha256"
    SHA384 = "sha384"
    SHA512 = "sha512"

    @property
    def digest_size(self) -> int:
        return {"sha1": 20, "sha256": 32, "sha384": 48, "sha512": 64}[self.value]

    @property
    def tpm_alg_id(self) -> int:
        return {"sha1": 0x0004, "sha256": 0x000B, "sha384": 0x000C, "sha512": 0x000D}[self.value]


@dataclass(frozen=True, slots=True)
class Failure:
    """One reason a node or pod is not trusted.

    ``id`` is stable and dotted (``ima.policy.unknown_file``): tooling, alerts and tests key on it.
    ``message`` is for a person and names the file, digest and pod where there is one.
    """

    id: str
    message: str
    severity: Severity = "error"
    pod_uid: str | None = None
    path: str | None = None
    digest: str | None = None

    def as_dict(self) -> dict[str, str]:
        out = {"id": self.id, "message": self.message}
        if self.severity != "error":
            out["severity"] = self.severity
        for key in ("pod_uid", "path", "digest"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out


@dataclass(frozen=True, slots=True)
class PodRef:
    """A measurement's owner, from its cgroup path: the pod's UID (canonical dashed form) and the
    container ID, which may be empty when the path names the pod's own slice."""

    uid: str
    container_id: str = ""


@dataclass(frozen=True, slots=True)
class ImaEntry:
    """One record of the kernel's IMA measurement list, decoded.

    ``template_hash`` is the hash column as the log holds it (SHA-1 in the common binary log,
    or the bank's algorithm with ``ima_hash``/``template_hash=``); ``template_data`` is the raw
    template data, the bytes every PCR bank hashes for its extend.
    """

    index: int
    pcr: int
    template_hash: bytes
    template_name: str
    template_data: bytes
    file_digest_alg: str
    file_digest: bytes
    path: str
    cgroup_path: str | None = None
    signature: bytes | None = None

    @property
    def is_violation(self) -> bool:
        """The kernel logs a time-of-measure/time-of-use or open-writers violation as an all-zero
        template hash; the PCR is extended with all-0xFF instead."""
        return not any(self.template_hash)


@dataclass(frozen=True, slots=True)
class ClockInfo:
    """TPMS_CLOCK_INFO from a quote."""

    clock: int
    reset_count: int
    restart_count: int
    safe: bool


@dataclass(frozen=True, slots=True)
class PodVerdict:
    uid: str
    trusted: bool
    network_function: str | None = None
    failures: tuple[Failure, ...] = ()
    measurements: int = 0


@dataclass(frozen=True, slots=True)
class NodeVerdict:
    """The outcome of one attestation round of one node.

    ``trusted`` speaks for the node itself (quote, log integrity, host measurements); a divergent
    pod makes only that pod untrusted, which is the point of per-pod attribution.
    """

    node: str
    trusted: bool
    failures: tuple[Failure, ...] = ()
    pods: tuple[PodVerdict, ...] = field(default_factory=tuple)
    quote_digest: str = ""
    measurements: int = 0

    def pod(self, uid: str) -> PodVerdict | None:
        for pod in self.pods:
            if pod.uid == uid:
                return pod
        return None

"""The kernel's IMA stand-in now lives in attestation.lab.ima_writer (the demo uses it too); this
name stays for scripts that still import it from here."""

from attestation.lab.ima_writer import (
    Digest,
    ImaWriter,
    build_log,
    cgroupfs_pod_cgroup,
    systemd_pod_cgroup,
)

__all__ = ["Digest", "ImaWriter", "build_log", "cgroupfs_pod_cgroup", "systemd_pod_cgroup"]

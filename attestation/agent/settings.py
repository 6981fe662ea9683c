"""The agent's settings: one frozen tree, loaded once at start and passed down. The ``trustgate
agent`` flags set these fields; the defaults here are the only copy."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = ["DEFAULT_IMA_LOG", "DEFAULT_TCTI", "AgentSettings"]

DEFAULT_IMA_LOG: Final = Path("/sys/kernel/security/ima/binary_runtime_measurements")
#: The kernel's TPM resource manager.
DEFAULT_TCTI: Final = "device:/dev/tpmrm0"


@dataclass(frozen=True, slots=True)
class AgentSettings:
    #: The Kubernetes node this agent speaks for (the DaemonSet passes spec.nodeName).
    node_name: str
    #: TCTI of the TPM: the kernel's resource manager on a node, ``swtpm:...`` in tests.
    tcti: str = DEFAULT_TCTI
    #: Which EK the TPM carries a certificate for.
    ek_alg: str = "rsa"
    #: The kernel's binary measurement list (read-only securityfs in the DaemonSet).
    ima_log: Path = DEFAULT_IMA_LOG
    #: Where the AK blob (wrapped by the EK, useless on another TPM) is kept across restarts.
    state_dir: Path = Path("/var/lib/trustgate-agent")
    host: str = "0.0.0.0"  # noqa: S104 - the DaemonSet's hostPort; NetworkPolicy narrows callers
    port: int = 9443
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: CA bundle of the certificates callers must present (the verifier's client certificate);
    #: with it, a caller without one fails the TLS handshake. None: anyone may call (a warning).
    client_ca: Path | None = None
    #: Requests that may wait for the TPM behind the one it runs; more get a 503 at once.
    tpm_queue: int = 8
    #: Where to tell the verifier that the log grew (push); None disables push.
    notify_url: str | None = None
    #: How often the log is checked for new entries. securityfs files have no size and no
    #: inotify, so the agent polls by reading from its last offset.
    watch_interval: float = 0.05
    #: Largest request body accepted; the agent's requests are all tiny.
    max_body_bytes: int = 64 * 1024
    #: Most log bytes one answer carries (whole entries; the verifier asks for the next page):
    #: what bounds the agent's memory, whatever the log's size. Between MIN_PAGE_BYTES (1 MiB)
    #: and MAX_PAGE_BYTES (16 MiB) of core.evidence.
    page_bytes: int = 4 * 1024 * 1024
    #: The template-hash column of the binary log, to frame whole entries: 20 for
    #: ``binary_runtime_measurements`` (SHA-1), 32 for ``..._sha256``.
    log_column_size: int = 20

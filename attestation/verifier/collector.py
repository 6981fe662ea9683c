"""HTTP to the node agents: identity, credential activation, evidence.

The agent is outside the trust boundary: the evidence it returns authenticates itself (the quote
is signed by an AK bound to the TPM's EK), so TLS here gives confidentiality, not trust, and the
agent's serving certificate is not pinned unless a CA bundle is configured. What the agent can
still do is be slow, hang, or send garbage or huge bodies: every call has a timeout, bodies are
capped while streaming, and each way of failing becomes a :class:`CollectorError` with a stable
failure id.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import httpx

from attestation.evidence import (
    API_PREFIX,
    MAX_LOG_BYTES,
    Evidence,
    EvidenceFormatError,
    EvidenceQuery,
    Identity,
    decode_activate_response,
    decode_evidence,
    decode_identity,
    encode_activate_request,
    encode_evidence_request,
)

#: Identity and activation answers are a few KiB; evidence carries the new log entries
#: base64-encoded (4/3 of the bytes) plus the quote.
_SMALL_BODY: Final = 256 * 1024
_EVIDENCE_BODY: Final = MAX_LOG_BYTES * 4 // 3 + 65536


class CollectorError(RuntimeError):
    """Talking to an agent failed. ``failure_id`` is one of ``agent.unreachable``,
    ``agent.timeout``, ``agent.http_error``, ``agent.bad_response``, ``agent.too_large``."""

    def __init__(self, failure_id: str, message: str) -> None:
        super().__init__(message)
        self.failure_id = failure_id


class AgentClient:
    def __init__(
        self,
        *,
        timeout: float = 5.0,
        connect_timeout: float = 1.0,
        ca_bundle: Path | None = None,
        max_connections: int = 256,
    ) -> None:
        verify: ssl.SSLContext | bool = False
        if ca_bundle is not None:
            verify = ssl.create_default_context(cafile=str(ca_bundle))
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            verify=verify,
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _call(
        self, method: str, url: str, cap: int, body: Mapping[str, Any] | None = None
    ) -> Any:
        try:
            async with self._http.stream(method, url, json=body) as response:
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.aiter_raw():
                    size += len(chunk)
                    if size > cap:
                        raise CollectorError(
                            "agent.too_large", f"{method} {url}: answer larger than {cap} bytes"
                        )
                    chunks.append(chunk)
        except httpx.TimeoutException as e:
            raise CollectorError("agent.timeout", f"{method} {url}: timed out ({e!r})") from e
        except httpx.HTTPError as e:
            raise CollectorError("agent.unreachable", f"{method} {url}: {e!r}") from e
        raw = b"".join(chunks)
        if response.status_code != 200:
            detail = raw[:300].decode("utf-8", "replace")
            raise CollectorError(
                "agent.http_error", f"{method} {url}: HTTP {response.status_code}: {detail}"
            )
        try:
            return json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CollectorError("agent.bad_response", f"{method} {url}: not JSON ({e})") from e

    async def identity(self, base_url: str) -> Identity:
        body = await self._call("GET", f"{base_url}{API_PREFIX}/identity", _SMALL_BODY)
        try:
            return decode_identity(body)
        except EvidenceFormatError as e:
            raise CollectorError("agent.bad_response", f"{base_url}: {e}") from e

    async def activate(self, base_url: str, credential_blob: bytes, secret: bytes) -> bytes:
        body = await self._call(
            "POST",
            f"{base_url}{API_PREFIX}/activate",
            _SMALL_BODY,
            dict(encode_activate_request(credential_blob, secret)),
        )
        try:
            return decode_activate_response(body)
        except EvidenceFormatError as e:
            raise CollectorError("agent.bad_response", f"{base_url}: {e}") from e

    async def evidence(self, base_url: str, query: EvidenceQuery) -> Evidence:
        body = await self._call(
            "POST",
            f"{base_url}{API_PREFIX}/evidence",
            _EVIDENCE_BODY,
            dict(encode_evidence_request(query)),
        )
        try:
            return decode_evidence(body, query)
        except EvidenceFormatError as e:
            raise CollectorError("agent.bad_response", f"{base_url}: {e}") from e

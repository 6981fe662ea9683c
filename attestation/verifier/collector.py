"""HTTP to the node agents: identity, credential activation, evidence.

The agent is outside the trust boundary: the evidence it returns authenticates itself (the quote
is signed by an AK bound to the TPM's EK), so TLS here gives confidentiality, not trust, and the
agent's serving certificate is not verified. The other way round the agent does check: with
``--agent-client-cert`` the verifier presents a client certificate, and agents started with
``--client-ca`` serve nobody else (docs/agent-api.md). What the agent can still do is be slow,
hang, or send garbage or huge bodies: every call ends within a deadline, bodies are capped
while they arrive (:mod:`attestation.adapters.httpclient`), and each way of failing becomes a
:class:`CollectorError` with a stable failure id.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final, TypeVar

from attestation.adapters.httpclient import HttpClient, HttpClientError, unverified_tls
from attestation.core.evidence import (
    API_PREFIX,
    MAX_PAGE_BYTES,
    Evidence,
    EvidenceFormatError,
    EvidenceQuery,
    Identity,
    decode_activate_response,
    decode_evidence,
    decode_identity,
    decode_log_page,
    encode_activate_request,
    encode_evidence_request,
    encode_log_request,
)
from attestation.verifier.settings import VerifierSettings

__all__ = ["AgentClient", "CollectorError"]

T = TypeVar("T")

#: Identity and activation answers are a few KiB; evidence carries one page of the new log
#: entries base64-encoded (4/3 of the bytes) plus the quote; a log page the same without it.
_SMALL_BODY: Final = 256 * 1024
_EVIDENCE_BODY: Final = MAX_PAGE_BYTES * 4 // 3 + 65536
#: Agents whose kept-alive connections are kept; the least recently used beyond this are closed.
_MAX_AGENTS: Final = 16384


class CollectorError(RuntimeError):
    """Talking to an agent failed. ``failure_id`` is one of ``agent.unreachable``,
    ``agent.timeout``, ``agent.http_error``, ``agent.bad_response``, ``agent.too_large``."""

    def __init__(self, failure_id: str, message: str) -> None:
        super().__init__(message)
        self.failure_id = failure_id


class AgentClient:
    """The verifier's calls to agents, one kept-alive connection per agent (base URL), one TLS
    context for all."""

    def __init__(
        self,
        *,
        timeout: float = 5.0,
        connect_timeout: float = 1.0,
        max_agents: int = _MAX_AGENTS,
        client_cert: Path | None = None,
        client_key: Path | None = None,
    ) -> None:
        # Confidentiality only, see the module doc; the client certificate proves who we are.
        tls = unverified_tls(client_cert, client_key)
        # ``timeout`` bounds each call, first byte to last: an agent that sends a byte every
        # second must not hold its node's round forever (its last verdict would never give way
        # to Unknown).
        self._http = HttpClient(
            tls,
            deadline=timeout,
            connect_timeout=connect_timeout,
            max_peers=max_agents,
            user_agent="trustgate-verifier",
        )

    @classmethod
    def for_settings(cls, settings: VerifierSettings) -> AgentClient:
        return cls(
            timeout=settings.agent_timeout,
            client_cert=settings.agent_client_cert,
            client_key=settings.agent_client_key,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _call(
        self,
        method: str,
        base_url: str,
        path: str,
        cap: int,
        body: Mapping[str, Any] | None = None,
    ) -> Any:
        raw = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        try:
            response = await self._http.request(method, base_url, path, raw, cap)
        except HttpClientError as e:
            raise CollectorError(f"agent.{e.kind}", str(e)) from e
        if response.status != 200:
            detail = response.body[:300].decode("utf-8", "replace")
            raise CollectorError(
                "agent.http_error",
                f"{method} {base_url}{path}: HTTP {response.status}: {detail}",
            )
        try:
            return json.loads(response.body)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CollectorError(
                "agent.bad_response", f"{method} {base_url}{path}: not JSON ({e})"
            ) from e

    async def _exchange(
        self,
        base_url: str,
        path: str,
        cap: int,
        decode: Callable[[Any], T],
        body: Mapping[str, Any] | None = None,
    ) -> T:
        """One call, its JSON answer decoded field by field (``core.evidence``): a wrong field
        is ``agent.bad_response`` naming it."""
        answer = await self._call("GET" if body is None else "POST", base_url, path, cap, body)
        try:
            return decode(answer)
        except EvidenceFormatError as e:
            raise CollectorError("agent.bad_response", f"{base_url}: {e}") from e

    async def identity(self, base_url: str) -> Identity:
        return await self._exchange(
            base_url, f"{API_PREFIX}/identity", _SMALL_BODY, decode_identity
        )

    async def activate(self, base_url: str, credential_blob: bytes, secret: bytes) -> bytes:
        request = encode_activate_request(credential_blob, secret)
        return await self._exchange(
            base_url, f"{API_PREFIX}/activate", _SMALL_BODY, decode_activate_response,
            dict(request),
        )  # fmt: skip

    async def evidence(self, base_url: str, query: EvidenceQuery) -> Evidence:
        return await self._exchange(
            base_url, f"{API_PREFIX}/evidence", _EVIDENCE_BODY,
            lambda answer: decode_evidence(answer, query, MAX_PAGE_BYTES),
            dict(encode_evidence_request(query)),
        )  # fmt: skip

    async def log_page(self, base_url: str, offset: int) -> tuple[bytes, bool]:
        """The page of the log from ``offset``, and whether more follows (``core.evidence``)."""
        return await self._exchange(
            base_url, f"{API_PREFIX}/log", _EVIDENCE_BODY,
            lambda answer: decode_log_page(answer, offset), dict(encode_log_request(offset)),
        )  # fmt: skip

"""HTTP to the node agents: identity, credential activation, evidence.

The agent is outside the trust boundary: the evidence it returns authenticates itself (the quote
is signed by an AK bound to the TPM's EK), so TLS here gives confidentiality, not trust, and the
agent's serving certificate is not pinned unless a CA bundle is configured. What the agent can
still do is be slow, hang, or send garbage or huge bodies: every call has a timeout, bodies are
capped while streaming, and each way of failing becomes a :class:`CollectorError` with a stable
failure id.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import ssl
import sys
from collections import OrderedDict
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
#: Connection pools kept, one per agent; the least recently used is closed beyond this.
_MAX_POOLS: Final = 16384

# httpcore asks "which async library?" on every request with ``import sniffio``; without sniffio
# installed that failed import searches sys.path every time (~0.7 ms of CPU per request, the
# largest cost of a round). An absent module marked None fails at once, with the same answer.
if importlib.util.find_spec("sniffio") is None:
    sys.modules.setdefault("sniffio", None)  # type: ignore[arg-type]


class CollectorError(RuntimeError):
    """Talking to an agent failed. ``failure_id`` is one of ``agent.unreachable``,
    ``agent.timeout``, ``agent.http_error``, ``agent.bad_response``, ``agent.too_large``."""

    def __init__(self, failure_id: str, message: str) -> None:
        super().__init__(message)
        self.failure_id = failure_id


class AgentClient:
    """One small connection pool per agent (base URL), sharing one TLS context: httpcore scans
    every connection of a pool on each request (a readability poll per idle connection), so a
    single pool over thousands of agents costs O(agents) per request."""

    def __init__(
        self,
        *,
        timeout: float = 5.0,
        connect_timeout: float = 1.0,
        ca_bundle: Path | None = None,
        max_pools: int = _MAX_POOLS,
    ) -> None:
        if ca_bundle is not None:
            self._tls = ssl.create_default_context(cafile=str(ca_bundle))
        else:  # what httpx's verify=False builds, made once instead of once per pool
            self._tls = ssl.create_default_context()
            self._tls.check_hostname = False
            self._tls.verify_mode = ssl.CERT_NONE
        self._timeout = httpx.Timeout(timeout, connect=connect_timeout)
        # httpx's timeouts bound each network operation, not the call: an agent that sends a
        # byte every second would hold its node's round forever, and the node's last verdict
        # would never give way to Unknown. Every call, first byte to last, ends by this.
        self._deadline = timeout
        self._max_pools = max_pools
        self._pools: OrderedDict[str, httpx.AsyncClient] = OrderedDict()

    async def aclose(self) -> None:
        pools, self._pools = list(self._pools.values()), OrderedDict()
        for pool in pools:
            await pool.aclose()

    async def _pool(self, base_url: str) -> httpx.AsyncClient:
        pool = self._pools.get(base_url)
        if pool is not None:
            self._pools.move_to_end(base_url)
            return pool
        pool = httpx.AsyncClient(
            timeout=self._timeout,
            verify=self._tls,
            limits=httpx.Limits(max_connections=4, max_keepalive_connections=2),
        )
        self._pools[base_url] = pool
        if len(self._pools) > self._max_pools:
            _, oldest = self._pools.popitem(last=False)
            await oldest.aclose()
        return pool

    async def _call(
        self,
        method: str,
        base_url: str,
        path: str,
        cap: int,
        body: Mapping[str, Any] | None = None,
    ) -> Any:
        url = f"{base_url}{path}"
        http = await self._pool(base_url)
        try:
            async with (
                asyncio.timeout(self._deadline),
                http.stream(method, url, json=body) as response,
            ):
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
        except TimeoutError as e:
            raise CollectorError(
                "agent.timeout", f"{method} {url}: no complete answer within {self._deadline}s"
            ) from e
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
        body = await self._call("GET", base_url, f"{API_PREFIX}/identity", _SMALL_BODY)
        try:
            return decode_identity(body)
        except EvidenceFormatError as e:
            raise CollectorError("agent.bad_response", f"{base_url}: {e}") from e

    async def activate(self, base_url: str, credential_blob: bytes, secret: bytes) -> bytes:
        body = await self._call(
            "POST",
            base_url,
            f"{API_PREFIX}/activate",
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
            base_url,
            f"{API_PREFIX}/evidence",
            _EVIDENCE_BODY,
            dict(encode_evidence_request(query)),
        )
        try:
            return decode_evidence(body, query)
        except EvidenceFormatError as e:
            raise CollectorError("agent.bad_response", f"{base_url}: {e}") from e

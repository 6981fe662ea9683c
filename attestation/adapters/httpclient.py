"""A small HTTP/1.1 client on asyncio streams: one kept-alive connection per peer, strict parsing.

Why not httpx: the verifier asks every node for evidence every interval (2,000 nodes at 2 s is
1,000 requests a second on one core), and httpx + httpcore + anyio cost ~2 ms of CPU per
request (cProfile of the verifier at N=300: the HTTP stack was over half of a round). This client
does one ``write`` and a few buffered reads per request.

What it accepts from the peer, which is outside the trust boundary: a status line
``HTTP/1.x NNN reason``, at most ``MAX_HEADERS`` header lines of at most ``MAX_LINE`` bytes, and
a body framed by Content-Length or by the chunked transfer coding (a FastAPI StreamingResponse),
counted against the caller's cap while it arrives. Anything else is ``bad_response``. Every
request ends within ``deadline`` seconds, first byte to last, whatever the peer does; connecting
(with the TLS handshake) within ``connect_timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal
from urllib.parse import urlsplit

__all__ = [
    "MAX_HEADERS",
    "MAX_LINE",
    "FailureKind",
    "HttpClient",
    "HttpClientError",
    "PeerClosed",
    "Response",
    "read_response",
    "unverified_tls",
]

#: Longest status, header or chunk-size line (StreamReader's limit, also the read buffer size:
#: asyncio's default; a smaller one makes a large first log arrive in many more reads).
MAX_LINE: Final = 64 * 1024
MAX_HEADERS: Final = 100
#: Idle connections kept per peer: a node has one round in flight at a time.
_IDLE_PER_PEER: Final = 2

FailureKind = Literal["unreachable", "timeout", "bad_response", "too_large"]


def unverified_tls(
    client_cert: Path | None = None, client_key: Path | None = None
) -> ssl.SSLContext:
    """TLS that encrypts but does not authenticate the peer: for callers whose answers
    authenticate themselves (a TPM quote over the caller's nonce) or do not matter (a push
    notification, a readiness probe). With ``client_cert``/``client_key`` it presents that
    certificate, for peers that admit only callers they know (the agents admit the verifier)."""
    tls = ssl.create_default_context()
    tls.check_hostname = False
    tls.verify_mode = ssl.CERT_NONE
    if client_cert is not None:
        tls.load_cert_chain(client_cert, client_key)
    return tls


class HttpClientError(Exception):
    """A request failed; ``kind`` says how (the collector prefixes it with ``agent.``)."""

    def __init__(self, kind: FailureKind, message: str) -> None:
        super().__init__(message)
        self.kind: FailureKind = kind


class PeerClosed(HttpClientError):
    """The peer closed the connection before sending a byte of its answer. On a kept-alive
    connection that is the peer's idle timeout racing our request: retried on a new one."""

    def __init__(self) -> None:
        super().__init__("unreachable", "connection closed without an answer")


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes


@dataclass(frozen=True, slots=True)
class _Peer:
    """A base URL split once: where to connect, what to send as Host, the path prefix."""

    tls: bool
    host: str
    port: int
    netloc: str
    prefix: str

    @classmethod
    def parse(cls, base_url: str) -> _Peer:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise HttpClientError("unreachable", f"{base_url}: not an http(s) URL")
        if parts.query or parts.fragment or parts.username is not None:
            raise HttpClientError("unreachable", f"{base_url}: query, fragment or user given")
        tls = parts.scheme == "https"
        try:
            port = parts.port or (443 if tls else 80)
        except ValueError as e:
            raise HttpClientError("unreachable", f"{base_url}: {e}") from None
        return cls(tls, parts.hostname, port, parts.netloc, parts.path.rstrip("/"))


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def usable(self) -> bool:
        return not (self.reader.at_eof() or self.writer.is_closing())

    def close(self) -> None:
        self.writer.close()


class HttpClient:
    """Requests to many peers (base URLs), each with its own few kept-alive connections; the
    least recently used peer's connections are closed beyond ``max_peers``."""

    def __init__(
        self,
        tls: ssl.SSLContext,
        *,
        deadline: float,
        connect_timeout: float,
        max_peers: int,
        user_agent: str = "trustgate",
    ) -> None:
        self._tls = tls
        self._deadline = deadline
        self._connect_timeout = connect_timeout
        self._max_peers = max_peers
        self._user_agent = user_agent
        self._peers: OrderedDict[str, _Peer] = OrderedDict()
        self._idle: dict[str, list[_Connection]] = {}

    async def aclose(self) -> None:
        idle, self._idle = self._idle, {}
        self._peers.clear()
        for conns in idle.values():
            for conn in conns:
                conn.close()
        closing = [conn.writer.wait_closed() for conns in idle.values() for conn in conns]
        # Bounded: a TLS peer that never answers our close_notify must not hold the shutdown.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                await asyncio.gather(*closing, return_exceptions=True)

    async def request(
        self, method: str, base_url: str, path: str, body: bytes | None, cap: int
    ) -> Response:
        """``method`` ``base_url + path`` with a JSON ``body`` (or none); the answer's body is
        at most ``cap`` bytes. Raises :class:`HttpClientError`."""
        where = f"{method} {base_url}{path}"
        peer = self._peer(base_url)
        head = self._head(method, peer, path, body)
        try:
            async with asyncio.timeout(self._deadline):
                conn = self._checkout(base_url)
                if conn is not None:
                    with contextlib.suppress(PeerClosed):
                        return await self._exchange(base_url, conn, head, body, cap)
                conn = await self._connect(peer)
                return await self._exchange(base_url, conn, head, body, cap)
        except HttpClientError as e:
            raise HttpClientError(e.kind, f"{where}: {e}") from e
        except TimeoutError as e:
            raise HttpClientError(
                "timeout", f"{where}: no complete answer within {self._deadline}s"
            ) from e
        except OSError as e:  # refused, reset, TLS (ssl.SSLError is an OSError)
            raise HttpClientError("unreachable", f"{where}: {e!r}") from e

    # -- connections ---------------------------------------------------------------------------

    def _peer(self, base_url: str) -> _Peer:
        peer = self._peers.get(base_url)
        if peer is not None:
            self._peers.move_to_end(base_url)
            return peer
        peer = self._peers[base_url] = _Peer.parse(base_url)
        if len(self._peers) > self._max_peers:
            oldest, _ = self._peers.popitem(last=False)
            for conn in self._idle.pop(oldest, []):
                conn.close()
        return peer

    def _checkout(self, base_url: str) -> _Connection | None:
        conns = self._idle.get(base_url)
        while conns:
            conn = conns.pop()
            if conn.usable():
                return conn
            conn.close()
        return None

    def _checkin(self, base_url: str, conn: _Connection) -> None:
        conns = self._idle.setdefault(base_url, [])
        if len(conns) < _IDLE_PER_PEER and base_url in self._peers:
            conns.append(conn)
        else:
            conn.close()

    async def _connect(self, peer: _Peer) -> _Connection:
        try:
            async with asyncio.timeout(self._connect_timeout):
                reader, writer = await asyncio.open_connection(
                    peer.host,
                    peer.port,
                    ssl=self._tls if peer.tls else None,
                    server_hostname=peer.host if peer.tls else None,
                    limit=MAX_LINE,
                )
        except TimeoutError as e:
            raise HttpClientError(
                "timeout", f"not connected within {self._connect_timeout}s"
            ) from e
        return _Connection(reader, writer)

    # -- one exchange --------------------------------------------------------------------------

    def _head(self, method: str, peer: _Peer, path: str, body: bytes | None) -> bytes:
        lines = [
            f"{method} {peer.prefix + path or '/'} HTTP/1.1",
            f"Host: {peer.netloc}",
            f"User-Agent: {self._user_agent}",
            "Accept: application/json",
        ]
        if body is not None:
            lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")

    async def _exchange(
        self, base_url: str, conn: _Connection, head: bytes, body: bytes | None, cap: int
    ) -> Response:
        """Send, read the answer; the connection goes back to the pool only after a complete,
        well-framed answer the peer did not ask to close. Any failure closes it."""
        done = False
        try:
            conn.writer.write(head + body if body else head)
            response, keep_alive = await read_response(conn.reader, cap)
            done = True
        finally:
            if not done:
                conn.close()
        if keep_alive:
            self._checkin(base_url, conn)
        else:
            conn.close()
        return response


# -- parsing (strict) ----------------------------------------------------------------------------


async def read_response(reader: asyncio.StreamReader, cap: int) -> tuple[Response, bool]:
    """One answer from ``reader`` and whether the connection may carry another. Raises only
    :class:`HttpClientError` (:class:`PeerClosed` if the peer closed before its first byte),
    an ``OSError`` from the connection, or the caller's timeout."""
    try:
        try:
            status_line = await reader.readuntil(b"\r\n")
        except asyncio.IncompleteReadError as e:
            if not e.partial:
                raise PeerClosed from e
            raise
        except ConnectionError as e:
            raise PeerClosed from e
        status, keep_alive = _status(status_line)
        headers = await _headers(reader)
        keep_alive = _keep_alive(headers, default=keep_alive)
        body = await _body(reader, headers, cap)
    except asyncio.LimitOverrunError as e:
        raise HttpClientError("bad_response", f"a line longer than {MAX_LINE} bytes") from e
    except asyncio.IncompleteReadError as e:
        raise HttpClientError("unreachable", "connection closed in the middle of the answer") from e
    return Response(status, body), keep_alive


def _status(line: bytes) -> tuple[int, bool]:
    """The status code, and whether the protocol keeps the connection alive by default."""
    version, _, rest = line.rstrip(b"\r\n").partition(b" ")
    code = rest[:3]
    if version not in (b"HTTP/1.1", b"HTTP/1.0") or not (code.isdigit() and len(code) == 3):
        raise HttpClientError("bad_response", f"not an HTTP/1.x status line: {line[:80]!r}")
    if rest[3:4] not in (b"", b" "):
        raise HttpClientError("bad_response", f"not an HTTP/1.x status line: {line[:80]!r}")
    status = int(code)
    if status < 200:  # no Expect or Upgrade is sent: an informational answer is unexpected
        raise HttpClientError("bad_response", f"unexpected informational status {status}")
    return status, version == b"HTTP/1.1"


async def _headers(reader: asyncio.StreamReader) -> dict[str, str]:
    """Header names lowercased; a repeated header is refused (we use none that may repeat)."""
    headers: dict[str, str] = {}
    for _ in range(MAX_HEADERS + 1):
        line = await reader.readuntil(b"\r\n")
        if line == b"\r\n":
            return headers
        name, colon, value = line[:-2].partition(b":")
        if not colon or not name or name != name.strip() or not name.isascii():
            raise HttpClientError("bad_response", f"malformed header line {line[:80]!r}")
        key = name.decode("ascii").lower()
        if key in headers:
            raise HttpClientError("bad_response", f"repeated header {key!r}")
        headers[key] = value.strip().decode("latin-1")
    raise HttpClientError("bad_response", f"more than {MAX_HEADERS} header lines")


def _keep_alive(headers: dict[str, str], *, default: bool) -> bool:
    tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
    if "close" in tokens:
        return False
    return default or "keep-alive" in tokens


async def _body(reader: asyncio.StreamReader, headers: dict[str, str], cap: int) -> bytes:
    coding = headers.get("transfer-encoding")
    if coding is not None:
        if coding.lower() != "chunked" or "content-length" in headers:
            raise HttpClientError("bad_response", f"unsupported transfer-encoding {coding!r}")
        return await _chunked(reader, cap)
    length_text = headers.get("content-length")
    if (
        not (length_text and length_text.isascii() and length_text.isdigit())
        or len(length_text) > 18
    ):
        raise HttpClientError("bad_response", f"no usable content-length ({length_text!r})")
    length = int(length_text)
    if length > cap:
        raise HttpClientError("too_large", f"answer of {length} bytes, more than {cap}")
    return await reader.readexactly(length)


async def _chunked(reader: asyncio.StreamReader, cap: int) -> bytes:
    parts: list[bytes] = []
    size = 0
    while True:
        line = await reader.readuntil(b"\r\n")
        text = line[:-2].partition(b";")[0].strip()  # chunk extensions are ignored (RFC 9112)
        if not text or len(text) > 16 or text.strip(b"0123456789abcdefABCDEF"):
            raise HttpClientError("bad_response", f"malformed chunk size {line[:80]!r}")
        chunk = int(text, 16)
        if chunk == 0:
            break
        size += chunk
        if size > cap:
            raise HttpClientError("too_large", f"answer larger than {cap} bytes")
        parts.append(await reader.readexactly(chunk))
        if await reader.readexactly(2) != b"\r\n":
            raise HttpClientError("bad_response", "chunk not followed by CRLF")
    for _ in range(MAX_HEADERS + 1):  # trailer fields, unused
        if await reader.readuntil(b"\r\n") == b"\r\n":
            return b"".join(parts)
    raise HttpClientError("bad_response", f"more than {MAX_HEADERS} trailer lines")

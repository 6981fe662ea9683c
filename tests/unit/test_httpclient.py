"""The verifier's HTTP/1.1 client against hostile answers: the parser on bytes fed to a
StreamReader (table-driven, and hypothesis on arbitrary bytes), the connection handling against
scripted servers on loopback (keep-alive, a peer closing its idle connection, hangs, trickles)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attestation.adapters.httpclient import MAX_LINE, HttpClient, HttpClientError, read_response

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"


async def _parse(raw: bytes, cap: int = 1024) -> tuple[int, bytes, bool]:
    reader = asyncio.StreamReader(limit=MAX_LINE)
    reader.feed_data(raw)
    reader.feed_eof()
    response, keep_alive = await read_response(reader, cap)
    return response.status, response.body, keep_alive


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (OK, (200, b"{}", True)),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", (200, b"", True)),
        (b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 3\r\n\r\nbad", (503, b"bad", True)),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}", (200, b"{}", False)),
        (OK.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"), (200, b"{}", False)),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"1;ext=1\r\n{\r\n1\r\n}\r\n0\r\nX-Trailer: 1\r\n\r\n",
            (200, b"{}", True),
        ),
        (b"HTTP/1.1 200\r\nContent-Length: 2\r\n\r\n{}", (200, b"{}", True)),  # no reason
    ],
)
def test_well_framed_answers(raw: bytes, expected: tuple[int, bytes, bool]) -> None:
    assert asyncio.run(_parse(raw)) == expected


CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        (b"not http at all\r\n\r\n", "bad_response"),
        (b"HTTP/2 200 OK\r\n\r\n", "bad_response"),
        (b"HTTP/1.1 2000 OK\r\n\r\n", "bad_response"),
        (b"HTTP/1.1 100 Continue\r\n\r\n" + OK, "bad_response"),
        (b"HTTP/1.1 200 OK\r\n\r\n{}", "bad_response"),  # no framing
        (b"HTTP/1.1 200 OK\r\nContent-Length: -2\r\n\r\n{}", "bad_response"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: \xb2\r\n\r\n{}", "bad_response"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n{}", "bad_response"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "bad_response"),
        (CHUNKED[:-2] + b"Content-Length: 2\r\n\r\n0\r\n\r\n", "bad_response"),
        (b"HTTP/1.1 200 OK\r\n Folded: header\r\nContent-Length: 0\r\n\r\n", "bad_response"),
        (b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n", "bad_response"),
        (b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 101 + b"\r\n", "bad_response"),
        (b"HTTP/1.1 200 OK\r\nX: " + b"y" * MAX_LINE + b"\r\n\r\n", "bad_response"),
        (CHUNKED + b"zz\r\n{}\r\n0\r\n\r\n", "bad_response"),
        (CHUNKED + b"2\r\n{}XX0\r\n\r\n", "bad_response"),
        (CHUNKED + b"2\r\n{}\r\n0\r\n" + b"T: 1\r\n" * 101, "bad_response"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1025\r\n\r\n", "too_large"),
        (CHUNKED + b"400\r\n" + b"0" * 1024 + b"\r\n1\r\n0\r\n0\r\n\r\n", "too_large"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}", "unreachable"),  # cut short
        (b"HTTP/1.1 200 OK\r\nContent", "unreachable"),
        (b"", "unreachable"),  # closed before answering
    ],
)
def test_hostile_answers_fail_with_their_kind(raw: bytes, kind: str) -> None:
    with pytest.raises(HttpClientError) as caught:
        asyncio.run(_parse(raw))
    assert caught.value.kind == kind


PIECES = [OK, CHUNKED, b"HTTP/1.1 200 OK\r\n", b"Content-Length: 3\r\n", b"\r\n", b"0\r\n",
          b"5;x\r\n", b"Transfer-Encoding: chunked\r\n", b"{}", b"\x00\xff", b":"]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=300),
        st.lists(
            st.sampled_from(PIECES),
            max_size=12,
        ).map(b"".join),
    )
)
def test_any_bytes_give_an_answer_or_a_client_error(raw: bytes) -> None:
    kind = "ok"
    try:
        status, body, _ = asyncio.run(_parse(raw, cap=64))
    except HttpClientError as e:
        kind = e.kind
    else:
        assert 200 <= status <= 999
        assert len(body) <= 64
    assert kind in ("ok", "unreachable", "bad_response", "too_large")


# -- connections, against scripted servers on loopback --------------------------------------------

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


@dataclass
class Server:
    url: str
    connections: int = 0
    heads: list[bytes] = field(default_factory=list)


@contextlib.asynccontextmanager
async def scripted(script: Script) -> AsyncIterator[Server]:
    """A server that reads each request head (and body) and lets ``script`` answer it."""
    server = Server("")
    writers: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        server.connections += 1
        writers.append(writer)
        n = 0
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (int(line.split(b":")[1]) for line in head.split(b"\r\n")
                     if line.lower().startswith(b"content-length:")), 0,
                )  # fmt: skip
                server.heads.append(head + await reader.readexactly(length))
                n += 1
                await script(reader, writer, n)
                if writer.is_closing():
                    return

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    server.url = f"http://127.0.0.1:{port}/nodes/n1"
    try:
        yield server
    finally:
        srv.close()
        for w in writers:
            w.close()
        await srv.wait_closed()


def _client(deadline: float = 2.0) -> HttpClient:
    return HttpClient(ssl.create_default_context(), deadline=deadline, connect_timeout=1.0,
                      max_peers=4)  # fmt: skip


async def _answer_ok(_r: asyncio.StreamReader, w: asyncio.StreamWriter, _n: int) -> None:
    w.write(OK)


def test_requests_share_one_kept_alive_connection_and_carry_the_prefix() -> None:
    async def main() -> Server:
        async with scripted(_answer_ok) as server:
            client = _client()
            for _ in range(3):
                response = await client.request("POST", server.url, "/v1/evidence", b"{}", 64)
                assert (response.status, response.body) == (200, b"{}")
            await client.aclose()
            return server

    server = asyncio.run(main())
    assert server.connections == 1
    first = server.heads[0]
    assert first.startswith(b"POST /nodes/n1/v1/evidence HTTP/1.1\r\n")
    assert b"\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}" in first
    assert f"\r\nHost: {server.url.split('/')[2]}\r\n".encode() in first


def test_a_connection_the_peer_closes_is_replaced() -> None:
    async def close_after(_r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        if n == 1:
            w.write(OK)
            await w.drain()
        w.close()  # the idle timeout: the kept connection dies (after its first answer)

    async def main() -> Server:
        async with scripted(close_after) as server:
            client = _client()
            for _ in range(3):
                assert (await client.request("GET", server.url, "/x", None, 64)).status == 200
            await client.aclose()
            return server

    assert asyncio.run(main()).connections == 3


def test_connection_close_is_honoured() -> None:
    async def closing(_r: asyncio.StreamReader, w: asyncio.StreamWriter, _n: int) -> None:
        w.write(OK.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
        await w.drain()
        w.close()

    async def main() -> Server:
        async with scripted(closing) as server:
            client = _client()
            for _ in range(2):
                assert (await client.request("GET", server.url, "/x", None, 64)).status == 200
            await client.aclose()
            return server

    assert asyncio.run(main()).connections == 2


@pytest.mark.parametrize("mode", ["hang", "trickle"])
def test_every_request_ends_by_its_deadline(mode: str) -> None:
    release = asyncio.Event()

    async def slow(_r: asyncio.StreamReader, w: asyncio.StreamWriter, _n: int) -> None:
        if mode == "trickle":
            w.write(CHUNKED)
            while not release.is_set():
                w.write(b"1\r\n \r\n")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(release.wait(), 0.1)
        else:
            await release.wait()

    async def main() -> float:
        async with scripted(slow) as server:
            client = _client(deadline=0.5)
            started = time.monotonic()
            with pytest.raises(HttpClientError) as caught:
                await client.request("POST", server.url, "/v1/evidence", b"{}", 1 << 20)
            took = time.monotonic() - started
            release.set()
            assert caught.value.kind == "timeout"
            await client.aclose()
            return took

    assert asyncio.run(main()) < 1.5


def test_nobody_listening_is_unreachable() -> None:
    async def main() -> HttpClientError:
        async with scripted(_answer_ok) as server:
            url = server.url
        client = _client()
        with pytest.raises(HttpClientError) as caught:
            await client.request("GET", url, "/x", None, 64)
        return caught.value

    assert asyncio.run(main()).kind == "unreachable"

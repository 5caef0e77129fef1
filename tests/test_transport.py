"""The aiohttp transport under httpx, over real sockets: answers come back whole, connections
are pooled, and every way an exchange can fail becomes the httpx error that says whether the
request may have reached the server ("never sent" only when it provably was not).

Each test scripts a raw TCP server byte by byte, so the failure is exactly the one named.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from batchrunner.client import NEVER_SENT, classify_transport
from batchrunner.errors import AmbiguousSubmitError, TransientError, UnreachableError
from batchrunner.transport import AiohttpTransport
from tests.sim_helpers import make_tls

pytestmark = pytest.mark.anyio

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
Reader, Writer = asyncio.StreamReader, asyncio.StreamWriter


def answer(body: bytes = b'{"ok": true}', *extra: str, status: str = "200 OK") -> bytes:
    head = [f"HTTP/1.1 {status}", f"content-length: {len(body)}", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class Server:
    """A TCP server on 127.0.0.1 that runs ``handler`` for each connection; it keeps the
    requests' head bytes and counts connections."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests: list[bytes] = []
        self.serving: set[asyncio.Task[None]] = set()
        self.url = ""

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.serving.add(asyncio.current_task())  # type: ignore[arg-type]
        try:
            with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
                await self.handler(reader, writer)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def stop(self) -> None:
        for task in self.serving:
            task.cancel()
        await asyncio.gather(*self.serving, return_exceptions=True)

    async def read_request(self, reader: asyncio.StreamReader) -> bytes:
        head = await reader.readuntil(b"\r\n\r\n")
        self.requests.append(head)
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                await reader.readexactly(int(line.split(b":")[1]))
        return head


@contextlib.asynccontextmanager
async def serving(
    script: Callable[[Server, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[Server]:
    server = Server(lambda reader, writer: script(server, reader, writer))
    listener = await asyncio.start_server(server._serve, "127.0.0.1", 0, ssl=ssl_context)
    port = listener.sockets[0].getsockname()[1]
    server.url = f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}"
    try:
        yield server
    finally:
        listener.close()
        await server.stop()


def client(max_connections: int = 4, **timeout: float) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=max_connections)
    return httpx.AsyncClient(
        transport=AiohttpTransport(limits), timeout=httpx.Timeout(5.0, **timeout)
    )


async def keep_answering(server: Server, reader: Reader, writer: Writer) -> None:
    while True:
        await server.read_request(reader)
        writer.write(answer(b'{"ok": true}', "set-cookie: session=abc", "x-fal-billable-units: 2"))
        await writer.drain()


async def test_answers_come_back_whole_on_a_few_kept_alive_connections() -> None:
    async with serving(keep_answering) as server, client(max_connections=3) as http:
        first = await http.post(f"{server.url}/fal-ai/veo3", content=b'{"prompt": "a"}')
        answers = await asyncio.gather(*(http.get(f"{server.url}/r/{i}") for i in range(30)))
    assert first.json() == {"ok": True}
    assert first.headers["x-fal-billable-units"] == "2"
    assert all(a.status_code == 200 and a.json() == {"ok": True} for a in answers)
    assert 1 <= server.connections <= 3
    assert server.requests[0].startswith(b"POST /fal-ai/veo3 HTTP/1.1\r\n")
    assert b"content-length: 15" in server.requests[0].lower()
    # the server's cookie is never sent back: nothing is added to a request
    assert not any(b"cookie" in request.lower() for request in server.requests)


async def test_a_redirect_is_answered_not_followed() -> None:
    async with serving(keep_answering) as elsewhere:

        async def redirect(server: Server, reader: Reader, writer: Writer) -> None:
            await server.read_request(reader)
            writer.write(answer(b"", f"location: {elsewhere.url}/steal", status="307 Temporary"))
            await writer.drain()

        transport = AiohttpTransport()
        async with serving(redirect) as server:
            request = httpx.Request("GET", f"{server.url}/requests/1")
            response = await transport.handle_async_request(request)
            await response.aread()
            await transport.aclose()
    assert response.status_code == 307
    assert elsewhere.requests == []


async def test_a_refused_connection_was_never_sent() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    async with client() as http:
        with pytest.raises(httpx.ConnectError) as caught:
            await http.post(f"http://127.0.0.1:{port}/fal-ai/veo3", content=b"{}")
    assert isinstance(caught.value, NEVER_SENT)
    assert isinstance(classify_transport(caught.value, idempotent=False), TransientError)


async def close_after_reading(server: Server, reader: Reader, writer: Writer) -> None:
    await server.read_request(reader)


async def reset_after_reading(server: Server, reader: Reader, writer: Writer) -> None:
    await server.read_request(reader)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@pytest.mark.parametrize("script", [close_after_reading, reset_after_reading])
async def test_a_connection_lost_after_the_request_is_a_lost_answer(
    script: Callable[[Server, Reader, Writer], Awaitable[None]],
) -> None:
    async with serving(script) as server, client() as http:
        with pytest.raises(httpx.TransportError) as caught:
            await http.post(f"{server.url}/fal-ai/veo3", content=b"{}")
    assert len(server.requests) == 1  # it did arrive
    assert not isinstance(caught.value, NEVER_SENT)
    assert isinstance(classify_transport(caught.value, idempotent=False), AmbiguousSubmitError)


async def never_answer(server: Server, reader: Reader, writer: Writer) -> None:
    await server.read_request(reader)
    await asyncio.sleep(30)


async def test_silence_past_the_read_timeout_is_a_read_timeout() -> None:
    async with serving(never_answer) as server, client(read=0.3) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.get(f"{server.url}/requests/1/status")


async def head_then_silence(server: Server, reader: Reader, writer: Writer) -> None:
    await server.read_request(reader)
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\ndata: {}\n\n")
    await writer.drain()
    await asyncio.sleep(30)


async def test_a_stream_that_goes_silent_times_out_between_reads() -> None:
    async with (
        serving(head_then_silence) as server,
        client(read=0.3) as http,
        http.stream("GET", f"{server.url}/requests/1/status/stream") as response,
    ):
        lines = response.aiter_lines()
        assert await anext(lines) == "data: {}"
        with pytest.raises(httpx.ReadTimeout):
            async for _ in lines:
                pass


async def half_a_body(server: Server, reader: Reader, writer: Writer) -> None:
    await server.read_request(reader)
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n" + b"x" * 10)
    await writer.drain()


async def test_a_body_cut_short_is_a_protocol_error() -> None:
    async with serving(half_a_body) as server, client() as http:
        with pytest.raises(httpx.RemoteProtocolError) as caught:
            await http.get(f"{server.url}/video.mp4")
    assert not isinstance(caught.value, NEVER_SENT)


async def not_http(server: Server, reader: Reader, writer: Writer) -> None:
    await server.read_request(reader)
    writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
    await writer.drain()


async def test_an_answer_that_is_not_http_is_a_protocol_error() -> None:
    async with serving(not_http) as server, client() as http:
        with pytest.raises(httpx.RemoteProtocolError):
            await http.post(f"{server.url}/fal-ai/veo3", content=b"{}")


async def test_waiting_past_the_pool_timeout_was_never_sent() -> None:
    async with (
        serving(head_then_silence) as server,
        client(1, pool=0.3) as http,
        http.stream("GET", f"{server.url}/requests/1/status/stream"),
    ):
        with pytest.raises(httpx.ConnectTimeout) as caught:
            await http.post(f"{server.url}/fal-ai/veo3", content=b"{}")
    assert isinstance(caught.value, NEVER_SENT)
    assert len(server.requests) == 1  # the submit never reached the server


async def test_a_body_left_unread_does_not_poison_the_next_request() -> None:
    async def long_then_short(server: Server, reader: Reader, writer: Writer) -> None:
        if server.connections == 1:  # the first answer is long, and left unread
            await server.read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 1000000\r\n\r\n" + b"x" * 1000)
            await writer.drain()
        await keep_answering(server, reader, writer)

    async with serving(long_then_short) as server, client(1) as http:
        async with http.stream("GET", f"{server.url}/video.mp4") as response:
            assert response.status_code == 200  # and not read
        again = await http.get(f"{server.url}/requests/1")
    assert again.json() == {"ok": True}
    assert server.connections == 2


async def test_an_untrusted_certificate_means_unreachable_and_ssl_cert_file_is_trusted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tls = make_tls(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls.cert_pem, tls.key_pem)
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    async with serving(keep_answering, context) as server, client() as http:
        with pytest.raises(httpx.ConnectError) as caught:
            await http.get(f"{server.url}/requests/1")
        assert isinstance(classify_transport(caught.value, idempotent=True), UnreachableError)
        assert server.requests == []
    monkeypatch.setenv("SSL_CERT_FILE", str(tls.ca_pem))  # a company's own CA, say
    async with serving(keep_answering, context) as server, client() as http:
        assert (await http.get(f"{server.url}/requests/1")).json() == {"ok": True}


async def test_plain_http_loads_no_certificates(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SSL context (certifi's roots, a fair part of a start) is made for https only."""
    made: list[ssl.SSLContext] = []

    def context() -> ssl.SSLContext:
        made.append(ssl.create_default_context())
        return made[-1]

    monkeypatch.setattr(httpx, "create_ssl_context", context)
    async with serving(keep_answering) as server, client() as http:
        assert (await http.get(f"{server.url}/requests/1")).json() == {"ok": True}
    assert made == []


async def test_proxies_come_from_the_environment_and_no_proxy_is_honoured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with serving(keep_answering) as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.setenv("NO_PROXY", "direct.test")
        async with client() as http:
            await http.get("http://media.test/clip.mp4")
            with pytest.raises(httpx.ConnectError):  # not through the proxy: no such host
                await http.get("http://direct.test/clip.mp4")
    assert proxy.requests[0].startswith(b"GET http://media.test/clip.mp4 HTTP/1.1\r\n")
    assert len(proxy.requests) == 1


async def test_only_http_and_https_are_sent() -> None:
    async with client() as http:
        with pytest.raises(httpx.UnsupportedProtocol):
            await http.get("ftp://127.0.0.1/clip.mp4")

"""The aiohttp transport under httpx, over real sockets: answers come back whole, connections
are pooled, and every way an exchange can fail becomes the httpx error that says whether the
request may have reached the server ("never sent" only when it provably was not).

Each test scripts a raw TCP server byte by byte, so the failure is exactly the one named.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from yarl import URL

from batchrunner import wire
from batchrunner.answers import NEVER_SENT, classify_transport
from batchrunner.client import QueueClient
from batchrunner.downloader import MediaClient, download
from batchrunner.errors import (
    AmbiguousSubmitError,
    RunError,
    TransientError,
    UnreachableError,
)
from batchrunner.providers import ApiConfig
from batchrunner.retry import RetryPolicy
from batchrunner.simulator import SimulatorServer
from batchrunner.transport import AiohttpTransport, _wire_parts, _wire_url
from tests.helpers import TOKEN, counters
from tests.sim_helpers import ENDPOINT, VALID_BODY, make_tls

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


async def test_a_header_no_http_carries_is_refused_unsent_and_stops_the_run() -> None:
    """Every request would carry it: no job can go on, and none may be marked "maybe billed"."""
    async with serving(keep_answering) as server:
        api = ApiConfig(server.url, "bearer", TOKEN)
        async with QueueClient(api, extra_headers={"X-Note": "\u201cquoted\u201d"}) as queue:
            with pytest.raises(RunError) as stopped:
                await queue.submit(ENDPOINT, VALID_BODY)
    assert server.requests == [] and server.connections == 0
    assert "nothing was sent" in str(stopped.value)


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


def self_signed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, ssl.SSLContext]:
    """A server certificate from a CA of our own (no SSL_CERT_FILE trusts it yet): the CA's
    files and the server's SSL context."""
    tls = make_tls(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls.cert_pem, tls.key_pem)
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    return tls, context


async def test_an_untrusted_certificate_means_unreachable_and_ssl_cert_file_is_trusted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tls, context = self_signed(tmp_path, monkeypatch)
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


# --- the lean path (AiohttpTransport.send): what the queue client and the downloader use -------

TIMEOUT = httpx.Timeout(5.0, read=0.3)


async def through_httpx(transport: AiohttpTransport, url: str) -> bytes:
    """A POST as the client sent it before the lean path: an httpx request, its answer read."""
    request = httpx.Request("POST", url, content=b"{}", extensions={"timeout": TIMEOUT.as_dict()})
    response = await transport.handle_async_request(request)
    try:
        return await response.aread()
    finally:
        await response.aclose()


async def through_lean(transport: AiohttpTransport, url: str) -> bytes:
    answer = await transport.send("POST", url, {}, content=b"{}", timeout=TIMEOUT)
    return answer.content


def refused_url() -> str:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{closed.getsockname()[1]}"


@pytest.mark.parametrize(
    "script",
    [None, close_after_reading, reset_after_reading, never_answer, half_a_body, not_http],
    ids=["refused", "closed", "reset", "silent", "cut short", "not http"],
)
async def test_the_lean_path_fails_with_the_same_httpx_error_as_the_httpx_path(
    script: Callable[[Server, Reader, Writer], Awaitable[None]] | None,
) -> None:
    caught: list[httpx.TransportError] = []
    for path in (through_httpx, through_lean):
        transport = AiohttpTransport()
        async with contextlib.AsyncExitStack() as stack:
            url = (
                refused_url()
                if script is None
                else (await stack.enter_async_context(serving(script))).url
            )
            with pytest.raises(httpx.TransportError) as raised:
                await path(transport, f"{url}/fal-ai/veo3")
            caught.append(raised.value)
            await transport.aclose()
    on_httpx, on_lean = caught
    assert type(on_lean) is type(on_httpx)
    assert isinstance(on_lean, NEVER_SENT) == (script is None)  # only a refused connect
    assert on_lean.request.method == "POST"  # it names its request, as httpx errors do
    assert type(classify_transport(on_lean, idempotent=False)) is type(
        classify_transport(on_httpx, idempotent=False)
    )


async def test_waiting_past_the_pool_timeout_was_never_sent_on_the_lean_path() -> None:
    transport = AiohttpTransport(httpx.Limits(max_connections=1))
    timeout = httpx.Timeout(5.0, pool=0.3)
    async with serving(head_then_silence) as server:
        held = await transport.send("GET", f"{server.url}/s", {}, timeout=timeout, stream=True)
        with pytest.raises(httpx.ConnectTimeout) as caught:
            await transport.send("POST", f"{server.url}/fal-ai/veo3", {}, timeout=timeout)
        await held.aclose()
        await transport.aclose()
    assert isinstance(caught.value, NEVER_SENT)
    assert len(server.requests) == 1


async def test_a_lean_stream_that_goes_silent_times_out_between_reads() -> None:
    transport = AiohttpTransport()
    async with serving(head_then_silence) as server:
        answer = await transport.send(
            "GET", f"{server.url}/requests/1/status/stream", {}, timeout=TIMEOUT, stream=True
        )
        chunks = answer.aiter_bytes()
        assert await anext(chunks) == b"data: {}\n\n"
        with pytest.raises(httpx.ReadTimeout):
            await anext(chunks)
        await answer.aclose()
        await transport.aclose()
    assert answer.headers["Content-Type"] == "text/event-stream"  # case-insensitive


async def test_a_gzip_answer_is_decoded_on_both_paths() -> None:
    body = gzip.compress(b'{"ok": true}')

    async def gzipped(server: Server, reader: Reader, writer: Writer) -> None:
        while True:
            await server.read_request(reader)
            writer.write(answer(body, "content-encoding: gzip"))
            await writer.drain()

    transport = AiohttpTransport()
    async with serving(gzipped) as server:
        lean = await through_lean(transport, f"{server.url}/requests/1")
        plain = await through_httpx(transport, f"{server.url}/requests/1")
        await transport.aclose()
    assert lean == plain == b'{"ok": true}'
    assert b"gzip" in server.requests[0].lower()  # asked for (aiohttp's Accept-Encoding)


@pytest.mark.parametrize(
    "path",
    ["/fal-ai/veo3/requests/1?logs=1", "/a b/ü/./c/../d?q=x y", "/%7e/x%2Fy/", "?q=1", ""],
)
async def test_the_lean_path_sends_a_url_as_httpx_would(path: str) -> None:
    transport = AiohttpTransport()
    async with serving(keep_answering) as server:
        await through_httpx(transport, server.url + path)
        await through_lean(transport, server.url + path)
        await transport.aclose()
    on_httpx, on_lean = (request.split(b"\r\n")[0] for request in server.requests)
    assert on_lean == on_httpx


async def test_the_lean_path_answers_a_redirect_and_refuses_other_schemes() -> None:
    async def redirect(server: Server, reader: Reader, writer: Writer) -> None:
        await server.read_request(reader)
        writer.write(answer(b"", "location: /elsewhere", status="302 Found"))
        await writer.drain()

    transport = AiohttpTransport()
    async with serving(redirect) as server:
        got = await transport.send("GET", f"{server.url}/a/b", {}, timeout=TIMEOUT)
        with pytest.raises(httpx.UnsupportedProtocol):
            await transport.send("GET", "ftp://127.0.0.1/clip.mp4", {}, timeout=TIMEOUT)
        await transport.aclose()
    assert got.status_code == 302
    assert str(got.url.join(got.headers["location"])) == f"{server.url}/elsewhere"
    assert len(server.requests) == 1


async def test_the_lean_path_takes_proxies_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with serving(keep_answering) as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.setenv("NO_PROXY", "direct.test")
        transport = AiohttpTransport()
        got = await transport.send("GET", "http://media.test/clip.mp4", {}, timeout=TIMEOUT)
        with pytest.raises(httpx.ConnectError):  # not through the proxy: no such host
            await transport.send("GET", "http://direct.test/clip.mp4", {}, timeout=TIMEOUT)
        await transport.aclose()
    assert got.status_code == 200
    assert proxy.requests[0].startswith(b"GET http://media.test/clip.mp4 HTTP/1.1\r\n")
    assert len(proxy.requests) == 1


async def test_through_a_proxy_the_lean_path_answers_a_redirect_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Proxied requests go through aiohttp, which must not follow a redirect either."""

    async def redirect(server: Server, reader: Reader, writer: Writer) -> None:
        while True:
            await server.read_request(reader)
            writer.write(answer(b"", "location: http://elsewhere.test/steal", status="302 Found"))
            await writer.drain()

    async with serving(redirect) as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        transport = AiohttpTransport()
        got = await transport.send("GET", "http://media.test/clip.mp4", {}, timeout=TIMEOUT)
        await transport.aclose()
    assert got.status_code == 302
    assert len(proxy.requests) == 1


async def test_a_proxy_out_of_reach_is_said_without_python_s_memory_addresses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """aiohttp's text for a proxy it cannot reach carries ``ssl:<ssl.SSLContext object at
    0x7f...>``, which the stop line showed: the address and the OS's word stay, not that."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{port}")
    transport = AiohttpTransport()
    with pytest.raises(httpx.ProxyError) as caught:
        await transport.send("GET", "https://media.test/clip.mp4", {}, timeout=TIMEOUT)
    await transport.aclose()
    said = str(classify_transport(caught.value, idempotent=True))
    assert f"127.0.0.1:{port}" in said and " object at 0x" not in said, said


def not_through_httpx(monkeypatch: pytest.MonkeyPatch) -> None:
    async def refuse(self: AiohttpTransport, request: httpx.Request) -> httpx.Response:
        raise AssertionError(f"an httpx request was built for {request.url}")

    monkeypatch.setattr(AiohttpTransport, "handle_async_request", refuse)


async def test_the_queue_client_and_the_downloader_take_the_lean_path(
    sim: SimulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    not_through_httpx(monkeypatch)
    api = ApiConfig(sim.url, "bearer", TOKEN, provider="simulator")
    async with QueueClient(api) as client, MediaClient() as media:
        job = await client.submit(ENDPOINT, VALID_BODY)
        async with client.status_stream(ENDPOINT, job.request_id, url=job.status_url) as events:
            statuses = [event async for event in events if event is not None]
        polled = await client.status(ENDPOINT, job.request_id, url=job.status_url)
        result = await client.result(ENDPOINT, job.request_id, url=job.response_url)
        cancelled = await client.cancel(ENDPOINT, job.request_id, url=job.cancel_url)
        video = result.output["video"]
        got = await download(media, video["url"], tmp_path / "clip.mp4")
    assert statuses[-1].done and polled.done
    assert result.billable_units is not None
    assert cancelled == "ALREADY_COMPLETED"
    assert got.bytes == video["file_size"] == (tmp_path / "clip.mp4").stat().st_size
    (seen,) = counters(sim)["by_host"].values()
    assert seen == {"requests": 6, "authorized": 5}  # the media GET carried no token


async def test_on_the_lean_path_the_token_reaches_the_configured_origin_and_no_other(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    not_through_httpx(monkeypatch)
    # a stored URL that somehow escaped re-basing onto the configured origin
    monkeypatch.setattr(QueueClient, "rebase", lambda self, url: url)
    async with serving(keep_answering) as api_server, serving(keep_answering) as other:
        api = ApiConfig(api_server.url, "bearer", TOKEN)
        async with QueueClient(api, extra_headers={"X-Trace": "1"}) as client:
            await client.result(ENDPOINT, "r1")
            await client.result(ENDPOINT, "r1", url=f"{other.url}/fal-ai/veo3/requests/r1")
    (to_api,), (to_other,) = api_server.requests, other.requests
    assert f"authorization: bearer {TOKEN}".encode() in to_api.lower()
    assert b"authorization" not in to_other.lower()
    assert b"x-trace: 1" in to_other.lower()


async def test_the_queue_client_classifies_a_lost_answer_on_the_lean_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    not_through_httpx(monkeypatch)
    async with serving(close_after_reading) as server:
        api = ApiConfig(server.url, "bearer", TOKEN)
        async with QueueClient(api, retry=RetryPolicy(attempts=3, base_delay=0)) as client:
            with pytest.raises(AmbiguousSubmitError):
                await client.submit(ENDPOINT, VALID_BODY)
            with pytest.raises(TransientError):
                await client.result(ENDPOINT, "r1")
    methods = [request.split(b" ")[0] for request in server.requests]
    assert methods.count(b"POST") == 1  # the submit is never resent
    assert methods.count(b"GET") >= 3  # the result is (aiohttp itself may retry a GET once)


@given(
    origin=st.sampled_from(
        [
            "http://127.0.0.1:8123",
            "https://queue.fal.run",
            "https://V3.fal.media",
            "http://a:80",
            "http://[::1]:8080",
        ]
    ),
    rest=st.text(alphabet="aZ09-._~!$&'()*+,;=:@/?%#[] é\\\t", max_size=30),
)
def test_a_url_sent_as_written_is_what_httpx_would_send(origin: str, rest: str) -> None:
    """The lean path skips httpx's URL parser when nothing in a URL could change: the URL
    aiohttp is given (proxied requests), and the request line and ``Host`` the wire writes."""
    url = origin + "/" + rest
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        with pytest.raises(httpx.InvalidURL):
            _wire_url(url)
        with pytest.raises(httpx.InvalidURL):
            _wire_parts("GET", url)
        return
    assert str(_wire_url(url)) == str(URL(str(parsed), encoded=True))
    scheme, host, port, netloc, target = _wire_parts("GET", url)
    assert (scheme, host, netloc, target) == (
        parsed.scheme,
        parsed.host,
        parsed.netloc.decode(),
        parsed.raw_path.decode(),
    )
    assert port == (parsed.port or {"http": 80, "https": 443}[scheme])


# --- batchrunner.wire: the lean path's own connections -----------------------------------------


async def test_the_lean_path_keeps_connections_alive_within_its_limit() -> None:
    transport = AiohttpTransport(httpx.Limits(max_connections=3))
    async with serving(keep_answering) as server:
        first = await through_lean(transport, f"{server.url}/fal-ai/veo3")
        answers = await asyncio.gather(
            *(transport.send("GET", f"{server.url}/r/{i}", {}, timeout=TIMEOUT) for i in range(30))
        )
        await transport.aclose()
    assert first == b'{"ok": true}'
    assert all(a.status_code == 200 and a.content == b'{"ok": true}' for a in answers)
    assert answers[0].headers["X-Fal-Billable-Units"] == "2"
    assert 1 <= server.connections <= 3
    assert server.requests[0].startswith(b"POST /fal-ai/veo3 HTTP/1.1\r\n")
    assert b"\r\ncontent-length: 2\r\n" in server.requests[0].lower()
    assert b"\r\nhost: 127.0.0.1:" in server.requests[0].lower()


async def test_the_lean_path_reads_chunked_and_until_close_bodies_and_heeds_connection_close() -> (
    None
):
    async def three_kinds(server: Server, reader: Reader, writer: Writer) -> None:
        await server.read_request(reader)
        if server.connections == 1:  # chunked, then the server says it closes
            writer.write(
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
                b"4\r\nabcd\r\n3\r\nefg\r\n0\r\n\r\n"
            )
        else:  # no length at all: the body ends with the connection
            writer.write(b"HTTP/1.1 200 OK\r\n\r\nuntil the end")
        await writer.drain()

    transport = AiohttpTransport(httpx.Limits(max_connections=1))
    async with serving(three_kinds) as server:
        chunked = await transport.send("GET", f"{server.url}/a", {}, timeout=TIMEOUT)
        until_close = await transport.send("GET", f"{server.url}/b", {}, timeout=TIMEOUT)
        await transport.aclose()
    assert (chunked.content, until_close.content) == (b"abcdefg", b"until the end")
    assert server.connections == 2  # 'connection: close' was heeded, not reused


async def test_a_header_with_a_line_break_is_refused_before_anything_is_sent() -> None:
    transport = AiohttpTransport()
    async with serving(keep_answering) as server:
        with pytest.raises(httpx.LocalProtocolError):
            await transport.send(
                "GET", f"{server.url}/a", {"X-Trace": "1\r\nX-Evil: 2"}, timeout=TIMEOUT
            )
        await transport.aclose()
    assert server.requests == []


class _Recorder:
    """What a :class:`batchrunner.wire._Connection` asks of its socket."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def pause_reading(self) -> None:
        self.calls.append("pause")

    def resume_reading(self) -> None:
        self.calls.append("resume")

    def is_closing(self) -> bool:
        return False


def test_a_body_not_read_fast_enough_pauses_the_socket_until_it_is() -> None:
    """A large download read slowly is held back by TCP, not buffered whole in memory."""
    loop = asyncio.new_event_loop()
    try:
        conn = wire._Connection(loop, ("http", "a", 80))
        socket_ = _Recorder()
        conn.connection_made(socket_)  # type: ignore[arg-type]
        conn.data_received(b"HTTP/1.1 200 OK\r\ncontent-length: 3000000\r\n\r\n")
        for _ in range(10):
            conn.data_received(b"x" * 100_000)
        assert socket_.calls == []  # 1 MB waiting is fine
        conn.data_received(b"x" * 100_000)
        conn.data_received(b"x" * 100_000)
        assert socket_.calls == ["pause"]  # once, however much more came in flight
        assert len(conn.take()) == 1_200_000
        assert socket_.calls == ["pause", "resume"]
    finally:
        loop.close()


async def test_on_the_lean_path_an_untrusted_certificate_is_unreachable_and_ssl_cert_file_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tls, context = self_signed(tmp_path, monkeypatch)
    async with serving(keep_answering, context) as server:
        transport = AiohttpTransport()
        with pytest.raises(httpx.ConnectError) as caught:
            await transport.send("POST", f"{server.url}/fal-ai/veo3", {}, timeout=TIMEOUT)
        await transport.aclose()
        assert isinstance(caught.value, NEVER_SENT)
        assert isinstance(classify_transport(caught.value, idempotent=False), UnreachableError)
        assert server.requests == []
        monkeypatch.setenv("SSL_CERT_FILE", str(tls.ca_pem))  # a company's own CA, say
        transport = AiohttpTransport()
        got = await transport.send("GET", f"{server.url}/requests/1", {}, timeout=TIMEOUT)
        await transport.aclose()
    assert got.content == b'{"ok": true}'
    assert server.requests[0].startswith(b"GET /requests/1 HTTP/1.1\r\n")


async def test_headers_that_frame_the_exchange_are_the_wire_s_own() -> None:
    transport = AiohttpTransport()
    asked = {"Host": "evil.test", "Content-Length": "999", "Accept-Encoding": "identity"}
    async with serving(keep_answering) as server:
        got = await transport.send("POST", f"{server.url}/a", asked, content=b"{}", timeout=TIMEOUT)
        await transport.aclose()
    head = server.requests[0].decode().lower()
    assert got.status_code == 200
    assert "host: evil.test" not in head and "content-length: 999" not in head
    assert head.count("accept-encoding") == 1 and "accept-encoding: identity" in head

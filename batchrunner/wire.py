"""HTTP/1.1 straight on asyncio's protocols: the connections of the lean path.

aiohttp's ``ClientSession.request`` costs about 165 µs of CPU for one small exchange on this
machine (a ``ClientRequest`` and a ``ClientResponse``, yarl URLs, tracing hooks, a cookie jar,
timers), and batchrunner's wrapper around it about 100 more; the same exchange written to an
asyncio protocol and read by httptools' parser (llhttp, the parser in Node.js and, vendored, in
aiohttp itself) costs about 30 (medians, 16 at a time to a local server, ``uvloop``). A run
sends four requests a job, so at ``--concurrency 200`` that was a quarter of its Python time.
Weighed: h11 (the parser under httpcore, in pure Python where llhttp is C) and aiohttp's own
protocol and parser (private API).

What :class:`Pool` does, and no more: HTTP/1.1 over TCP or TLS, kept-alive connections per
origin (the most recently used first, dropped after ``keepalive_expiry`` idle), at most
``limit`` connections busy at once, bodies by length, chunked or until close, gzip and deflate
decoded, and a slow reader pausing the socket. No redirects, cookies, proxies (the transport
sends proxied requests through aiohttp), pipelining or ``1xx`` interim answers (batchrunner
sends no ``Expect``).

Errors are httpx's, with the rule the queue client relies on: only what happens before a byte
of the request is written (waiting for a connection, connecting, TLS) is a connect error
(:class:`httpx.ConnectError`, :class:`httpx.ConnectTimeout`), "never sent"; anything after is a
read or protocol error (:class:`httpx.ReadTimeout` between two reads, :class:`httpx.ReadError`
for a reset, :class:`httpx.RemoteProtocolError` for a connection closed before the answer was
whole or an answer that is not HTTP).
"""

from __future__ import annotations

import asyncio
import ssl
import zlib
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import httptools
import httpx

_PAUSE_AT = 1 << 20  # bytes of a body waiting to be read before the socket stops reading


class Headers(dict[str, str]):
    """An answer's headers by lower-case name, the first value of each; read by any case."""

    def __getitem__(self, name: str) -> str:
        return dict.__getitem__(self, name.lower())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and dict.__contains__(self, name.lower())

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        return dict.get(self, name.lower(), default)


class _Lost(Exception):
    """Why a connection stopped giving an answer; made into an httpx error by the exchange."""

    def __init__(self, error: type[httpx.TransportError], message: str) -> None:
        super().__init__(message)
        self.error = error


class _Connection(asyncio.Protocol):
    """One connection and the answer being read on it: the parser's callbacks fill it, the
    exchange waits on :attr:`_waiter` for more."""

    def __init__(self, loop: asyncio.AbstractEventLoop, origin: tuple[str, str, int]) -> None:
        self.loop = loop
        self.origin = origin
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.lost: _Lost | None = None
        self.idle_since = 0.0
        self._waiter: asyncio.Future[None] | None = None
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers = Headers()
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.paused = False
        self.complete = False
        self.keep_alive = False
        self.until_close = False

    # --- asyncio's side --------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self._stop(_Lost(httpx.RemoteProtocolError, f"the answer is not HTTP: {exc}"))

    def eof_received(self) -> bool:
        if self.status and not self.complete and self.until_close:
            self.complete = True  # a body without a length ends with the connection
        self._stop(_Lost(httpx.RemoteProtocolError, "the server closed the connection"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is None:
            self._stop(_Lost(httpx.RemoteProtocolError, "the server closed the connection"))
        else:
            self._stop(_Lost(httpx.ReadError, str(exc) or type(exc).__name__))

    def pause_writing(self) -> None:  # a request is written whole, once: nothing to pause
        pass

    def resume_writing(self) -> None:
        pass

    # --- the parser's side -----------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        headers = self.headers
        self.until_close = (
            "content-length" not in headers and "transfer-encoding" not in headers
        ) and self.status not in (204, 304)
        self._wake()

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > _PAUSE_AT and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        self.complete = True
        self.keep_alive = self.parser.should_keep_alive()  # only now: it reads False after
        self._wake()

    # --- the exchange's side ---------------------------------------------------------------
    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _stop(self, lost: _Lost) -> None:
        if self.lost is None:
            self.lost = lost
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            if self.complete:  # the answer is whole: only the connection is gone
                waiter.set_result(None)
            else:
                waiter.set_exception(lost)

    @property
    def reusable(self) -> bool:
        return self.lost is None and self.transport is not None and not self.transport.is_closing()

    async def wait(self, timeout: float | None) -> None:
        """Until the parser has more (or the connection is lost, or ``timeout`` passes)."""
        if self.lost is not None:
            raise self.lost
        waiter = self._waiter = self.loop.create_future()
        timer = None if timeout is None else self.loop.call_later(timeout, _expire, waiter)
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()

    def take(self) -> bytes:
        """The body read so far, handed over (the socket reads again if it was paused)."""
        data = self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)
        self.chunks = []
        self.buffered = 0
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        return data

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        self.lost = self.lost or _Lost(httpx.ReadError, "closed")


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(_Lost(httpx.ReadTimeout, "no data within the read timeout"))


class Response:
    """An answer: ``status_code`` and ``headers`` at once; the body as ``content`` once read
    (:meth:`Pool.exchange` reads it unless streaming), or chunk by chunk from
    :meth:`chunks`. :meth:`release` gives the connection back (or closes it when the body was
    not read to its end)."""

    __slots__ = (
        "_conn", "_decoder", "_pool", "_read", "_request", "content", "headers", "status_code"
    )  # fmt: skip

    def __init__(
        self,
        pool: Pool,
        conn: _Connection,
        request: Callable[[], httpx.Request],
        read: float | None,
    ) -> None:
        self._pool = pool
        self._conn: _Connection | None = conn
        self._request = request
        self._read = read
        self.status_code = conn.status
        self.headers = conn.headers
        self.content = b""
        self._decoder = _decoder(conn.headers.get("content-encoding"), request)

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives (decoded), until its end: then the connection is given
        back."""
        conn = self._conn
        if conn is None:
            return
        try:
            while True:
                if conn.chunks:
                    data = conn.take()
                    yield self._decoder(data) if self._decoder else data
                elif conn.complete:
                    break
                else:
                    await conn.wait(self._read)
        except _Lost as lost:
            self._conn = None
            self._pool._release(conn, reuse=False)
            raise lost.error(str(lost), request=self._request()) from None
        except zlib.error as exc:
            raise httpx.DecodingError(str(exc), request=self._request()) from None
        self.release()

    async def read(self) -> bytes:
        """The whole body, kept as ``content``; the connection is given back."""
        conn = self._conn
        if conn is not None and conn.complete and not self._decoder:  # the usual case
            self.content = conn.take()
            self.release()
        else:
            self.content = b"".join([chunk async for chunk in self.chunks()])
        return self.content

    def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            self._pool._release(conn, reuse=conn.complete and not conn.chunks)


def _decoder(
    encoding: str | None, request: Callable[[], httpx.Request]
) -> Callable[[bytes], bytes] | None:
    if not encoding or encoding == "identity":
        return None
    if encoding in ("gzip", "x-gzip", "deflate"):
        return zlib.decompressobj(zlib.MAX_WBITS | 32).decompress  # gzip or zlib, by header
    raise httpx.DecodingError(
        f"an answer in {encoding}, which was not asked for", request=request()
    )


class Pool:
    """Kept-alive connections per origin (scheme, host, port), at most ``limit`` busy at once
    (``None``: no limit); ``tls`` gives the SSL context for https when first needed."""

    def __init__(
        self, limit: int | None, keepalive_expiry: float, tls: Callable[[], ssl.SSLContext]
    ) -> None:
        self._limit = limit
        self._slots: asyncio.Semaphore | None = None
        self._expiry = keepalive_expiry
        self._tls = tls
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._open: set[_Connection] = set()

    async def exchange(
        self,
        method: str,
        origin: tuple[str, str, int],
        netloc: str,
        target: str,
        headers: Mapping[str, str],
        *,
        timeout: httpx.Timeout,
        content: bytes | None,
        stream: bool,
        request: Callable[[], httpx.Request],
    ) -> Response:
        """``method target`` to ``origin``; ``request`` builds the httpx request an error
        names (only when there is one)."""
        head = _head(method, netloc, target, headers, content)
        conn = await self._acquire(origin, timeout, request)
        try:
            conn._reset()
            assert conn.transport is not None
            conn.transport.write(head + content if content else head)
            while not conn.status:
                await conn.wait(timeout.read)
            response = Response(self, conn, request, timeout.read)
        except _Lost as lost:
            self._release(conn, reuse=False)
            raise lost.error(str(lost), request=request()) from None
        except BaseException:
            self._release(conn, reuse=False)
            raise
        if not stream:
            try:
                await response.read()
            except BaseException:
                response.release()
                raise
        return response

    async def _acquire(
        self,
        origin: tuple[str, str, int],
        timeout: httpx.Timeout,
        request: Callable[[], httpx.Request],
    ) -> _Connection:
        slots = self._slots
        if slots is None and self._limit:
            slots = self._slots = asyncio.Semaphore(self._limit)
        if slots is not None:
            if slots.locked():
                try:
                    await asyncio.wait_for(slots.acquire(), timeout.pool)
                except TimeoutError:
                    raise httpx.ConnectTimeout(
                        "no connection free within the pool timeout", request=request()
                    ) from None
            else:
                await slots.acquire()
        try:
            idle = self._idle.get(origin)
            if idle:
                now = asyncio.get_running_loop().time()
                while idle:
                    conn = idle.pop()
                    if conn.reusable and now - conn.idle_since < self._expiry:
                        return conn
                    self._drop(conn)
            return await self._connect(origin, timeout, request)
        except BaseException:
            if slots is not None:
                slots.release()
            raise

    async def _connect(
        self,
        origin: tuple[str, str, int],
        timeout: httpx.Timeout,
        request: Callable[[], httpx.Request],
    ) -> _Connection:
        scheme, host, port = origin
        loop = asyncio.get_running_loop()
        tls = self._tls() if scheme == "https" else None
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(
                    lambda: _Connection(loop, origin),
                    host,
                    port,
                    ssl=tls,
                    server_hostname=host if tls else None,
                ),
                timeout.connect,
            )
        except TimeoutError:
            raise httpx.ConnectTimeout(
                f"no connection to {host}:{port} within the connect timeout", request=request()
            ) from None
        except OSError as exc:  # refused, DNS, TLS (ssl.SSLError is an OSError)
            raise httpx.ConnectError(
                f"cannot connect to {host}:{port}: {exc}", request=request()
            ) from None
        self._open.add(conn)
        return conn

    def _release(self, conn: _Connection, *, reuse: bool) -> None:
        if self._slots is not None:
            self._slots.release()
        if reuse and conn.keep_alive and conn.reusable:
            conn.idle_since = conn.loop.time()
            self._idle.setdefault(conn.origin, []).append(conn)
        else:
            self._drop(conn)

    def _drop(self, conn: _Connection) -> None:
        conn.close()
        self._open.discard(conn)

    async def aclose(self) -> None:
        for conn in list(self._open):
            self._drop(conn)
        self._idle.clear()


_FRAMING = frozenset({"host", "content-length", "transfer-encoding", "connection"})


def _head(
    method: str, netloc: str, target: str, headers: Mapping[str, str], content: bytes | None
) -> bytes:
    """The request's head: ``headers`` as given, except those that frame the exchange (host,
    length, connection: ours), and a line break in a header is refused."""
    lines = [f"{method} {target} HTTP/1.1\r\nHost: {netloc}\r\n"]
    encoding = True
    for name, value in headers.items():
        if "\n" in value or "\r" in value or "\n" in name or "\r" in name:
            raise httpx.LocalProtocolError(f"a line break in the {name} header")
        lower = name.lower()
        if lower in _FRAMING:
            continue
        encoding = encoding and lower != "accept-encoding"
        lines.append(f"{name}: {value}\r\n")
    if encoding:
        lines.append("Accept-Encoding: gzip, deflate\r\n")
    if content:
        lines.append(f"Content-Length: {len(content)}\r\n")
    elif method in ("POST", "PUT", "PATCH"):
        lines.append("Content-Length: 0\r\n")
    lines.append("\r\n")
    try:
        return "".join(lines).encode("latin-1")
    except UnicodeEncodeError as exc:
        raise httpx.LocalProtocolError(f"a header that is not Latin-1 text: {exc}") from None

"""How batchrunner sends HTTP: a lean path for its own requests, and an httpx transport on
aiohttp's connection pool for anything that wants httpx's API.

httpcore places every request by scanning every connection of its pool (an expiry check with a
``getpeername`` and a ``poll`` each) and every waiting request; at a few hundred jobs in flight
that bookkeeping was most of a run's CPU. Measured on this machine (16 connections, 16 requests
at a time to a local server): 1.3 ms of client CPU per request through httpcore, 0.2 ms through
aiohttp (``make bench`` has the whole-run figures).

**Two ways in.** :meth:`AiohttpTransport.handle_async_request` is an httpx transport like any
other, on aiohttp. :meth:`AiohttpTransport.send` is the lean path the queue client and the
downloader take (any other transport, e.g. the tests' ``httpx.MockTransport``, still gets
httpx requests): a method, a URL string and a dict of headers in, a :class:`LeanResponse` out
(status, case-insensitive headers, the body read with the connection given back at once, or a
stream to iterate and close), so no ``httpx.Request``, ``httpx.Response``, ``Headers`` or
``URL`` is built, and a URL the client built is sent as written, unparsed. It goes straight on
:mod:`batchrunner.wire`'s HTTP/1.1 connections, or through aiohttp when a proxy is to be used.
Measured, 16 requests at a time to a local server: aiohttp's ``ClientSession`` about 165 µs of
CPU for a small exchange, the wire about 30; first building no httpx objects took a request
through aiohttp from 530 to 250 µs (callgrind: 963k → 519k instructions), and then the wire
took a ``--concurrency 200`` run of 2,000 near-instant jobs about 7 % lower (A/B, medians of 4).

What the rest of batchrunner relies on is kept exactly, on both paths:

- **Errors are httpx's**, and "never sent" means never sent: only a failed or timed-out
  *connect* (or proxy) becomes :class:`httpx.ConnectError`, :class:`httpx.ConnectTimeout` or
  :class:`httpx.ProxyError`, which the queue client may retry even for a submit. Anything that
  can happen after the request was written (a dropped connection, a reset, a read timeout, a
  body cut short, a garbled answer) becomes a read or protocol error: a submit's answer lost.
  (httpx-aiohttp was weighed: it maps every ``ClientConnectionError``, a disconnect after the
  request went out included, to ``ConnectTimeout``, which would resubmit a job that may exist.)
- **Timeouts** are httpx's: ``connect`` per connection attempt, ``pool`` for waiting for a
  connection, ``read`` between two reads of the answer (how a silent status stream is noticed).
- **Nothing is added to a request** but ``Accept-Encoding: gzip, deflate`` (aiohttp's; the
  answer is decoded by httpx on its path, by the wire or aiohttp on the lean one): no cookies,
  no ``.netrc`` credentials, and no redirect is followed. Proxies come from the environment
  (``HTTPS_PROXY``, ``NO_PROXY``...) as httpx takes them, and certificates from httpx's SSL
  context (``SSL_CERT_FILE`` honoured).
- **URLs** go out as httpx would send them: one that is not plainly written (a space,
  non-ASCII, a dot segment, an upper-case host) is normalised by httpx's parser first.

One difference is left: a header sent twice reads as its first value on the lean path, where
httpx joins the values with commas (the ones batchrunner reads, ``Location``, ``Retry-After``,
``Content-Range``, ``Content-Length`` and fal's own, are single-valued).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import ssl
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Protocol

import httpx

from batchrunner import wire

# aiohttp (and its yarl) are imported where first needed: for a proxy, or for httpx's own
# interface. A run that goes straight to the API never needs them, and they are a tenth of a
# second to import.
if TYPE_CHECKING:
    import aiohttp
    from yarl import URL


@functools.cache
def _errors() -> tuple[tuple[type[BaseException], type[httpx.TransportError]], ...]:
    """aiohttp's errors, most specific first, and the httpx error each one is."""
    import aiohttp

    return (
        (aiohttp.ClientProxyConnectionError, httpx.ProxyError),
        (aiohttp.ClientHttpProxyError, httpx.ProxyError),
        (aiohttp.ClientConnectorError, httpx.ConnectError),  # DNS, refused, TLS: never sent
        (aiohttp.ConnectionTimeoutError, httpx.ConnectTimeout),  # connect or pool: never sent
        (aiohttp.ServerTimeoutError, httpx.ReadTimeout),
        (asyncio.TimeoutError, httpx.ReadTimeout),
        (aiohttp.ServerDisconnectedError, httpx.RemoteProtocolError),
        (aiohttp.ClientPayloadError, httpx.RemoteProtocolError),  # the body was cut short
        (aiohttp.ClientResponseError, httpx.RemoteProtocolError),  # not an HTTP answer
        (aiohttp.InvalidURL, httpx.UnsupportedProtocol),
        (aiohttp.NonHttpUrlClientError, httpx.UnsupportedProtocol),
        (aiohttp.ClientError, httpx.ReadError),  # resets and the rest: maybe sent
        (OSError, httpx.ReadError),
    )


def _httpx_error(exc: Exception) -> type[httpx.TransportError] | None:
    for theirs, ours in _errors():
        if isinstance(exc, theirs):
            return ours
    return None


@contextlib.contextmanager
def _as_httpx_errors(request: httpx.Request) -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        ours = _httpx_error(exc)
        if ours is None:
            raise
        raise ours(str(exc) or type(exc).__name__, request=request) from exc


# what httpx keeps as written in a URL's path and query, checked in three quick steps instead of
# one regex with a lookbehind at every character (a fifth of the time): these characters only,
# no dot segment, and every '%' an escape
_PLAIN = re.compile(r"[-A-Za-z0-9_~!$&'()*+,;=:@/?.%]*")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_PLAIN_ORIGIN = re.compile(r"(https?)://([a-z0-9.-]+)(?::([0-9]{1,5}))?(?=/)")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def kept_as_written(text: str, start: int = 0) -> bool:
    """Whether httpx would keep ``text[start:]`` (a URL's path and query) exactly as written:
    nothing to quote or resolve (no space, non-ASCII, fragment, stray '%' or dot segment)."""
    return (
        _PLAIN.fullmatch(text, start) is not None
        and text.find("/.", start) < 0
        and (text.find("%", start) < 0 or _BAD_ESCAPE.search(text, start) is None)
    )


def _wire_url(url: str) -> URL:
    """``url`` as httpx would send it; :class:`httpx.InvalidURL` for text that is not a URL.
    One the client built (http(s), a lower-case host, a plain path) is taken as it is."""
    from yarl import URL

    origin = _PLAIN_ORIGIN.match(url)
    if origin is not None and kept_as_written(url, origin.end()):
        return URL(url, encoded=True)
    return URL(str(httpx.URL(url)), encoded=True)


def _wire_parts(method: str, url: str) -> tuple[str, str, int, str, str]:
    """Scheme, host, port, ``Host`` header and request target of ``url`` as httpx would send
    it (see :func:`_wire_url`); a URL the client built is sliced as written."""
    origin = _PLAIN_ORIGIN.match(url)
    if origin is not None and kept_as_written(url, origin.end()):
        scheme, host, port = origin.groups()
        if port is None:
            return scheme, host, _DEFAULT_PORTS[scheme], host, url[origin.end() :]
        if int(port) != _DEFAULT_PORTS[scheme] and len(port) == len(str(int(port))):
            return scheme, host, int(port), f"{host}:{port}", url[origin.end() :]
    parsed = httpx.URL(url)
    if parsed.scheme not in _DEFAULT_PORTS:
        raise httpx.UnsupportedProtocol(
            f"the URL must start with http:// or https://: {url}",
            request=httpx.Request(method, url),
        )
    if not parsed.host:
        raise httpx.UnsupportedProtocol(
            f"no host in the URL {url}", request=httpx.Request(method, url)
        )
    port = parsed.port or _DEFAULT_PORTS[parsed.scheme]
    return (
        parsed.scheme,
        parsed.host,
        port,
        parsed.netloc.decode("ascii"),
        parsed.raw_path.decode("ascii"),
    )


@functools.lru_cache(maxsize=16)
def _client_timeout(
    pool: float | None, connect: float | None, read: float | None
) -> aiohttp.ClientTimeout:
    import aiohttp

    return aiohttp.ClientTimeout(connect=pool, sock_connect=connect, sock_read=read)


def _chosen_proxy(proxies: Mapping[str, str], scheme: str, host: str) -> str | None:
    """The proxy a request to ``scheme://host`` goes through (``NO_PROXY`` heeded), or None."""
    proxy = proxies.get(scheme)
    if proxy is None or urllib.request.proxy_bypass(host):
        return None
    return proxy


def proxy_shown(url: str) -> str | None:
    """The proxy the environment sets for ``url``, without its user and password (for an error
    line), or None when requests to ``url`` go straight."""
    parts = urllib.parse.urlsplit(url)
    proxy = _chosen_proxy(
        urllib.request.getproxies_environment(), parts.scheme, parts.hostname or ""
    )
    if proxy is None:
        return None
    shown = urllib.parse.urlsplit(proxy)
    return shown._replace(netloc=shown.netloc.rpartition("@")[2]).geturl()


def check_environment(origin: str) -> None:
    """Refuse, before anything is recorded or sent, what the environment sets that no request
    could go through: ``SSL_CERT_FILE`` naming a file that holds no certificates (the first
    https request crashed the run, its job left ``submitting``), or the proxy for the API (or
    for https, where the videos are) written without its scheme, ``HTTP_PROXY=proxy:3128``
    (every job failed, "cannot send the request"). :class:`UsageError` in one line."""
    import os

    from batchrunner.errors import UsageError

    for name in ("SSL_CERT_FILE", "SSL_CERT_DIR"):  # as httpx.create_ssl_context reads them
        if os.environ.get(name):
            try:
                httpx.create_ssl_context()
            except (OSError, ssl.SSLError) as exc:
                raise UsageError(
                    f"{name}={os.environ[name]} cannot be used for TLS certificates "
                    f"({exc.strerror or exc}): fix or unset it (nothing was sent)"
                ) from None
            break
    proxies = urllib.request.getproxies_environment()
    parts = urllib.parse.urlsplit(origin)
    used = {_chosen_proxy(proxies, parts.scheme, parts.hostname or ""), proxies.get("https")}
    for proxy in sorted(p for p in used if p):
        parsed = urllib.parse.urlsplit(proxy)
        if "://" in proxy and parsed.hostname:
            continue
        scheme = next(s for s, value in proxies.items() if value == proxy)
        name = next(
            (n for n in (f"{scheme}_proxy", f"{scheme.upper()}_PROXY") if os.environ.get(n)),
            f"{scheme.upper()}_PROXY",
        )
        shown = proxy.rpartition("@")[2]  # never its password
        raise UsageError(
            f"{name}={shown!r} is not a proxy URL: write it with its scheme, like "
            f"http://{shown.removeprefix('//')} (nothing was sent)"
        )


class AiohttpTransport(httpx.AsyncBaseTransport):
    """Sends httpx requests through one ``aiohttp.ClientSession`` (made on first use, inside
    the running event loop) with at most ``limits.max_connections`` connections."""

    def __init__(self, limits: httpx.Limits | None = None) -> None:
        self._limits = limits or httpx.Limits(max_connections=100)
        self._proxies = urllib.request.getproxies_environment()
        self._session: aiohttp.ClientSession | None = None
        self._wire: wire.Pool | None = None

    def _open(self) -> aiohttp.ClientSession:
        import aiohttp

        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._limits.max_connections or 0,
                keepalive_timeout=self._limits.keepalive_expiry or 5.0,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                trust_env=False,  # proxies are ours to pick; netrc credentials are never sent
                auto_decompress=False,  # httpx decodes
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    @functools.cached_property
    def _tls(self) -> ssl.SSLContext:
        """httpx's SSL context (certifi's roots, or SSL_CERT_FILE's), made when the first
        https request needs it: loading the roots is a fair part of a plain-http run's start."""
        return httpx.create_ssl_context()

    def _proxy(self, url: httpx.URL | URL) -> str | None:
        return self._proxy_for(url.scheme, url.host or "")

    def _proxy_for(self, scheme: str, host: str) -> str | None:
        return _chosen_proxy(self._proxies, scheme, host)

    async def send(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        *,
        timeout: httpx.Timeout,
        content: bytes | None = None,
        stream: bool = False,
    ) -> LeanResponse:
        """The lean path: ``method url`` sent as :meth:`handle_async_request` would send it
        (same errors, timeouts, proxies, TLS), without building httpx's request and response:
        straight on :mod:`batchrunner.wire`'s connections, or through aiohttp when a proxy is
        to be used.

        The answer's body is read and its connection given back before this returns, unless
        ``stream``: then the caller reads it (:meth:`LeanResponse.aiter_bytes`) and closes it.
        A ``Content-Encoding`` is decoded here, where httpx would.
        """
        scheme, host, port, netloc, target = _wire_parts(method, url)
        if self._proxies and self._proxy_for(scheme, host) is not None:
            return await self._send_by_aiohttp(
                method, url, headers, timeout=timeout, content=content, stream=stream
            )
        pool = self._wire
        if pool is None:
            pool = self._wire = wire.Pool(
                self._limits.max_connections,
                self._limits.keepalive_expiry or 5.0,
                lambda: self._tls,
            )
        answer = await pool.exchange(
            method,
            (scheme, host, port),
            netloc,
            target,
            headers,
            timeout=timeout,
            content=content,
            stream=stream,
            request=lambda: httpx.Request(method, url),
        )
        return LeanResponse(answer.status_code, answer.headers, url, answer.content, answer)

    async def _send_by_aiohttp(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        *,
        timeout: httpx.Timeout,
        content: bytes | None,
        stream: bool,
    ) -> LeanResponse:
        wire_url = _wire_url(url)
        answer = None
        try:
            answer = await self._open().request(
                method,
                wire_url,
                headers=headers,
                data=content or None,
                allow_redirects=False,
                proxy=self._proxy(wire_url),
                ssl=self._tls if wire_url.scheme == "https" else True,
                timeout=_client_timeout(timeout.pool, timeout.connect, timeout.read),
                auto_decompress=True,
            )
            body = _AiohttpBody(answer, lambda: httpx.Request(method, url))
            data = b"" if stream else await answer.read()
            return LeanResponse(answer.status, answer.headers, url, data, body)
        except Exception as exc:
            if answer is not None:
                answer.close()
            ours = _httpx_error(exc)
            if ours is None:
                raise
            raise ours(str(exc) or type(exc).__name__, request=httpx.Request(method, url)) from exc
        finally:
            if answer is not None and not stream:
                answer.release()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(
                f"the URL must start with http:// or https://: {request.url}", request=request
            )
        import aiohttp
        from yarl import URL

        timeout = request.extensions.get("timeout", {})
        content = await request.aread()
        with _as_httpx_errors(request):
            answer = await self._open().request(
                request.method,
                URL(str(request.url), encoded=True),
                headers=request.headers.multi_items(),
                data=content or None,
                allow_redirects=False,
                proxy=self._proxy(request.url),
                ssl=self._tls if request.url.scheme == "https" else True,
                timeout=aiohttp.ClientTimeout(
                    connect=timeout.get("pool"),
                    sock_connect=timeout.get("connect"),
                    sock_read=timeout.get("read"),
                ),
            )
        reason = (answer.reason or "").encode()
        return httpx.Response(
            status_code=answer.status,
            headers=answer.raw_headers,
            stream=_AiohttpBody(answer, lambda: request),
            request=request,
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": reason},
        )

    async def aclose(self) -> None:
        if self._wire is not None:
            await self._wire.aclose()
            self._wire = None
        if self._session is not None:
            await self._session.close()
            self._session = None


class _Source(Protocol):
    """Where a :class:`LeanResponse`'s body comes from: a :class:`batchrunner.wire.Response`
    or aiohttp's (:class:`_AiohttpBody`)."""

    def chunks(self) -> AsyncIterator[bytes]: ...

    def release(self) -> None: ...


class _AiohttpBody(httpx.AsyncByteStream):
    """aiohttp's answer as it arrives, for both ways in: httpx's byte stream and the lean
    path's :class:`_Source`. Its errors become httpx's, naming ``request()`` (built only for
    an error); closing it gives the connection back to the pool (or closes it, when the body
    was not read to its end)."""

    def __init__(
        self, answer: aiohttp.ClientResponse, request: Callable[[], httpx.Request]
    ) -> None:
        self._answer = answer
        self._request = request

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._answer.content.iter_any():
                yield chunk
        except Exception as exc:
            ours = _httpx_error(exc)
            if ours is None:
                raise
            raise ours(str(exc) or type(exc).__name__, request=self._request()) from exc

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self.chunks()

    def release(self) -> None:
        self._answer.release()

    async def aclose(self) -> None:
        self.release()


class LeanResponse:
    """An answer from :meth:`AiohttpTransport.send`: what batchrunner reads of a response and
    no more. ``headers`` are read by any case; ``url`` is the URL asked for (to resolve a
    ``Location`` against); ``content`` is the whole body once read."""

    __slots__ = ("_body", "_url", "content", "headers", "status_code")

    def __init__(
        self,
        status_code: int,
        headers: Mapping[str, str],
        url: str,
        content: bytes,
        body: _Source,
    ) -> None:
        self.status_code = status_code
        self.headers = headers
        self._url = url
        self.content = content
        self._body = body

    @property
    def url(self) -> httpx.URL:
        return httpx.URL(self._url)

    async def aread(self) -> bytes:
        """The rest of a streamed body, kept as ``content``."""
        chunks = [self.content]
        async for chunk in self.aiter_bytes():
            chunks.append(chunk)
        self.content = b"".join(chunks)
        return self.content

    def aiter_bytes(self) -> AsyncIterator[bytes]:
        """The body as it arrives; errors are httpx's, as on the httpx path."""
        return self._body.chunks()

    async def aclose(self) -> None:
        self._body.release()  # closes the connection instead if the body was not all read


Answer = httpx.Response | LeanResponse
"""What the queue client and the downloader read: httpx's response (any transport but
:class:`AiohttpTransport`, e.g. ``httpx.MockTransport`` in tests) or the lean path's."""


async def send(
    transport: httpx.AsyncBaseTransport,
    method: str,
    url: str,
    headers: Mapping[str, str],
    *,
    timeout: httpx.Timeout,
    content: bytes | None = None,
    stream: bool = False,
) -> Answer:
    """``method url`` through ``transport``: by its lean path on :class:`AiohttpTransport`, as
    an ``httpx.Request`` on any other (the tests' ``httpx.MockTransport``, the ASGI simulator).
    The answer is read and its connection released unless ``stream`` (then the caller reads
    and closes it). A 3xx is returned like any answer: never followed."""
    if isinstance(transport, AiohttpTransport):
        return await transport.send(
            method, url, headers, timeout=timeout, content=content, stream=stream
        )
    request = httpx.Request(
        method, url, headers=headers, content=content, extensions={"timeout": timeout.as_dict()}
    )
    response = await transport.handle_async_request(request)
    response.request = request
    if not stream:
        try:
            await response.aread()
        finally:
            await response.aclose()
    return response

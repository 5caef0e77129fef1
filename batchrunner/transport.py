"""An httpx transport on aiohttp's connection pool: httpx's API, a pool that costs little.

httpcore places every request by scanning every connection of its pool (an expiry check with a
``getpeername`` and a ``poll`` each) and every waiting request; at a few hundred jobs in flight
that bookkeeping was most of a run's CPU. aiohttp keeps idle connections per host in a stack and
parses HTTP in C. Measured on this machine (16 connections, 16 requests at a time to a local
server): 1.3 ms of client CPU per request through httpcore, 0.2 ms through this transport
(``make bench`` has the whole-run figures).

What the rest of batchrunner relies on is kept exactly:

- **Errors are httpx's**, and "never sent" means never sent: only a failed or timed-out
  *connect* (or proxy) becomes :class:`httpx.ConnectError`, :class:`httpx.ConnectTimeout` or
  :class:`httpx.ProxyError`, which the queue client may retry even for a submit. Anything that
  can happen after the request was written (a dropped connection, a reset, a read timeout, a
  body cut short, a garbled answer) becomes a read or protocol error: a submit's answer lost.
  (httpx-aiohttp was weighed: it maps every ``ClientConnectionError``, a disconnect after the
  request went out included, to ``ConnectTimeout``, which would resubmit a job that may exist.)
- **Timeouts** are httpx's: ``connect`` per connection attempt, ``pool`` for waiting for a
  connection, ``read`` between two reads of the answer (how a silent status stream is noticed).
- **Nothing is added to a request** but aiohttp's ``Accept-Encoding`` (httpx decodes the
  answer): no cookies, no ``.netrc`` credentials, and no redirect is followed. Proxies come
  from the environment (``HTTPS_PROXY``, ``NO_PROXY``...) as httpx takes them, and
  certificates from httpx's SSL context (``SSL_CERT_FILE`` honoured).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ssl
import urllib.request
from collections.abc import AsyncIterator, Iterator

import aiohttp
import httpx
from yarl import URL

# aiohttp's errors, most specific first, and the httpx error each one is
_ERRORS: tuple[tuple[type[BaseException], type[httpx.TransportError]], ...] = (
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


@contextlib.contextmanager
def _as_httpx_errors(request: httpx.Request) -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        for theirs, ours in _ERRORS:
            if isinstance(exc, theirs):
                raise ours(str(exc) or type(exc).__name__, request=request) from exc
        raise


class AiohttpTransport(httpx.AsyncBaseTransport):
    """Sends httpx requests through one ``aiohttp.ClientSession`` (made on first use, inside
    the running event loop) with at most ``limits.max_connections`` connections."""

    def __init__(self, limits: httpx.Limits | None = None) -> None:
        self._limits = limits or httpx.Limits(max_connections=100)
        self._proxies = urllib.request.getproxies_environment()
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
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

    def _proxy(self, url: httpx.URL) -> str | None:
        proxy = self._proxies.get(url.scheme)
        if proxy is None or urllib.request.proxy_bypass(url.host):
            return None
        return proxy

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(
                f"the URL must start with http:// or https://: {request.url}", request=request
            )
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
            stream=_Body(answer, request),
            request=request,
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": reason},
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class _Body(httpx.AsyncByteStream):
    """An answer's body as it arrives; closing it gives the connection back to the pool (or
    closes it, when the body was not read to its end)."""

    def __init__(self, answer: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self._answer = answer
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _as_httpx_errors(self._request):
            async for chunk in self._answer.content.iter_any():
                yield chunk

    async def aclose(self) -> None:
        self._answer.release()  # closes the connection instead if the body was not all read

"""The queue client: submit, status, result and cancel over fal's queue protocol.

One :class:`QueueClient` owns two connection pools (:mod:`batchrunner.transport`) and builds
every request itself. This module is the one home of two things the rest of batchrunner
relies on:

**Where the token goes.** :class:`OriginAuth` adds ``Authorization`` only to requests whose
origin (scheme, host, port) is the configured one, and strips it from any other. Redirects are
not followed (a 3xx is a :class:`FinalError` naming the ``Location``'s origin). URLs the API
returns on another origin (a reseller answers with ``https://queue.fal.run/...``) are re-based
onto the configured origin by :func:`rebase`, path and query kept. The token is scrubbed from
every message built from a server's answer; it is never logged.

**URLs.** Submit is ``POST {base}/{owner}/{app}/{path}``; status, result and cancel are
``{base}/{owner}/{app}/requests/{id}[/status|/cancel]`` — the sub-path is dropped.

**What a failure means** is decided by :mod:`batchrunner.answers` (:func:`classify`,
:func:`classify_transport`): transient errors are retried per
:class:`~batchrunner.retry.RetryPolicy`, everything else is raised at once, and a submit is
retried only when the answer proves no job was created. "Unreachable" is one clock per
client, shared by every worker: the first request that could not even connect starts it, any
answer from the API resets it (:mod:`batchrunner.reach`).

Each HTTP request logs one DEBUG line on ``batchrunner.client``: method, URL, status, elapsed.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

import anyio
import httpx

from batchrunner import __version__
from batchrunner.answers import (
    NEVER_SENT,
    NOT_REACHED,
    Op,
    QueueStatus,
    billable_units,
    classify,
    classify_transport,
    int_or_none,
    json_body,
    parse_cancel,
    parse_status,
    scrubbed,
)
from batchrunner.errors import (
    AmbiguousSubmitError,
    FinalError,
    ProviderError,
    RateLimitedError,
    RunError,
    StreamNotOfferedError,
    TransientError,
    UnreachableError,
    UsageError,
)
from batchrunner.models import split_endpoint
from batchrunner.providers import ApiConfig, origin_of
from batchrunner.ratelimit import RateLimiter
from batchrunner.reach import Reach
from batchrunner.retry import RetryPolicy, call_with_retry, mark_waiting
from batchrunner.streams import STREAM_STALL, BadEvent, sse_events
from batchrunner.transport import AiohttpTransport, Answer, kept_as_written, send

logger = logging.getLogger("batchrunner.client")

T = TypeVar("T")
DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=10.0)
DEFAULT_RETRY = RetryPolicy()


@dataclass(frozen=True)
class Submitted:
    """The queue's answer to a submit; the URLs are already on the configured origin."""

    request_id: str
    status_url: str
    response_url: str
    cancel_url: str
    queue_position: int | None


@dataclass
class Wire:
    """Whether a request is out on the wire and unanswered (see :meth:`QueueClient.submit`)."""

    busy: bool = False


@dataclass(frozen=True)
class Result:
    """A finished job's output, and what the provider said it billed for it."""

    output: dict[str, Any]
    billable_units: float | None  # the ``x-fal-billable-units`` header, when sent


# --- URLs and the auth guard -------------------------------------------------------------------


_origin = functools.lru_cache(maxsize=16)(origin_of)


def rebase(url: str, base_url: str) -> str:
    """``url`` moved onto ``base_url``'s origin, path and query kept, fragment dropped.

    A URL already on that origin is kept as it is. A URL on another origin gets the base URL's
    path prefix in front of its path (like the URLs the client builds). A relative URL is taken
    as a path on the configured origin. Raises ``ValueError`` for text that is not a URL.
    """
    origin = _origin(base_url)
    if url.startswith(origin + "/") and kept_as_written(url, len(origin)):
        return url  # what parsing it would give, at a fraction of the cost (3 URLs a submit)
    return _rebase_parsed(url, base_url)


def _rebase_parsed(url: str, base_url: str) -> str:
    try:
        target = httpx.URL(url.strip())
    except httpx.InvalidURL as exc:
        raise ValueError(f"not a URL: {url[:100]!r}") from exc
    base = httpx.URL(base_url)
    origin = origin_of(base)
    path_and_query = "/" + target.raw_path.decode("ascii").lstrip("/")
    if not target.is_absolute_url:
        return origin + path_and_query
    if origin_of(target) == origin:
        return str(target.copy_with(fragment=None))
    return origin + base.path.rstrip("/") + path_and_query


def _is_origin(url: str | httpx.URL, origin: str) -> bool:
    try:
        return origin_of(url) == origin
    except (ValueError, httpx.InvalidURL):
        return False


class OriginAuth:
    """Adds ``Authorization`` to the headers of requests for the configured origin, and to no
    other (:meth:`headers`), whichever way they are sent."""

    def __init__(self, api: ApiConfig) -> None:
        self._api = api
        self._prefix = api.origin + "/"

    def __repr__(self) -> str:
        return f"OriginAuth(origin={self._api.origin!r})"

    def headers(self, url: str, headers: dict[str, str]) -> dict[str, str]:
        """``headers`` for a request to ``url``, the token on it or off it (any other
        ``Authorization``, whatever its case, off)."""
        for name in [name for name in headers if name.lower() == "authorization"]:
            del headers[name]
        if self.allows(url):
            headers["Authorization"] = self._api.authorization
        return headers

    def allows(self, url: str | httpx.URL) -> bool:
        """Whether ``url`` is on the configured origin. A URL the client built starts with the
        origin and a ``/``, which ends the authority: that text is the origin, unparsed."""
        if isinstance(url, str) and url.startswith(self._prefix):
            return True
        return _is_origin(url, self._api.origin)


# --- the client ----------------------------------------------------------------------------------


class QueueClient:
    """Talks to one provider's queue API through two connection pools (httpx transports).

    Every call retries transient failures per ``retry``, waits for ``limiter`` before each HTTP
    request, and calls ``on_rate_limited()`` on every 429 (and slows ``limiter`` down on a 429
    to anything but a submit). ``limits`` sizes the pool of the short requests
    (submit, status, result, cancel); ``stream_limits`` (default: the same) the status streams'
    own, where a job holds a connection for its whole life: a run needs about ``concurrency``.

    Requests go straight to the transports, not through ``httpx.AsyncClient``: none of what it
    adds is wanted (redirects, cookies, auth flows), and it cost as much CPU as the pool below.
    Every request goes through :meth:`_exchange`: on :class:`AiohttpTransport` by its lean path
    (no httpx request or response built), on any other transport as an ``httpx.Request``; on
    both, :class:`OriginAuth` decides whether the token goes with it.
    """

    def __init__(
        self,
        api: ApiConfig,
        *,
        retry: RetryPolicy = DEFAULT_RETRY,
        limiter: RateLimiter | None = None,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
        on_rate_limited: Callable[[], None] | None = None,
        limits: httpx.Limits | None = None,
        stream_limits: httpx.Limits | None = None,
        extra_headers: Mapping[str, str] | None = None,
        unreachable_after: float | None = None,
        patience: float | None = None,
    ) -> None:
        headers = {"User-Agent": f"batchrunner/{__version__}", "Accept": "application/json"}
        for name, value in (extra_headers or {}).items():
            if name.lower() == "authorization":
                raise UsageError("extra headers must not set Authorization")
            headers[name] = value
        self._headers = headers
        self._authorize = OriginAuth(api)
        self.api = api
        self.retry = retry
        self.limiter = limiter or RateLimiter(None)
        self.on_rate_limited = on_rate_limited
        # how long to wait for the API when nothing connects: 10 s before it first answered,
        # 5 min once it has (the network dropped): :mod:`batchrunner.reach`
        self.reach = Reach(
            f"the API at {api.origin}", unreachable_after, patience, origin=api.origin
        )
        self._secrets = (api.token,)

        # Two pools: a status stream holds its connection for the whole job, so the short
        # requests (submit, status, result, cancel) keep a few of their own that streams can
        # never all take.
        limits = limits or httpx.Limits(max_connections=100, max_keepalive_connections=20)
        self._http = transport or AiohttpTransport(limits)
        self._streams = transport or AiohttpTransport(stream_limits or limits)
        self._timeout = timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout)

    def __repr__(self) -> str:
        return f"QueueClient(base_url={self.api.base_url!r}, provider={self.api.provider!r})"

    async def __aenter__(self) -> QueueClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()
        if self._streams is not self._http:
            await self._streams.aclose()

    # URLs

    def rebase(self, url: str) -> str:
        """``url`` moved onto the configured origin (see :func:`rebase`)."""
        return rebase(url, self.api.base_url)

    def _url(self, *segments: str) -> str:
        return self.api.base_url + "".join("/" + urllib.parse.quote(s, safe="") for s in segments)

    @staticmethod
    def _split(endpoint_id: str) -> tuple[str, str, list[str]]:
        try:
            owner, app, path = split_endpoint(endpoint_id)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        rest = path.split("/") if path else []
        if any(part in (".", "..") or not part for part in [owner, app, *rest]):
            raise UsageError(f"not an endpoint id (owner/app[/path]): {endpoint_id!r}")
        return owner, app, rest

    def submit_url(self, endpoint_id: str) -> str:
        owner, app, rest = self._split(endpoint_id)
        return self._url(owner, app, *rest)

    def request_url(self, endpoint_id: str, request_id: str, action: str | None = None) -> str:
        """``{base}/{owner}/{app}/requests/{id}[/action]``: the sub-path is dropped."""
        owner, app, _ = self._split(endpoint_id)
        return self._url(owner, app, "requests", request_id, *([action] if action else []))

    def _target(
        self, url: str | None, endpoint_id: str, request_id: str, action: str | None
    ) -> str:
        if url:
            try:
                return self.rebase(url)
            except ValueError:
                logger.warning("ignoring an unusable stored URL for request %s", request_id)
        return self.request_url(endpoint_id, request_id, action)

    # operations

    async def submit(
        self,
        endpoint_id: str,
        payload: dict[str, Any],
        *,
        retry_throttled: bool = True,
        wire: Wire | None = None,
    ) -> Submitted:
        """Queue a job. Raises :class:`AmbiguousSubmitError` when a job may exist anyway.

        ``retry_throttled=False`` raises a 429 at once (:class:`RateLimitedError`) so that a
        scheduler can give its slot back and wait outside it. ``wire.busy`` is true exactly
        while a POST is out and unanswered: a caller that cancels the submit can tell "maybe
        sent" from "provably not sent".
        """
        url = self.submit_url(endpoint_id)
        try:
            content = json.dumps(payload, ensure_ascii=False, allow_nan=False).encode()
        except (TypeError, ValueError) as exc:
            raise FinalError(f"the input cannot be sent as JSON: {exc}") from None
        body = await self._call(
            "submit",
            "POST",
            url,
            _json_object,
            content=content,
            retry_throttled=retry_throttled,
            wire=wire,
        )
        request_id = body.get("request_id")
        if not isinstance(request_id, str) or not request_id.strip():
            raise AmbiguousSubmitError("the submit was answered without a request_id")
        built = self.request_url(endpoint_id, request_id)

        def returned(key: str, fallback: str) -> str:
            value = body.get(key)
            if isinstance(value, str) and value.strip():
                try:
                    return self.rebase(value)
                except ValueError:
                    pass
            return fallback

        return Submitted(
            request_id=request_id,
            status_url=returned("status_url", built + "/status"),
            response_url=returned("response_url", built),
            cancel_url=returned("cancel_url", built + "/cancel"),
            queue_position=int_or_none(body.get("queue_position")),
        )

    async def status(
        self, endpoint_id: str, request_id: str, *, url: str | None = None, logs: bool = True
    ) -> QueueStatus:
        """Poll a request (``?logs=1`` unless ``logs=False``)."""
        target = httpx.URL(self._target(url, endpoint_id, request_id, "status"))
        target = target.copy_set_param("logs", "1" if logs else "0")

        def parse(response: Answer) -> QueueStatus:
            return parse_status(_json_object(response))

        return await self._call("status", "GET", str(target), parse)

    async def result(self, endpoint_id: str, request_id: str, *, url: str | None = None) -> Result:
        """The model's output. A failed job raises the failure (e.g. 422 → FinalError)."""
        target = self._target(url, endpoint_id, request_id, None)

        def parse(response: Answer) -> Result:
            output = _json_object(response)
            if any(secret.encode() in response.content for secret in self._secrets):
                output = scrubbed(output, self._secrets)  # stored, exported: never the key
            return Result(output, billable_units(response))

        return await self._call("result", "GET", target, parse)

    @contextlib.asynccontextmanager
    async def status_stream(
        self,
        endpoint_id: str,
        request_id: str,
        *,
        url: str | None = None,
        logs: bool = True,
        stall: float = STREAM_STALL,
    ) -> AsyncIterator[AsyncIterator[QueueStatus | None]]:
        """Open the request's status stream (``{status_url}/stream``); yields its events: a
        :class:`QueueStatus` per change, ``None`` per keep-alive comment. Not retried: a caller
        falls back to :meth:`status`.

        Raises :class:`StreamNotOfferedError` for 404/405 or an answer that is not
        ``text/event-stream``; otherwise what the same answer means for a status poll (a
        refused key is a :class:`RunError`). While reading, a dropped connection, an event that
        is not a status object, or ``stall`` seconds without a byte is a :class:`TransientError`.
        """
        status = self._target(url, endpoint_id, request_id, "status")
        path = status.partition("#")[0].partition("?")[0].rstrip("/")
        target = f"{path}/stream?logs={int(logs)}"  # the status URL's own query is not wanted
        timeout = httpx.Timeout(self._timeout.connect, read=stall, write=stall, pool=stall)
        await self.limiter.acquire()
        started = time.monotonic()
        try:
            response = await self._exchange(
                self._streams,
                "GET",
                target,
                headers={"Accept": "text/event-stream"},
                timeout=timeout,
                stream=True,
            )
        except httpx.RequestError as exc:
            logger.debug("GET %s -> %s", target, type(exc).__name__)
            error = classify_transport(exc, idempotent=True, secrets=self._secrets)
            if isinstance(exc, NEVER_SENT):
                error = self._still_reachable(error, started)
            raise error from exc
        self.reach.answered()
        logger.debug("GET %s -> %d (stream)", target, response.status_code)
        try:
            kind = response.headers.get("content-type", "")
            if response.status_code in (404, 405) or (
                response.status_code == 200 and not kind.startswith("text/event-stream")
            ):
                raise StreamNotOfferedError(
                    f"no status stream here ({response.status_code} {kind or 'no content type'})",
                    status=response.status_code,
                )
            if response.status_code != 200:
                await response.aread()
                error = classify(response, "status", secrets=self._secrets) or TransientError(
                    f"the status stream answered {response.status_code}",
                    status=response.status_code,
                )
                if isinstance(error, RateLimitedError):
                    self._throttled("status")
                raise error
            yield self._stream_statuses(response, stall)
        finally:
            await response.aclose()

    async def _stream_statuses(
        self, response: Answer, stall: float
    ) -> AsyncIterator[QueueStatus | None]:
        try:
            async for event in sse_events(response.aiter_bytes()):
                yield None if event is None else parse_status(event)
        except BadEvent as exc:
            raise TransientError(str(exc)) from None
        except httpx.ReadTimeout:
            raise TransientError(f"the status stream sent nothing for {stall:g} s") from None
        except httpx.RequestError as exc:
            raise classify_transport(exc, idempotent=True, secrets=self._secrets) from exc

    async def cancel(self, endpoint_id: str, request_id: str, *, url: str | None = None) -> str:
        """``CANCELLATION_REQUESTED``, ``ALREADY_COMPLETED`` or ``NOT_FOUND``."""
        target = self._target(url, endpoint_id, request_id, "cancel")
        return await self._call("cancel", "PUT", target, parse_cancel, accept=(400, 404))

    # plumbing

    async def _call(
        self,
        op: Op,
        method: str,
        url: str,
        parse: Callable[[Answer], T],
        *,
        content: bytes | None = None,
        accept: Collection[int] = (),
        retry_throttled: bool = True,
        wire: Wire | None = None,
    ) -> T:
        async def attempt() -> T:
            response = await self._send(op, method, url, content, wire or Wire())
            if response.status_code not in accept:
                error = classify(response, op, secrets=self._secrets)
                if error is not None:
                    if isinstance(error, RateLimitedError):
                        self._throttled(op)
                    raise error
            return parse(response)

        async def attempt_once_if_throttled() -> T:
            try:
                return await attempt()
            except RateLimitedError as error:
                if retry_throttled:
                    raise
                raise _Throttled(error) from error

        try:
            return await call_with_retry(
                self.retry, attempt_once_if_throttled, retry_on=(TransientError,), sleep=self._pause
            )
        except _Throttled as wrapped:
            raise wrapped.error from None

    async def _exchange(
        self,
        transport: httpx.AsyncBaseTransport,
        method: str,
        url: str,
        *,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: httpx.Timeout | None = None,
        stream: bool = False,
    ) -> Answer:
        """Send a request with the client's headers and the token where it belongs
        (:class:`OriginAuth`); see :func:`batchrunner.transport.send` (the lean path on
        :class:`AiohttpTransport`: about half the CPU of a request)."""
        sent = self._authorize.headers(url, {**self._headers, **(headers or {})})
        return await send(
            transport,
            method,
            url,
            sent,
            timeout=timeout or self._timeout,
            content=content,
            stream=stream,
        )

    async def _send(
        self, op: Op, method: str, url: str, content: bytes | None, wire: Wire
    ) -> Answer:
        await self.limiter.acquire()
        headers = {"Content-Type": "application/json"} if content is not None else None
        started = time.monotonic()
        wire.busy = True
        try:
            response = await self._exchange(
                self._http, method, url, content=content, headers=headers
            )
        except httpx.RequestError as exc:
            logger.debug(
                "%s %s -> %s (%.3fs)", method, url, type(exc).__name__, time.monotonic() - started
            )
            error = classify_transport(exc, idempotent=op != "submit", secrets=self._secrets)
            if isinstance(exc, NEVER_SENT):
                wire.busy = False
                error = self._still_reachable(error, started)
            raise error from exc
        wire.busy = False
        self.reach.answered()
        logger.debug(
            "%s %s -> %d (%.3fs)", method, url, response.status_code, time.monotonic() - started
        )
        return response

    async def _pause(self, seconds: float) -> None:
        """A retry's wait, cut short when the API may be declared unreachable before it ends:
        the next try then comes right at the bound, so the run stops in about that long."""
        if self.reach.failing_since is not None:
            seconds = min(seconds, max(self.reach.left(), 0.0) + 0.05)
        await anyio.sleep(seconds)

    def _throttled(self, op: Op) -> None:
        """A 429. On a submit it is about how many jobs the provider takes (the scheduler lowers
        its concurrency); on anything else, about the request rate: the limiter slows down."""
        if op != "submit":
            self.limiter.throttled()
        if self.on_rate_limited:
            self.on_rate_limited()

    def _still_reachable(self, error: ProviderError, started: float) -> ProviderError:
        """``error``, or an UnreachableError once nothing has connected for the bound; an
        outage being waited for is marked so (:func:`batchrunner.retry.mark_waiting`)."""
        if isinstance(error, RunError):
            return error
        if self.reach.failed(started) > 0:
            return mark_waiting(error) if self.reach.waiting else error
        since = self.reach.failing_since or started
        why = str(error)
        if why.startswith(f"{NOT_REACHED} (") and why.endswith(")"):  # said once, by the caller
            why = why[len(NOT_REACHED) + 2 : -1]
        return UnreachableError(
            f"nothing connected for {time.monotonic() - since:.0f} s; {why}", status=error.status
        )


class _Throttled(Exception):
    """Carries a 429 past the retry loop when the caller wants to handle throttling itself."""

    def __init__(self, error: RateLimitedError):
        super().__init__(str(error))
        self.error = error


def _json_object(response: Answer) -> dict[str, Any]:
    """The body as a JSON object (``classify`` has already rejected anything else)."""
    body = json_body(response)
    if not isinstance(body, dict):
        raise TransientError(f"the API answered {response.status_code} without a JSON object")
    return body

"""Answers the simulator sends when something goes wrong on purpose.

Injected faults, and the mechanism for dropping a connection: :class:`DroppedResponse` starts a
response that announces its full ``Content-Length``, sends part of the body (or none), then raises
:class:`DropConnection`. An ASGI server cannot turn an exception raised *after* the response has
started into a 500, so it closes the connection — to the client that is a remote disconnect
mid-response (``httpx.RemoteProtocolError``), exactly what a lost answer looks like.
:func:`quiet_intentional_drops` keeps uvicorn from logging a traceback for these.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping

from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from .config import Fault

REQUEST_ID_HEADER = "x-fal-request-id"

_NGINX_TITLES = {
    502: "502 Bad Gateway",
    503: "503 Service Temporarily Unavailable",
    504: "504 Gateway Time-out",
}


class DropConnection(Exception):
    """Raised on purpose after a response started, so the server closes the connection."""


class DroppedResponse(Response):
    """Headers with the full ``Content-Length``, ``fraction`` of the body, then a dropped line."""

    def __init__(
        self,
        body: bytes,
        *,
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
        media_type: str | None = None,
        fraction: float = 0.5,
    ):
        if not body:
            raise ValueError("a dropped response needs a body to leave unfinished")
        super().__init__(body, status_code=status_code, headers=headers, media_type=media_type)
        self.sent = bytes(self.body[: min(int(len(self.body) * fraction), len(self.body) - 1)])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        if self.sent and scope.get("method") != "HEAD":
            await send({"type": "http.response.body", "body": self.sent, "more_body": True})
        raise DropConnection("connection dropped on purpose by the simulator")


def _is_intentional_drop(exc: BaseException | None) -> bool:
    if isinstance(exc, DropConnection):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return all(_is_intentional_drop(inner) for inner in exc.exceptions)
    return False


class _QuietDrops(logging.Filter):
    """Drops the "Exception in ASGI application" record of an intentional drop."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and _is_intentional_drop(record.exc_info[1]))


def quiet_intentional_drops() -> None:
    """Install (once) the filter that silences tracebacks of intentional drops in uvicorn."""
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _QuietDrops) for f in logger.filters):
        logger.addFilter(_QuietDrops())


def new_request_id() -> str:
    return str(uuid.uuid4())


def app_json(
    payload: object,
    status_code: int = 200,
    *,
    request_id: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """A JSON answer from "the app": always carries ``x-fal-request-id``."""
    all_headers = {REQUEST_ID_HEADER: request_id or new_request_id(), **(headers or {})}
    return JSONResponse(payload, status_code=status_code, headers=all_headers)


def nginx_page(status_code: int) -> Response:
    """What an ingress proxy answers when the app behind it is unreachable (no request id)."""
    title = _NGINX_TITLES[status_code]
    html = (
        f"<html><head><title>{title}</title></head><body><center><h1>{title}</h1></center>"
        "<hr><center>nginx</center></body></html>"
    )
    return Response(html, status_code=status_code, media_type="text/html")


def fault_response(fault: Fault, request_id: str | None = None) -> Response:
    """The answer for an injected fault (not for ``drop_after_accept``/``cut``: see the routes)."""
    kind = fault.kind
    if kind == "429":
        headers = {} if fault.retry_after is None else {"Retry-After": f"{fault.retry_after:g}"}
        return app_json({"detail": "Too many requests"}, 429, headers=headers)
    if kind in ("502", "503", "504"):
        return nginx_page(int(kind))
    if kind == "500":
        detail = "Internal server error: simulated application failure"
        return app_json({"detail": detail}, 500, request_id=request_id)
    if kind == "html_200":
        html = (
            "<html><head><title>Welcome</title></head><body><h1>Please sign in</h1></body></html>"
        )
        return Response(html, status_code=200, media_type="text/html")
    if kind == "403":  # as a storage bucket refuses an object
        denied = "<?xml version='1.0' encoding='UTF-8'?><Error><Code>AccessDenied</Code></Error>"
        return Response(denied, status_code=403, media_type="application/xml")
    if kind == "invalid_json":
        body = b'{"status": "IN_QUEUE", "request_id": "' + (request_id or "").encode()[:8]
        return Response(body, status_code=200, media_type="application/json")
    # drop (and the route-specific kinds when used elsewhere): no complete answer at all
    return DroppedResponse(b'{"detail": "never sent"}', fraction=0.0, media_type="application/json")

"""The simulator's HTTP routes: fal's queue API, a media host, and a counters endpoint.

=======  ================================================  =======================================
method   path                                              what
=======  ================================================  =======================================
POST     ``/{owner}/{app}[/{path}]``                       submit (JSON body = model input)
GET      ``/{owner}/{app}/requests/{id}/status``           status (202 while waiting, 200 done)
GET      ``/{owner}/{app}/requests/{id}/status/stream``    status as server-sent events
GET      ``/{owner}/{app}/requests/{id}``                  result (or the job's failure)
PUT      ``/{owner}/{app}/requests/{id}/cancel``           cancel
GET/HEAD ``/media/{id}.mp4``                               the video (no auth, Range requests)
GET      ``/_sim/counters``                                what the simulator has seen (no auth)
=======  ================================================  =======================================

Each queue request is counted, then checked against the fault rules, then authenticated, then
handled. Status, result and cancel paths drop the endpoint's sub-path, like fal's.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ..models import ModelSpec, lookup
from . import lies, media
from .clips import MediaShape
from .config import SimulatorConfig
from .responses import (
    DropConnection,
    DroppedResponse,
    app_json,
    fault_response,
    new_request_id,
    quiet_intentional_drops,
)
from .state import AccountLocked, JobView, Simulator
from .world import CANCELLED, COMPLETED, CONTENT_POLICY, IN_QUEUE, TIMED_OUT, error_message

STREAM_POLL_SECONDS = 0.05  # how often an open status stream looks for a change

NOT_FOUND = {"detail": "Request not found"}

Handler = Callable[[Request, Simulator], Awaitable[Response]]


def _sim(request: Request) -> Simulator:
    sim: Simulator = request.app.state.sim
    return sim


def _own_origin(request: Request) -> str:
    return f"{request.url.scheme}://{request.url.netloc}"


def _api_origin(request: Request) -> str:
    return _sim(request).config.public_origin or _own_origin(request)


def _queue_route(route: str, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """Count the request, inject a fault if one fires, check auth, then run ``handler``."""

    async def endpoint(request: Request) -> Response:
        try:
            return await answer(request)
        except ClientDisconnect:  # the client left before its request arrived: no job, no one
            return Response(status_code=499)  # to answer (nginx's "client closed request")

    async def answer(request: Request) -> Response:
        sim = _sim(request)
        authorization = request.headers.get("authorization")
        sim.note_request(route, request.headers.get("host", ""), authorization)
        fault = sim.pick_fault(route)
        if fault is not None and fault.kind in ("drop_midway", "silent"):  # the stream does it
            request.state.fault = fault.kind
            fault = None
        if fault is not None and fault.kind == "404":  # as if the route were not served
            return app_json({"detail": "Not Found"}, 404)
        if fault is not None and fault.kind == "redirect":  # as a server that serves only https
            secure = request.url.replace(scheme="https")
            return Response(status_code=301, headers={"location": str(secure)})
        if fault is not None and fault.kind == "ignored":  # a cancel the job does not heed
            request_id = request.path_params.get("request_id")
            return app_json({"status": "CANCELLATION_REQUESTED"}, 202, request_id=request_id)
        if fault is not None and fault.kind != "drop_after_accept":
            await request.body()  # the whole request arrived: a drop is then ambiguous
            return fault_response(fault, request.path_params.get("request_id"))
        problem = sim.check_auth(authorization)
        response = app_json({"detail": problem}, 401) if problem else await handler(request, sim)
        if fault is not None:  # drop_after_accept: handled (maybe a job exists), answer lost
            return DroppedResponse(
                bytes(response.body),
                status_code=response.status_code,
                headers=dict(response.headers),
            )
        return response

    return endpoint


# JSON Schema keyword -> the error type fal's (pydantic) validation reports
_ERROR_TYPES = {
    "enum": "literal_error",
    "maxLength": "string_too_long",
    "minLength": "string_too_short",
    "maximum": "less_than_equal",
    "minimum": "greater_than_equal",
    "type": "type_error",
}


def _validation_detail(spec: ModelSpec, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The body's faults against the model's schema, in fal's 422 ``detail`` shape."""
    return [
        {
            "loc": ["body", *(problem.path or ([problem.field] if problem.field else []))],
            "msg": "Field required" if problem.kind == "missing" else problem.message,
            "type": _ERROR_TYPES.get(problem.kind, problem.kind),
        }
        for problem in spec.problems(body)
    ]


async def _submit(request: Request, sim: Simulator) -> Response:
    owner, app = request.path_params["owner"], request.path_params["app"]
    path = request.path_params.get("path", "").strip("/")
    endpoint_id = "/".join(part for part in (owner, app, path) if part)
    try:
        body = json.loads(await request.body())
    except ValueError as exc:
        detail = [{"loc": ["body"], "msg": f"Invalid JSON: {exc}", "type": "json_invalid"}]
        return app_json({"detail": detail}, 422)
    if not isinstance(body, dict):
        detail = [{"loc": ["body"], "msg": "Input should be an object", "type": "dict_type"}]
        return app_json({"detail": detail}, 422)
    spec = lookup(endpoint_id)
    if spec is None and endpoint_id not in sim.config.extra_endpoints:
        return app_json({"detail": f"Application '{endpoint_id}' not found"}, 404)
    shape = None
    if spec is not None:
        detail = _validation_detail(spec, body)
        if detail:
            return app_json({"detail": detail}, 422)
        shape = MediaShape(**spec.media_shape(body))
    shape = lies.apply(shape or MediaShape(), body.get("prompt"), sim.config.lie_marker)
    try:
        accepted = sim.submit(endpoint_id, body, start_timeout=_start_timeout(request), shape=shape)
    except AccountLocked as locked:
        return app_json({"detail": str(locked)}, 403)
    if accepted is None:
        return app_json({"detail": "Too many requests"}, 429)
    job, position = accepted
    base = f"{_api_origin(request)}/{owner}/{app}/requests/{job.request_id}"
    payload: dict[str, Any] = {
        "status": IN_QUEUE,
        "request_id": job.request_id,
        "response_url": base,
        "status_url": f"{base}/status",
        "cancel_url": f"{base}/cancel",
        "logs": None,
        "metrics": {},
        "queue_position": position,
    }
    return app_json(payload, 200, request_id=job.request_id)


def _start_timeout(request: Request) -> float | None:
    """``X-Fal-Request-Timeout``: seconds the job may wait before it must have started."""
    raw = request.headers.get("x-fal-request-timeout")
    try:
        value = float(raw) if raw else None
    except ValueError:
        return None
    return value if value is not None and value > 0 else None


def _status_payload(view: JobView, origin: str, errors_in_status: bool) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "status": view.status,
        "request_id": view.request_id,
        "response_url": f"{origin}/{view.owner_app}/requests/{view.request_id}",
        "queue_position": view.queue_position,
        "logs": None if view.status == IN_QUEUE else view.logs,
        "metrics": {},
    }
    if view.status == COMPLETED:
        if view.inference_time is not None:
            payload["metrics"] = {"inference_time": view.inference_time}
        if view.error_type is not None and errors_in_status:
            payload["error"] = error_message(view.error_type)
            payload["error_type"] = view.error_type
    return payload


def _job_view(request: Request, sim: Simulator) -> tuple[str, JobView | None]:
    request_id = request.path_params["request_id"]
    view = sim.view(request_id)
    # a job submitted under another app is not found under this one
    if view is not None and view.owner_app != _owner_app(request):
        view = None
    return request_id, view


def _owner_app(request: Request) -> str:
    return f"{request.path_params['owner']}/{request.path_params['app']}"


async def _status(request: Request, sim: Simulator) -> Response:
    request_id, view = _job_view(request, sim)
    if view is None:
        return app_json(NOT_FOUND, 404, request_id=request_id)
    payload = _status_payload(view, _api_origin(request), sim.config.errors_in_status)
    return app_json(payload, 200 if view.status == COMPLETED else 202, request_id=request_id)


async def _stream(request: Request, sim: Simulator) -> Response:
    request_id, view = _job_view(request, sim)
    if view is None:
        return app_json(NOT_FOUND, 404, request_id=request_id)
    origin = _api_origin(request)
    fault = getattr(request.state, "fault", None)

    async def events() -> AsyncIterator[str]:
        last: dict[str, Any] | None = None
        ping_every = sim.config.stream_ping_seconds
        next_ping = anyio.current_time() + ping_every
        while not sim.closing:
            view = sim.view(request_id)
            if view is None:
                return
            payload = _status_payload(view, origin, sim.config.errors_in_status)
            if payload != last and fault == "drop_midway" and last is not None:
                raise DropConnection("status stream dropped on purpose by the simulator")
            if payload != last and fault != "silent":
                yield f"data: {json.dumps(payload)}\n\n"
                last = payload
            if view.status == COMPLETED and fault != "silent":
                return
            if anyio.current_time() >= next_ping:
                yield ": ping\n\n"
                next_ping = anyio.current_time() + ping_every
            wait = min(STREAM_POLL_SECONDS, ping_every)
            change = sim.next_change(request_id)
            if change is not None and change < wait:  # wake when it changes, like fal's push
                wait = max(0.001, change + 0.001)
            await anyio.sleep(wait)

    headers = {"cache-control": "no-cache", "x-fal-request-id": request_id}
    return StreamingResponse(events(), media_type="text/event-stream", headers=headers)


async def _result(request: Request, sim: Simulator) -> Response:
    request_id, view = _job_view(request, sim)
    if view is None or view.result_expired:
        return app_json(NOT_FOUND, 404, request_id=request_id)
    if view.status != COMPLETED:
        return app_json({"detail": "Request is still in progress"}, 400, request_id=request_id)
    if view.error_type == CONTENT_POLICY:
        message = error_message(CONTENT_POLICY)
        detail = [{"loc": ["body", "prompt"], "msg": message, "type": CONTENT_POLICY}]
        return app_json({"detail": detail}, 422, request_id=request_id)
    if view.error_type == CANCELLED:
        body = {"detail": error_message(CANCELLED), "error_type": CANCELLED}
        return app_json(body, 400, request_id=request_id)
    if view.error_type == TIMED_OUT:
        body = {"detail": error_message(TIMED_OUT), "error_type": TIMED_OUT}
        headers = {"X-Fal-Error-Type": TIMED_OUT, "X-Fal-Request-Timeout-Type": "user"}
        return app_json(body, 504, request_id=request_id, headers=headers)
    assert view.media_size is not None
    media_origin = sim.config.media_origin or _own_origin(request)
    video = {
        "url": f"{media_origin}/media/{request_id}.mp4",
        "content_type": "video/mp4",
        "file_name": f"{request_id}.mp4",
        "file_size": view.media_size,
    }
    submitted = sim.request(request_id)
    prompt = str(submitted[1].get("prompt", "")) if submitted else ""
    if sim.config.file_url_marker in prompt:  # a result no download can ever fetch
        video["url"] = f"file:///tmp/{request_id}.mp4"
    if sim.config.wrong_size_marker in prompt:  # a result that misstates the file's size
        video["file_size"] = view.media_size + 1000
    headers = _billing(submitted, sim.config.billing_factor)
    return app_json({"video": video}, 200, request_id=request_id, headers=headers)


def _billing(submitted: tuple[str, dict[str, Any]] | None, factor: float) -> dict[str, str]:
    """``x-fal-billable-units``: the job's units (seconds, videos, tokens) by its price rule,
    times ``factor`` (``--billing-factor``)."""
    spec = lookup(submitted[0]) if submitted else None
    if submitted is None or spec is None or spec.price is None:
        return {}
    try:
        units = spec.price.units(spec.complete(submitted[1]))
    except ValueError:
        return {}
    return {"x-fal-billable-units": f"{units * factor:g}"}


async def _cancel(request: Request, sim: Simulator) -> Response:
    request_id, view = _job_view(request, sim)
    answer = "NOT_FOUND" if view is None else sim.cancel(request_id)
    code = {"CANCELLATION_REQUESTED": 202, "ALREADY_COMPLETED": 400, "NOT_FOUND": 404}[answer]
    return app_json({"status": answer}, code, request_id=request_id)


async def _media(request: Request) -> Response:
    """``/media/{id}.mp4``: public (no auth), ``Range`` aware; faults: route ``media``."""
    sim = _sim(request)
    sim.note_request("media", request.headers.get("host", ""), request.headers.get("authorization"))
    fault = sim.pick_fault("media")
    if fault is not None and fault.kind != "cut":
        return fault_response(fault)
    name: str = request.path_params["name"]
    request_id = name.removesuffix(".mp4")
    shape = sim.media_shape(request_id) if name.endswith(".mp4") else None
    if shape is None:
        return app_json({"detail": "File not found"}, 404)
    data = media.video_bytes(request_id, sim.config.media_bytes, shape)
    headers = {
        "content-type": "video/mp4",
        "accept-ranges": "bytes",
        "etag": f'"{media.video_sha256(request_id, sim.config.media_bytes, shape)}"',
        "x-fal-request-id": new_request_id(),
    }
    try:
        wanted = media.parse_range(request.headers.get("range"), len(data))
    except media.RangeNotSatisfiable:
        headers["content-range"] = f"bytes */{len(data)}"
        return Response(b"", status_code=416, headers=headers)
    status_code, body = 200, data
    if wanted is not None:
        first, last = wanted
        status_code, body = 206, data[first : last + 1]
        headers["content-range"] = f"bytes {first}-{last}/{len(data)}"
    if fault is not None:  # cut: the full Content-Length is promised, half of it arrives
        return DroppedResponse(body, status_code=status_code, headers=headers)
    if request.method == "HEAD":
        headers["content-length"] = str(len(body))
        return Response(b"", status_code=status_code, headers=headers, media_type="video/mp4")
    return Response(body, status_code=status_code, headers=headers, media_type="video/mp4")


async def _top_up(request: Request) -> Response:
    """``POST /_sim/top-up`` ``{"submits": N}``: the account can pay for N more submits."""
    try:
        submits = int((await request.json()).get("submits", 0))
    except (ValueError, AttributeError, TypeError):
        return app_json({"detail": 'send {"submits": N}'}, 422)
    return JSONResponse({"balance": _sim(request).top_up(submits)})


async def _counters(request: Request) -> Response:
    return JSONResponse(_sim(request).counters())


async def _not_found(request: Request) -> Response:
    return app_json({"detail": "Not Found"}, 404)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return app_json({"detail": exc.detail}, exc.status_code, headers=exc.headers)


def create_app(
    config: SimulatorConfig | None = None, *, clock: Callable[[], float] | None = None
) -> Starlette:
    """The simulator as an ASGI app; its state is ``app.state.sim`` (a :class:`Simulator`).

    ``clock`` (default :func:`time.monotonic`) lets unit tests step a fake clock instead of
    sleeping. The config is read on every request, so it may be changed while serving.
    """
    config = config or SimulatorConfig()
    quiet_intentional_drops()
    requests = "/{owner}/{app}/requests/{request_id}"
    routes = [
        Route("/_sim/counters", _counters, methods=["GET"]),
        Route("/_sim/top-up", _top_up, methods=["POST"]),
        Route("/media/{name}", _media, methods=["GET", "HEAD"]),
        Route(f"{requests}/status/stream", _queue_route("stream", _stream), methods=["GET"]),
        Route(f"{requests}/status", _queue_route("status", _status), methods=["GET"]),
        Route(f"{requests}/cancel", _queue_route("cancel", _cancel), methods=["PUT"]),
        Route(requests, _queue_route("result", _result), methods=["GET"]),
        Route("/{owner}/{app}", _queue_route("submit", _submit), methods=["POST"]),
        Route("/{owner}/{app}/{path:path}", _queue_route("submit", _submit), methods=["POST"]),
        # e.g. a status URL that kept the sub-path: not found (rather than 405 from submit)
        Route("/{rest:path}", _not_found, methods=["GET"]),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: _http_error})
    app.state.sim = Simulator(config, clock=clock)
    return app

"""The queue client against httpx.MockTransport: URLs, the auth guard, classification, retries."""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from batchrunner.answers import QueueStatus, parse_retry_after
from batchrunner.client import (
    OriginAuth,
    QueueClient,
    Submitted,
    _rebase_parsed,
    rebase,
)
from batchrunner.errors import (
    AccountLockedError,
    AmbiguousSubmitError,
    FinalError,
    KeyRefusedError,
    ProviderError,
    RateLimitedError,
    RedirectedError,
    RequestGoneError,
    ResultExpiredError,
    TransientError,
    UsageError,
)
from batchrunner.providers import ApiConfig
from batchrunner.retry import RetryPolicy

LOCKED = (
    "User is locked. Reason: Exhausted balance. Top up your balance at fal.ai/dashboard/billing."
)
TOKEN = "tok-SECRET-7d1f0e"
BASE = "https://api.quickrouter.ai"
ENDPOINT = "fal-ai/veo3/image-to-video"
RID = "bcd3b436-b7af-42f3-8649-204657bfaf10"
FAL = f"https://queue.fal.run/fal-ai/veo3/requests/{RID}"
SEED_ANSWER: dict[str, Any] = {  # the reseller's documented submit answer (shared/seed)
    "status": "IN_QUEUE",
    "request_id": RID,
    "response_url": FAL,
    "status_url": f"{FAL}/status",
    "cancel_url": f"{FAL}/cancel",
    "logs": None,
    "metrics": {},
    "queue_position": 0,
}
NGINX_502 = b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"
ATTEMPTS = 3

LOCKED = (
    "User is locked. Reason: Exhausted balance. Top up your balance at fal.ai/dashboard/billing."
)

Handler = Callable[[httpx.Request], httpx.Response]

LOCKED = (
    "User is locked. Reason: Exhausted balance. Top up your balance at fal.ai/dashboard/billing."
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def api(base: str = BASE, scheme: str = "bearer") -> ApiConfig:
    return ApiConfig(base, scheme, TOKEN)  # type: ignore[arg-type]


class Recorder:
    """A MockTransport handler that records every request and answers from a script.

    ``answers`` are used in turn (the last one repeats); each is a Response, an exception to
    raise, or a callable taking the request.
    """

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, BaseException):
            raise answer
        if callable(answer):
            return answer(request)  # type: ignore[no-any-return]
        return answer  # type: ignore[no-any-return]

    @property
    def calls(self) -> int:
        return len(self.requests)

    def client(self, config: ApiConfig | None = None, **kwargs: Any) -> QueueClient:
        kwargs.setdefault("retry", RetryPolicy.fast(ATTEMPTS))
        return QueueClient(config or api(), transport=httpx.MockTransport(self), **kwargs)


def ok(body: Any, status: int = 200, **headers: str) -> httpx.Response:
    return httpx.Response(status, json=body, headers=headers)


def raw(status: int, content: bytes = b"", headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, content=content, headers=headers)


def app_error(status: int, detail: Any, error_type: str | None = None) -> httpx.Response:
    headers = {"x-fal-request-id": RID}
    body: dict[str, Any] = {"detail": detail}
    if error_type:
        body["error_type"] = error_type
        headers["x-fal-error-type"] = error_type
    return httpx.Response(status, json=body, headers=headers)


def secret_free(exc: BaseException) -> BaseException:
    """Every error we raise must keep the token out of its message and repr."""
    assert TOKEN not in str(exc), str(exc)
    assert TOKEN not in repr(exc), repr(exc)
    assert "\n" not in str(exc)
    return exc


async def run(client: QueueClient, op: str) -> Any:
    async with client:
        if op == "submit":
            return await client.submit(
                ENDPOINT, {"prompt": "a cat", "image_url": "https://x/y.png"}
            )
        if op == "status":
            return await client.status(ENDPOINT, RID)
        if op == "result":
            return await client.result(ENDPOINT, RID)
        return await client.cancel(ENDPOINT, RID)


async def fails(client: QueueClient, op: str, kind: type[ProviderError]) -> ProviderError:
    with pytest.raises(kind) as info:
        await run(client, op)
    return secret_free(info.value)  # type: ignore[return-value]


# --- URLs ----------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_submit_posts_the_payload_to_the_full_endpoint_with_the_token() -> None:
    rec = Recorder(ok(SEED_ANSWER))
    answer = await run(rec.client(), "submit")
    (request,) = rec.requests
    assert request.method == "POST"
    assert str(request.url) == f"{BASE}/fal-ai/veo3/image-to-video"
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.content) == {"prompt": "a cat", "image_url": "https://x/y.png"}
    assert isinstance(answer, Submitted)
    assert answer.request_id == RID and answer.queue_position == 0


@pytest.mark.anyio
async def test_submit_rebases_the_returned_urls_onto_the_configured_origin() -> None:
    answer = await run(Recorder(ok(SEED_ANSWER)).client(), "submit")
    path = f"/fal-ai/veo3/requests/{RID}"
    assert answer.response_url == f"{BASE}{path}"
    assert answer.status_url == f"{BASE}{path}/status"
    assert answer.cancel_url == f"{BASE}{path}/cancel"


@pytest.mark.anyio
async def test_submit_builds_missing_urls_itself() -> None:
    answer = await run(Recorder(ok({"request_id": RID})).client(), "submit")
    assert answer.status_url == f"{BASE}/fal-ai/veo3/requests/{RID}/status"
    assert answer.queue_position is None


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("op", "method", "url"),
    [
        ("status", "GET", f"{BASE}/fal-ai/veo3/requests/{RID}/status?logs=1"),
        ("result", "GET", f"{BASE}/fal-ai/veo3/requests/{RID}"),
        ("cancel", "PUT", f"{BASE}/fal-ai/veo3/requests/{RID}/cancel"),
    ],
)
async def test_request_urls_drop_the_sub_path(op: str, method: str, url: str) -> None:
    body = {"status": "IN_QUEUE", "queue_position": 3, "video": {"url": "u"}}
    rec = Recorder(ok(body, 202 if op == "cancel" else 200))
    await run(rec.client(), op)
    (request,) = rec.requests
    assert (request.method, str(request.url)) == (method, url)
    assert request.headers["authorization"] == f"Bearer {TOKEN}"


@pytest.mark.anyio
async def test_status_can_skip_logs() -> None:
    rec = Recorder(ok({"status": "IN_PROGRESS", "logs": None}))
    async with rec.client() as client:
        await client.status(ENDPOINT, RID, logs=False)
    assert rec.requests[0].url.params["logs"] == "0"


@pytest.mark.anyio
async def test_a_base_path_prefix_is_kept_for_built_and_rebased_urls() -> None:
    rec = Recorder(ok(SEED_ANSWER))
    answer = await run(rec.client(api("https://proxy.example.com/v1/")), "submit")
    assert str(rec.requests[0].url) == "https://proxy.example.com/v1/fal-ai/veo3/image-to-video"
    assert answer.status_url == f"https://proxy.example.com/v1/fal-ai/veo3/requests/{RID}/status"


@pytest.mark.anyio
async def test_fal_direct_sends_the_key_scheme() -> None:
    rec = Recorder(ok(SEED_ANSWER))
    answer = await run(rec.client(api("https://queue.fal.run", "key")), "submit")
    assert rec.requests[0].headers["authorization"] == f"Key {TOKEN}"
    assert answer.status_url == f"{FAL}/status"  # already on the configured origin


@pytest.mark.anyio
@pytest.mark.parametrize("bad", ["fal-ai", "fal-ai//x", "fal-ai/../secret", ""])
async def test_malformed_endpoint_ids_are_refused_before_sending(bad: str) -> None:
    rec = Recorder(ok(SEED_ANSWER))
    async with rec.client() as client:
        with pytest.raises(UsageError):
            await client.submit(bad, {})
    assert rec.calls == 0


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (f"{FAL}/status", f"{BASE}/fal-ai/veo3/requests/{RID}/status"),
        (f"{FAL}?logs=1#frag", f"{BASE}/fal-ai/veo3/requests/{RID}?logs=1"),
        (f"{BASE}/x/y?z=1", f"{BASE}/x/y?z=1"),
        ("https://API.quickrouter.ai:443/x", f"{BASE}/x"),
        ("http://api.quickrouter.ai/x", f"{BASE}/x"),  # another scheme is another origin
        ("https://api.quickrouter.ai:8443/x", f"{BASE}/x"),
        ("https://api.quickrouter.ai.evil.com/x", f"{BASE}/x"),
        ("/fal-ai/veo3/requests/1", f"{BASE}/fal-ai/veo3/requests/1"),
        ("fal-ai/veo3/requests/1", f"{BASE}/fal-ai/veo3/requests/1"),
        ("//evil.example.net/x?y=1", f"{BASE}/x?y=1"),
    ],
)
def test_rebase(url: str, expected: str) -> None:
    assert rebase(url, BASE) == expected


@given(
    base=st.sampled_from([BASE, "https://proxy.example.com/v1", "http://127.0.0.1:8123"]),
    rest=st.text(alphabet="aZ09-._~!$&'()*+,;=:@/?%#[] é\\\t", max_size=30),
)
def test_a_url_kept_as_it_is_is_what_parsing_it_gives(base: str, rest: str) -> None:
    """URLs on the configured origin skip the parser when nothing in them could change; what
    comes out is what the parser would have made of them."""
    url = base.removesuffix("/v1") + "/" + rest
    try:
        parsed = _rebase_parsed(url, base)
    except ValueError:
        with pytest.raises(ValueError):
            rebase(url, base)
        return
    assert rebase(url, base) == parsed


def test_rebase_adds_the_prefix_only_to_foreign_urls() -> None:
    base = "https://proxy.example.com/v1"
    assert rebase(f"{FAL}", base) == f"https://proxy.example.com/v1/fal-ai/veo3/requests/{RID}"
    assert rebase("https://proxy.example.com/v1/a", base) == "https://proxy.example.com/v1/a"


# --- the auth guard ------------------------------------------------------------------------------


GUARDED = [  # a request URL, and whether the token goes with it
    (f"{BASE}/fal-ai/veo3/requests/1", True),
    ("https://API.QUICKROUTER.AI:443/x", True),
    (f"{BASE}?x=1", True),
    ("https://queue.fal.run/fal-ai/veo3/requests/1", False),
    ("http://api.quickrouter.ai/x", False),
    ("https://api.quickrouter.ai:8443/x", False),
    ("https://api.quickrouter.ai.evil.com/x", False),
    ("https://api.quickrouter.ai@evil.com/x", False),
    ("https://api.quickrouter.ai:443@evil.com/x", False),
    ("https://v3.fal.media/files/video.mp4", False),
]


@pytest.mark.parametrize(("url", "gets_token"), [*GUARDED, ("not a URL at all", False)])
def test_auth_guard_sends_the_token_only_to_the_configured_origin(
    url: str, gets_token: bool
) -> None:
    """Every request's headers go through the guard, whichever way they are sent."""
    guard = OriginAuth(api())
    sent = guard.headers(url, {"authorization": "Bearer smuggled", "Accept": "*/*"})
    expected = {"Authorization": f"Bearer {TOKEN}"} if gets_token else {}
    assert sent == {"Accept": "*/*", **expected}
    assert TOKEN not in repr(guard)


@pytest.mark.anyio
async def test_a_stored_foreign_url_is_rebased_and_the_foreign_host_sees_nothing() -> None:
    rec = Recorder(ok({"status": "COMPLETED", "logs": []}))
    async with rec.client() as client:
        await client.status(ENDPOINT, RID, url=f"{FAL}/status")
        await client.cancel(ENDPOINT, RID, url=f"{FAL}/cancel")
    assert {r.url.host for r in rec.requests} == {"api.quickrouter.ai"}
    assert rec.requests[0].url.path == f"/fal-ai/veo3/requests/{RID}/status"
    assert all(r.headers["authorization"] == f"Bearer {TOKEN}" for r in rec.requests)


@pytest.mark.anyio
@pytest.mark.parametrize("op", ["submit", "status", "result", "cancel"])
async def test_redirects_are_not_followed(op: str) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.host == "api.quickrouter.ai":
            return raw(307, headers={"location": "https://evil.example.net/steal?x=1"})
        return ok(SEED_ANSWER)

    rec = Recorder(answer)
    error = await fails(rec.client(), op, RedirectedError)
    assert rec.calls == 1
    assert [r.url.host for r in rec.requests] == ["api.quickrouter.ai"]
    assert "https://evil.example.net" in str(error)
    assert "steal" not in str(error)


@pytest.mark.anyio
async def test_extra_headers_are_sent_but_may_not_set_authorization() -> None:
    rec = Recorder(ok(SEED_ANSWER))
    await run(rec.client(extra_headers={"X-Fal-Queue-Priority": "low"}), "submit")
    assert rec.requests[0].headers["x-fal-queue-priority"] == "low"
    with pytest.raises(UsageError):
        rec.client(extra_headers={"authorization": "Bearer other"})


def test_client_repr_hides_the_token() -> None:
    client = Recorder(ok({})).client()
    assert TOKEN not in repr(client)
    assert TOKEN not in repr(client.api)


# --- classification --------------------------------------------------------------------------


def status_body(status: str = "IN_PROGRESS") -> httpx.Response:
    return ok({"status": status, "logs": None, "queue_position": None})


CASES = [
    # op, answer, error class, fragment of the message, requests made
    ("status", raw(502, NGINX_502), TransientError, "gateway answered 502", ATTEMPTS),
    ("submit", raw(503, NGINX_502), TransientError, "gateway answered 503", ATTEMPTS),
    ("result", raw(504, b"upstream timed out"), TransientError, "504", ATTEMPTS),
    (
        "status",
        app_error(503, "no runner", "runner_scheduling_failure"),
        TransientError,
        "temporarily unavailable (503): no runner",
        ATTEMPTS,
    ),
    (
        "result",
        app_error(503, "no runner could be scheduled", "runner_scheduling_failure"),
        FinalError,
        "no runner could be scheduled [runner_scheduling_failure]",
        1,
    ),
    (
        "status",
        raw(504, b"{}", headers={"x-fal-request-timeout-type": "user", "x-fal-request-id": RID}),
        FinalError,
        "timed out",
        1,
    ),
    ("submit", ok({"detail": "Invalid token"}, 401), KeyRefusedError, "401 Invalid token", 1),
    ("status", ok({"detail": "Forbidden"}, 403), KeyRefusedError, "403 Forbidden", 1),
    ("submit", ok({"detail": LOCKED}, 403), AccountLockedError, "Exhausted balance", 1),
    ("result", ok({"detail": LOCKED}, 403), AccountLockedError, "User is locked", 1),
    (
        "status",
        ok({"detail": "Not Found"}, 404),
        RequestGoneError,
        "request not found at the provider",
        1,
    ),
    ("result", ok({"detail": "Not Found"}, 404), ResultExpiredError, "result expired:", 1),
    ("submit", ok({"detail": "Not Found"}, 404), FinalError, "not found", 1),
    ("result", ok({"detail": "Request is still in progress"}, 400), TransientError, "400", 3),
    ("submit", ok({"detail": "bad json"}, 400), FinalError, "bad json", 1),
    ("status", ok({"detail": "slow"}, 408), TransientError, "408", ATTEMPTS),
    ("submit", ok({"detail": "Payment required"}, 402), AccountLockedError, "Payment required", 1),
    ("result", app_error(500, "model crashed"), FinalError, "model crashed", 1),
    ("submit", app_error(500, "model crashed"), FinalError, "model crashed", 1),
    ("status", raw(500, b"Internal Server Error"), TransientError, "Internal Server Error", 3),
    ("submit", raw(500, b"Internal Server Error"), AmbiguousSubmitError, "after receiving", 1),
    ("status", raw(200, b"<html>maintenance</html>"), TransientError, "<html>maintenance", 3),
    ("result", raw(200, b'{"video": {"url": "ht'), TransientError, "not JSON", 3),
    ("status", ok([1, 2]), TransientError, "not JSON", 3),
    ("submit", raw(200, b"<html>maintenance</html>"), AmbiguousSubmitError, "maintenance", 1),
    ("status", ok({"status": "EXPLODED"}), TransientError, "unknown queue status", ATTEMPTS),
    ("status", ok({"detail": "???"}), TransientError, "unknown queue status None", ATTEMPTS),
    ("cancel", raw(502, NGINX_502), TransientError, "502", ATTEMPTS),
]


@pytest.mark.anyio
@pytest.mark.parametrize(("op", "answer", "kind", "fragment", "calls"), CASES)
async def test_classification(
    op: str, answer: httpx.Response, kind: type[ProviderError], fragment: str, calls: int
) -> None:
    rec = Recorder(answer)
    error = await fails(rec.client(), op, kind)
    assert fragment in str(error)
    assert rec.calls == calls
    if calls > 1:
        assert f"(gave up after {calls} tries)" in str(error)


@pytest.mark.anyio
async def test_422_detail_list_becomes_the_message() -> None:
    detail = [
        {"loc": ["body", "prompt"], "msg": "field required", "type": "missing"},
        {"loc": ["body", "image_url"], "msg": "not an image", "type": "value_error"},
    ]
    error = await fails(Recorder(ok({"detail": detail}, 422)).client(), "result", FinalError)
    assert str(error) == "prompt: field required; image_url: not an image"
    assert error.status == 422


@pytest.mark.anyio
async def test_422_detail_string_becomes_the_message() -> None:
    answer = ok({"detail": "content policy violation"}, 422)
    error = await fails(Recorder(answer).client(), "submit", FinalError)
    assert str(error) == "content policy violation"


@pytest.mark.anyio
async def test_a_token_echoed_by_the_server_is_scrubbed() -> None:
    answer = ok({"detail": f"invalid key Bearer {TOKEN}"}, 401)
    error = await fails(Recorder(answer).client(), "status", KeyRefusedError)
    assert str(error) == "401 invalid key Bearer ***"
    html = raw(200, f"<p>{TOKEN}</p>".encode())
    error = await fails(Recorder(html).client(), "status", TransientError)
    assert "***" in str(error)


@pytest.mark.anyio
async def test_a_token_echoed_in_a_result_is_not_kept() -> None:
    """A result that echoes the key (in a file name, a URL's query) was stored as it came: in
    the ledger, then in every export. Stored with ``***`` in its place; the rest as it was."""
    video = {"url": f"https://cdn.test/v.mp4?k={TOKEN}", "file_name": f"{TOKEN}.mp4", "n": 3}
    answer = ok({"video": video, TOKEN: [TOKEN, 1]})
    got = await run(Recorder(answer).client(), "result")
    assert TOKEN not in json.dumps(got.output)
    assert got.output == {
        "video": {"url": "https://cdn.test/v.mp4?k=***", "file_name": "***.mp4", "n": 3},
        "***": ["***", 1],
    }


@pytest.mark.anyio
async def test_non_json_body_snippet_is_short_and_single_line() -> None:
    body = b"<html>\n<body>\r\n" + b"x" * 5000
    error = await fails(Recorder(raw(200, body)).client(), "status", TransientError)
    assert "<html> <body> xxx" in str(error)
    assert len(str(error)) < 400


# --- 429 and Retry-After -------------------------------------------------------------------------


@pytest.mark.anyio
async def test_429_is_rate_limited_with_retry_after_and_calls_the_hook_each_time() -> None:
    hits: list[int] = []
    rec = Recorder(raw(429, b"slow down", headers={"retry-after": "2.5"}))
    client = rec.client(on_rate_limited=lambda: hits.append(1))
    error = await fails(client, "status", RateLimitedError)
    assert isinstance(error, RateLimitedError)
    assert error.retry_after == 2.5
    assert rec.calls == ATTEMPTS and len(hits) == ATTEMPTS


@pytest.mark.anyio
async def test_retry_after_is_waited_before_the_next_try() -> None:
    policy = RetryPolicy(attempts=2, base_delay=0.0, max_delay=0.0, jitter=False)
    rec = Recorder(raw(429, headers={"retry-after": "0.2"}), status_body())
    started = time.monotonic()
    status = await run(rec.client(retry=policy), "status")
    assert time.monotonic() - started >= 0.19
    assert status.status == "IN_PROGRESS" and rec.calls == 2


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("3", 3.0),
        ("0.25", 0.25),
        ("-4", 0.0),
        ("Wed, 01 Jan 2025 00:00:30 GMT", 30.0),
        ("Tue, 31 Dec 2024 23:59:00 GMT", 0.0),
        ("soon", None),
        ("nan", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_retry_after(header: str | None, seconds: float | None) -> None:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    value = parse_retry_after(header, now=now)
    assert value == seconds or (seconds is not None and math.isclose(value or 0, seconds))


# --- transport errors and the submit rule -----------------------------------------------------


AMBIGUOUS = [
    httpx.ReadTimeout("read timed out"),
    httpx.ReadError("connection reset"),
    httpx.RemoteProtocolError("Server disconnected without sending a response."),
    httpx.WriteError("broken pipe"),
    httpx.WriteTimeout("write timed out"),
]
NEVER_SENT = [
    httpx.ConnectError("connection refused"),
    httpx.ConnectTimeout("connect timed out"),
    httpx.PoolTimeout("no free connection"),
]


@pytest.mark.anyio
@pytest.mark.parametrize("exc", AMBIGUOUS, ids=lambda e: type(e).__name__)
async def test_submit_is_never_retried_when_the_answer_was_lost(exc: Exception) -> None:
    rec = Recorder(exc, ok(SEED_ANSWER))
    error = await fails(rec.client(), "submit", AmbiguousSubmitError)
    assert [r.method for r in rec.requests] == ["POST"]  # exactly one submit
    assert type(exc).__name__ in str(error)


@pytest.mark.anyio
@pytest.mark.parametrize("exc", AMBIGUOUS, ids=lambda e: type(e).__name__)
async def test_reads_are_retried_on_the_same_errors(exc: Exception) -> None:
    rec = Recorder(exc, status_body("COMPLETED"))
    status = await run(rec.client(), "status")
    assert status.status == "COMPLETED" and rec.calls == 2


@pytest.mark.anyio
@pytest.mark.parametrize("exc", NEVER_SENT, ids=lambda e: type(e).__name__)
async def test_submit_is_retried_when_the_request_never_left(exc: Exception) -> None:
    rec = Recorder(exc, exc, ok(SEED_ANSWER))
    answer = await run(rec.client(), "submit")
    assert answer.request_id == RID and rec.calls == 3


@pytest.mark.anyio
async def test_submit_connect_errors_give_up_after_the_budget() -> None:
    rec = Recorder(httpx.ConnectError("connection refused"))
    error = await fails(rec.client(), "submit", TransientError)
    assert rec.calls == ATTEMPTS
    assert "gave up after 3 tries" in str(error)


@pytest.mark.anyio
async def test_submit_is_retried_after_429_and_ingress_errors() -> None:
    hits: list[int] = []
    rec = Recorder(raw(429), raw(502, NGINX_502), ok(SEED_ANSWER))
    answer = await run(rec.client(on_rate_limited=lambda: hits.append(1)), "submit")
    assert answer.request_id == RID
    assert [r.method for r in rec.requests] == ["POST"] * 3
    assert hits == [1]


@pytest.mark.anyio
async def test_submit_answer_without_a_request_id_is_ambiguous() -> None:
    rec = Recorder(ok({"status": "IN_QUEUE"}))
    await fails(rec.client(), "submit", AmbiguousSubmitError)
    assert rec.calls == 1


@pytest.mark.anyio
async def test_unsendable_input_fails_before_anything_is_sent() -> None:
    rec = Recorder(ok(SEED_ANSWER))
    async with rec.client() as client:
        with pytest.raises(FinalError, match="cannot be sent as JSON"):
            await client.submit(ENDPOINT, {"seed": math.nan})
    assert rec.calls == 0


# --- good answers ------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_status_parsing_is_tolerant() -> None:
    logs = [{"message": "step 1", "level": "INFO", "source": "user", "timestamp": "t"}, "junk"]
    rec = Recorder(
        ok({"status": "IN_QUEUE", "queue_position": 4}, 202),
        ok({"status": "IN_PROGRESS", "logs": logs}, 202),
        ok({"status": "COMPLETED", "error": "took too long", "error_type": "request_timeout"}),
    )
    async with rec.client() as client:
        queued, running, done = [await client.status(ENDPOINT, RID) for _ in range(3)]
    assert isinstance(queued, QueueStatus)
    assert (queued.status, queued.queue_position, queued.logs) == ("IN_QUEUE", 4, None)
    assert running.logs == [logs[0]] and running.error is None
    assert done.done and done.error == "took too long" and done.error_type == "request_timeout"
    assert done.raw["error_type"] == "request_timeout"


@pytest.mark.anyio
async def test_result_returns_the_output() -> None:
    output = {"video": {"url": "https://v3.fal.media/files/x.mp4", "file_size": 12}}
    plain = await run(Recorder(ok(output)).client(), "result")
    assert (plain.output, plain.billable_units) == (output, None)
    billed = await run(Recorder(ok(output, **{"x-fal-billable-units": "8"})).client(), "result")
    assert (billed.output, billed.billable_units) == (output, 8.0)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (raw(202), "CANCELLATION_REQUESTED"),
        (ok({"status": "CANCELLATION_REQUESTED"}, 202), "CANCELLATION_REQUESTED"),
        (ok({"detail": "done already"}, 400), "ALREADY_COMPLETED"),
        (raw(404, b"Not Found"), "NOT_FOUND"),
        (ok({"status": "ALREADY_COMPLETED"}, 200), "ALREADY_COMPLETED"),
        (ok({"status": "NOT_FOUND"}, 400), "NOT_FOUND"),
    ],
)
async def test_cancel_answers(answer: httpx.Response, expected: str) -> None:
    rec = Recorder(answer)
    assert await run(rec.client(), "cancel") == expected
    assert rec.calls == 1 and rec.requests[0].content == b""


# --- logging -------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_one_debug_line_per_request_and_never_the_token(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    rec = Recorder(
        raw(429, headers={"retry-after": "0"}),
        ok(SEED_ANSWER),
        httpx.ReadTimeout("t"),
        ok({"detail": f"bad {TOKEN}"}, 401),
    )
    async with rec.client() as client:
        await client.submit(ENDPOINT, {"prompt": "p"})
        with pytest.raises(KeyRefusedError):
            await client.status(ENDPOINT, RID)
    lines = [r.getMessage() for r in caplog.records if r.name == "batchrunner.client"]
    assert lines[0].startswith(f"POST {BASE}/fal-ai/veo3/image-to-video -> 429 (")
    assert lines[1].startswith(f"POST {BASE}/fal-ai/veo3/image-to-video -> 200 (")
    assert lines[2].startswith(
        f"GET {BASE}/fal-ai/veo3/requests/{RID}/status?logs=1 -> ReadTimeout"
    )
    assert lines[3].endswith("s)") and "-> 401" in lines[3]
    assert len(lines) == 4
    assert all(r.levelno == logging.DEBUG for r in caplog.records if r.name == "batchrunner.client")
    assert TOKEN not in caplog.text


@pytest.mark.anyio
async def test_result_of_a_cancelled_request_is_final_not_still_running() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        body = {"detail": "Request was cancelled", "error_type": "request_cancelled"}
        return httpx.Response(400, json=body, headers={"x-fal-request-id": "r"})

    api = ApiConfig(base_url=BASE, auth_scheme="bearer", token=TOKEN)
    async with QueueClient(
        api, retry=RetryPolicy.fast(), transport=httpx.MockTransport(handler)
    ) as c:
        with pytest.raises(FinalError, match="cancelled"):
            await c.result("fal-ai/veo3/image-to-video", "r")

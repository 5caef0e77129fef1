"""What an answer of the queue API means: the one place that decides it.

Every answer (or failed exchange) of :class:`~batchrunner.client.QueueClient` comes through
here: :func:`classify` names the error an HTTP answer means, :func:`classify_transport` the
error a failed exchange means, and the parsers read the good ones (:func:`parse_status`,
:func:`billable_units`). Each error's type says the level it belongs to
(:mod:`batchrunner.errors`): a request's (retried), a job's (that job ends) or the run's (the
run stops buying). Messages are made one readable line, scrubbed of the token.

Transient errors are retried per :class:`~batchrunner.retry.RetryPolicy`; everything else is
raised at once. The queue has no idempotency key, so a submit is retried only when the answer
proves no job was created; when it might have been, :class:`AmbiguousSubmitError` is raised and
never retried.

======================================  ===========  ===========  =============  ===========
answer                                  submit       status       result         cancel
======================================  ===========  ===========  =============  ===========
2xx, JSON object                        ok           ok           ok             ok
2xx, not a JSON object (HTML, cut off)  Ambiguous    Transient    Transient      ok (code)
202 on result (not finished)                                      Transient
3xx (never followed)                    Redirected   Redirected   Redirected     Redirected
400                                     Final        Final        Transient [1]  ALREADY_...
401, 403 (key refused)                  KeyRefused   KeyRefused   KeyRefused     KeyRefused
402, 403 "User is locked" (account)     Locked       Locked       Locked         Locked
404                                     Final        Final [2]    Expired [3]    NOT_FOUND
408, 409 (as fal's own client)          Transient    Transient    Transient      Transient
422 (message = the ``detail``)          Final        Final        Final          Final
429 (``retry_after`` from Retry-After)  RateLimited  RateLimited  RateLimited    RateLimited
other 4xx                               Final        Final        Final          Final
504 + X-Fal-Request-Timeout-Type: user  Final        Final        Final          Final
502/503/504, no x-fal-request-id        Transient    Transient    Transient      Transient
5xx from the app with a JSON detail     Final [4]    Final [4]    Final          Final [4]
502/503/504 from the app, no detail     Transient    Transient    Transient      Transient
500, other 5xx, no JSON detail          Ambiguous    Transient    Transient      Transient
connect error/timeout, pool timeout     Transient    Transient    Transient      Transient
... all of them for 10 s, or 5 min [5]  Unreachable  Unreachable  Unreachable    Unreachable
TLS certificate verification failed     Unreachable  Unreachable  Unreachable    Unreachable
read/write error or timeout, dropped    Ambiguous    Transient    Transient      Transient
======================================  ===========  ===========  =============  ===========

[1] fal answers 400 while the request is still running. [2] "request not found at the
provider". [3] :class:`ResultExpiredError`: results are kept about an hour. [4] except 502/503/504
(``runner_scheduling_failure``, ``startup_timeout``...) on submit, status and cancel: infrastructure
hiccups, Transient; on *result* the same answer is the job's stored failure, so Final. [5] 10 s
before the API first answered in this run (a wrong address, offline); 5 min once it has, while
the request waits for the network without using up its retries (:mod:`batchrunner.reach`).

Why submit differs: 429, 408/409, the ingress' 502/503/504 (no ``x-fal-request-id``: the app
never saw the request, PROTOCOL.md) and connect failures prove there is no job, so they are
retried. A 2xx whose body is unreadable, a bare 500, or a connection lost after the body was
sent may hide a created, billed job: Ambiguous, left for the caller to reconcile. So is a 2xx
submit answer without a ``request_id``.

Details: "JSON detail" means fal's ``detail`` field; a reseller's ``error``/``message`` only
feeds the message. A status object whose ``status`` is unknown or missing is Transient: polling
again is harmless, failing the job could throw away a paid result. "dropped" covers
``RemoteProtocolError`` (the server closed the connection without an answer).

KeyRefused, Locked and Unreachable are :class:`~batchrunner.errors.RunError` s: they are about
the account or the network, not one job, so they are never retried and the scheduler stops the
run rather than failing jobs.
"""

from __future__ import annotations

import email.utils
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, cast

import httpx

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
    RunError,
    TransientError,
    UnreachableError,
)
from batchrunner.providers import origin_of
from batchrunner.transport import Answer

Op = Literal["submit", "status", "result", "cancel"]
Status = Literal["IN_QUEUE", "IN_PROGRESS", "COMPLETED"]
STATUSES: tuple[Status, ...] = ("IN_QUEUE", "IN_PROGRESS", "COMPLETED")
CANCEL_ANSWERS = ("CANCELLATION_REQUESTED", "ALREADY_COMPLETED", "NOT_FOUND")
SNIPPET_BYTES = 200
REQUEST_ID_HEADER = "x-fal-request-id"
TIMEOUT_TYPE_HEADER = "x-fal-request-timeout-type"
GATEWAY_CODES = (502, 503, 504)
# fal: "User is locked. Reason: Exhausted balance ..."; resellers word it their own way
_LOCKED = re.compile(r"\blocked\b|balance|credit|top.?up|billing|payment|quota", re.IGNORECASE)
# a Python object's repr in an exception's text (aiohttp's "ssl:<ssl.SSLContext object at
# 0x7f...>"): an address in memory, nothing a user can act on
_OBJECT_REPR = re.compile(r"\s*(?:\w+:)?<[\w.]+ object at 0x[0-9a-fA-F]+>")
# The request never left this machine: retrying cannot duplicate anything.
NEVER_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.ProxyError)


def billable_units(response: Answer) -> float | None:
    raw = response.headers.get("x-fal-billable-units")
    try:
        units = float(raw) if raw is not None else None
    except ValueError:
        return None
    return units if units is not None and math.isfinite(units) and units >= 0 else None


@dataclass(frozen=True)
class QueueStatus:
    """One status poll. A failed request is ``COMPLETED`` with ``error`` set (no FAILED)."""

    status: Status
    queue_position: int | None
    error: str | None
    error_type: str | None
    logs: list[dict[str, Any]] | None
    raw: dict[str, Any]

    @property
    def done(self) -> bool:
        return self.status == "COMPLETED"


# --- reading answers -----------------------------------------------------------------------------


class _NotJson:
    """Marker for a body that is not JSON."""


NOT_JSON = _NotJson()


def json_body(response: Answer) -> object:
    try:
        return json.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        return NOT_JSON


def _clean(text: str, secrets: Sequence[str] = (), limit: int = 500) -> str:
    """One printable line, secrets replaced by ``***``, at most ``limit`` characters."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    text = _OBJECT_REPR.sub("", text)
    text = "".join(ch if ch.isprintable() else " " for ch in text)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def scrubbed(value: Any, secrets: Sequence[str]) -> Any:
    """``value`` (a parsed JSON answer) with each secret in its text replaced by ``***``: a
    result that echoes the key (in a file name, a URL) is stored in the ledger and exported."""
    if isinstance(value, str):
        for secret in secrets:
            if secret:
                value = value.replace(secret, "***")
        return value
    if isinstance(value, dict):
        return {scrubbed(k, secrets): scrubbed(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [scrubbed(item, secrets) for item in value]
    return value


def _snippet(response: Answer, secrets: Sequence[str]) -> str:
    head = response.content[:SNIPPET_BYTES].decode("utf-8", errors="replace")
    return repr(_clean(head, secrets)) if head.strip() else "(empty body)"


def _render(value: object) -> str | None:
    """A ``detail`` (string, list of ``{loc, msg}``, or object) as one readable string."""
    if value is None or value == "" or value == [] or value == {}:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "; ".join(_render_item(item) for item in value)
    if isinstance(value, dict):
        for key in ("message", "msg", "detail"):
            if isinstance(value.get(key), str):
                return cast(str, value[key])
    return json.dumps(value, ensure_ascii=False, default=str)


def _render_item(item: object) -> str:
    if not isinstance(item, dict) or "msg" not in item:
        return _render(item) or ""
    loc = item.get("loc")
    parts = [str(p) for p in loc] if isinstance(loc, list) else []
    if parts and parts[0] in ("body", "query", "path"):
        parts = parts[1:]
    where = ".".join(parts)
    return f"{where}: {item['msg']}" if where else str(item["msg"])


def _detail(body: object) -> str | None:
    """The app's ``detail`` (fal's error field), rendered; None if there is none."""
    return _render(body.get("detail")) if isinstance(body, dict) else None


def _explanation(body: object) -> str | None:
    """Whatever the body says went wrong: ``detail``, else ``error`` or ``message``."""
    if not isinstance(body, dict):
        return None
    for key in ("detail", "error", "message"):
        text = _render(body.get(key))
        if text:
            return text
    return None


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds from a Retry-After header: a number (fractions allowed) or an HTTP date."""
    if value is None or not value.strip():
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value.strip())
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return max(0.0, seconds) if math.isfinite(seconds) else None


# --- classification: the one place that decides what a failure means ---------------------------


def classify(response: Answer, op: Op, *, secrets: Sequence[str] = ()) -> ProviderError | None:
    """The error ``response`` means for operation ``op``, or None if it is a usable answer.

    See the module docstring for the table. Messages are scrubbed of ``secrets``.
    """
    code = response.status_code
    body = json_body(response)

    def said(default: str = "") -> str:
        text = _explanation(body)
        if text is None:
            return default
        return _clean(text, secrets)

    if 200 <= code < 300:
        if op == "cancel":
            return None
        if op == "result" and code == 202:
            return TransientError("the result is not ready yet (202)", status=code)
        if isinstance(body, dict):
            return None
        snippet = _snippet(response, secrets)
        if op == "submit":
            return AmbiguousSubmitError(
                f"the submit was answered {code} but the answer is not JSON: {snippet}",
                status=code,
            )
        return TransientError(
            f"the API answered {code} with a body that is not JSON: {snippet}", status=code
        )
    if 300 <= code < 400:  # the run's trouble: every request to this base URL is redirected
        return RedirectedError(
            f"the API answered {code} with a redirect to {_location_origin(response)}; "
            "redirects are not followed: check the API base URL (--base-url)",
            status=code,
        )
    if code == 429:
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        hint = "" if retry_after is None else f"; retry after {retry_after:g}s"
        return RateLimitedError(
            f"the API is rate limiting requests (429){hint}", retry_after=retry_after
        )
    if code == 402 or (code == 403 and _LOCKED.search(said())):
        return AccountLockedError(
            f"the account cannot start billable work ({code}{_suffix(said())})", status=code
        )
    if code in (401, 403):
        return KeyRefusedError(f"{code} {said() or 'key refused'}", status=code)
    if code in (408, 409):
        return TransientError(f"the API answered {code}{_suffix(said())}", status=code)
    if code == 404:
        if op == "result":
            return ResultExpiredError(
                "result expired: the provider keeps results about an hour after completion; "
                "this job must be re-run",
                status=code,
            )
        if op == "status":
            return RequestGoneError(
                "request not found at the provider (it keeps a request's records a limited "
                "time)" + _suffix(said()),
                status=code,
            )
        return FinalError(f"not found at the provider (404){_suffix(said())}", status=code)
    if code == 400 and op == "result":
        if isinstance(body, dict) and body.get("error_type"):  # a stored failure, e.g. cancelled
            failure = said(f"the request failed ({code})") + _error_type(response, body)
            return FinalError(failure, status=code)
        return TransientError("the request is still running (400)" + _suffix(said()), status=code)
    if code == 422:
        return FinalError(said(f"the API rejected the input ({code})"), status=code)
    if code < 500:
        return FinalError(f"the API answered {code}{_suffix(said())}", status=code)

    # 5xx
    if code == 504 and response.headers.get(TIMEOUT_TYPE_HEADER, "").lower() == "user":
        return FinalError(
            "the request timed out at the provider (504, the X-Fal-Request-Timeout you set)"
            + _suffix(said()),
            status=code,
        )
    from_app = REQUEST_ID_HEADER in response.headers
    if code in GATEWAY_CODES and not from_app:
        return TransientError(
            f"the API gateway answered {code}: {_snippet(response, secrets)}", status=code
        )
    detail = _detail(body)
    error_type = _error_type(response, body)
    if detail is not None and (op == "result" or code not in GATEWAY_CODES):
        return FinalError(_clean(detail, secrets) + error_type, status=code)
    if code in GATEWAY_CODES:
        return TransientError(
            f"the API is temporarily unavailable ({code}){_suffix(said())}", status=code
        )
    if op == "submit":
        return AmbiguousSubmitError(
            f"the API failed ({code}) after receiving the submit: {_snippet(response, secrets)}",
            status=code,
        )
    return TransientError(f"the API failed ({code}): {_snippet(response, secrets)}", status=code)


def _suffix(text: str) -> str:
    return f": {text}" if text else ""


def _error_type(response: Answer, body: object) -> str:
    kind = body.get("error_type") if isinstance(body, dict) else None
    kind = kind or response.headers.get("x-fal-error-type")
    return f" [{_clean(str(kind), limit=60)}]" if kind else ""


def _location_origin(response: Answer) -> str:
    location = response.headers.get("location")
    if not location:
        return "an unnamed location"
    try:
        return origin_of(response.url.join(location))
    except (httpx.InvalidURL, ValueError):
        return "an invalid location"


NOT_REACHED = "could not reach the API"  # a request that never left (a connect error)


def classify_transport(
    exc: httpx.RequestError, *, idempotent: bool, secrets: Sequence[str] = ()
) -> ProviderError:
    """The error a failed exchange means. ``idempotent`` is False only for the submit POST.

    Connect errors, connect and pool timeouts mean the request never left: Transient. A
    header that cannot be written (:mod:`batchrunner.wire` refuses it before connecting) is the
    same for every request: a :class:`RunError`, with nothing sent. Anything
    later (read/write timeouts and errors, a remote disconnect, an undecodable body) may have
    reached the server: Transient for idempotent requests, Ambiguous for a submit.
    """
    what = type(exc).__name__ + (f": {_clean(str(exc), secrets, 200)}" if str(exc) else "")
    if isinstance(exc, httpx.UnsupportedProtocol):
        return FinalError(f"cannot send the request ({what})")
    if isinstance(exc, httpx.LocalProtocolError):  # a header no HTTP can carry: refused unsent
        return RunError(f"cannot send a request to the API ({what}); nothing was sent")
    if isinstance(exc, httpx.ConnectError) and "CERTIFICATE_VERIFY_FAILED" in str(exc):
        return UnreachableError(f"the API's TLS certificate does not verify ({what})")
    if isinstance(exc, NEVER_SENT):
        return TransientError(f"{NOT_REACHED} ({what})")
    if not idempotent:
        return AmbiguousSubmitError(f"the submit was sent but its answer was lost ({what})")
    return TransientError(f"the connection to the API failed ({what})")


# --- parsing good answers ------------------------------------------------------------------------


def int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def parse_status(body: Mapping[str, Any]) -> QueueStatus:
    """A :class:`QueueStatus` from a status object; tolerant of missing keys.

    An unknown or missing ``status`` is a :class:`TransientError`: polling again is harmless,
    while failing the job could throw away a paid result.
    """
    status = body.get("status")
    if status not in STATUSES:
        raise TransientError(
            f"the API sent an unknown queue status {_clean(repr(status), limit=60)}"
        )
    error = _render(body.get("error"))
    error_type = body.get("error_type")
    logs = body.get("logs")
    return QueueStatus(
        status=cast(Status, status),
        queue_position=int_or_none(body.get("queue_position")),
        error=error,
        error_type=error_type if isinstance(error_type, str) and error_type else None,
        logs=[e for e in logs if isinstance(e, dict)] if isinstance(logs, list) else None,
        raw=dict(body),
    )


def parse_cancel(response: Answer) -> str:
    body = json_body(response)
    said = body.get("status") if isinstance(body, dict) else None
    if said in CANCEL_ANSWERS:
        return cast(str, said)
    if response.status_code == 400:
        return "ALREADY_COMPLETED"
    if response.status_code == 404:
        return "NOT_FOUND"
    return "CANCELLATION_REQUESTED"

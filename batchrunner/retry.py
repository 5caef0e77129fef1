"""Retrying transient failures: a policy object and one loop that applies it.

Like hynek/stamina, *what* is retried is decided by the exception type (``retry_on``; by default
:class:`~batchrunner.errors.TransientError`), *how long* to wait by :class:`RetryPolicy`, and a
server's Retry-After comes in through the exception (:class:`RateLimitedError.retry_after`).

Waiting before try ``n + 1`` after try ``n`` failed:

* backoff = ``min(max_delay, base_delay * 2 ** (n - 1))``;
* with ``jitter`` ("equal jitter") the wait is uniform in ``[backoff / 2, backoff]``, so
  workers that failed together spread out but never retry much sooner than planned;
* a Retry-After is a **minimum**: the wait is ``max(backoff, min(retry_after, max_retry_after))``.
  A server asking for more than ``max_retry_after`` gets ``max_retry_after``.

The loop is bounded twice: after ``attempts`` tries, or when the next wait would end more than
``total`` seconds after the first try began, the last error is re-raised, its message extended
with "(gave up after N tries)". API calls and downloads share this one loop (stamina was weighed:
it would replace these ~40 lines but not the Retry-After-as-a-minimum rule or the scheduler's
throttle loop, and adds a dependency). Each scheduled retry logs one INFO line with the stable event
name ``retry_scheduled`` on the ``batchrunner.retry`` logger.

For tests, :meth:`RetryPolicy.fast` keeps the retry count but does not wait.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import anyio

from batchrunner.errors import RateLimitedError, TransientError

logger = logging.getLogger("batchrunner.retry")

T = TypeVar("T")
E = TypeVar("E", bound=BaseException)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry a retryable failure."""

    attempts: int = 8  # total tries for a retryable failure (1 = no retry)
    base_delay: float = 0.5
    max_delay: float = 30.0  # cap of the exponential backoff
    max_retry_after: float = 300.0  # a server's Retry-After is honoured up to this
    jitter: bool = True  # equal jitter: uniform in [backoff / 2, backoff]
    total: float = 300.0  # seconds: no retry is scheduled to start later than this after try 1

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts must be at least 1, got {self.attempts}")
        if min(self.base_delay, self.max_delay, self.max_retry_after) < 0:
            raise ValueError("retry delays must not be negative")

    @classmethod
    def fast(cls, attempts: int = 8) -> RetryPolicy:
        """The same bounded retrying without any waiting (stamina's test switch)."""
        return cls(attempts=attempts, base_delay=0.0, max_delay=0.0, max_retry_after=0.0)

    def backoff(self, attempt: int) -> float:
        """The un-jittered exponential backoff after failed try ``attempt`` (1-based)."""
        exponent = min(max(attempt, 1) - 1, 64)  # 2**64 * anything is far past any cap
        return min(self.max_delay, self.base_delay * 2.0**exponent)

    def delay(self, attempt: int, error: BaseException) -> float:
        """Seconds to wait after failed try ``attempt`` (1-based) that raised ``error``."""
        wait = self.backoff(attempt)
        if self.jitter:
            wait = wait / 2 + random.uniform(0, wait / 2)
        if isinstance(error, RateLimitedError) and error.retry_after is not None:
            wait = max(wait, min(error.retry_after, self.max_retry_after))
        return wait


OUTAGE_RETRY = 5.0  # seconds: the longest wait between tries while an origin is down


def mark_waiting(error: E) -> E:
    """Mark ``error`` as an outage the run is waiting for: retried by :func:`call_with_retry`
    without using up the attempts or the time of its policy."""
    error.waiting_for_network = True  # type: ignore[attr-defined]
    return error


def _mark_gave_up(error: BaseException, tries: int) -> None:
    """Append "(gave up after N tries)" to the error's message, keeping its type and fields."""
    if error.args and isinstance(error.args[0], str):
        plural = "try" if tries == 1 else "tries"
        error.args = (f"{error.args[0]} (gave up after {tries} {plural})", *error.args[1:])


async def call_with_retry(
    policy: RetryPolicy,
    fn: Callable[[], Awaitable[T]],
    *,
    retry_on: tuple[type[BaseException], ...] = (TransientError,),
    on_retry: Callable[[int, BaseException, float], None] | None = None,
    sleep: Callable[[float], Awaitable[object]] = anyio.sleep,
) -> T:
    """Await ``fn()`` until it succeeds, retrying ``retry_on`` errors as ``policy`` says.

    Errors not in ``retry_on`` propagate at once. ``on_retry(attempt, error, delay)`` is called
    before each wait. After ``policy.attempts`` tries the last error is re-raised. A try that
    found its origin down while the run waits for it (:func:`mark_waiting`) uses up neither
    tries nor time: it is tried again every few seconds, and the origin's patience
    (:mod:`batchrunner.reach`) bounds the wait.
    """
    attempt = waited = 1
    started = time.monotonic()
    while True:
        tried = time.monotonic()
        try:
            return await fn()
        except retry_on as error:
            if getattr(error, "waiting_for_network", False):
                await sleep(min(policy.delay(waited, error), OUTAGE_RETRY))
                waited += 1
                started += time.monotonic() - tried  # the outage is not this call's budget
                continue
            wait = policy.delay(attempt, error)
            if attempt >= policy.attempts or time.monotonic() - started + wait > policy.total:
                _mark_gave_up(error, attempt)
                raise
            logger.info(
                "retry_scheduled: %s; try %d of %d in %.2fs",
                error,
                attempt + 1,
                policy.attempts,
                wait,
            )
            if on_retry is not None:
                on_retry(attempt, error, wait)
            await sleep(wait)
            attempt += 1

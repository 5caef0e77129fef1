"""A process-wide request-rate limit shared by every task that talks to the API.

By default there is no fixed rate: the limit is adaptive, like the concurrency limit
(:mod:`batchrunner.adaptive`). A 429 on a poll, stream or result (:meth:`RateLimiter.throttled`)
sets the rate to half of what was actually sent in the last second (at most one cut a second,
never below ``MIN_RPS``); each second without another 429 the rate grows by 10 %, and once it is
four times what it was cut to (or reaches ``--rps``, the ceiling a user may set) it is lifted.
So a provider that never throttles is never waited for, and one that does is driven just below
the rate it accepts.

:class:`RateLimiter` is a GCRA ("next free slot") limiter without bursts: each
:meth:`~RateLimiter.acquire` books the next slot, ``1 / rps`` seconds after the previous one, and
sleeps until it. Booking happens under an :class:`anyio.Lock`, sleeping outside it, so waiting
tasks never hold the lock and requests start in booking order. Starts are therefore at least
``1 / rps`` apart: no more than ``rps`` of them in any one-second window.

A slot booked by a task that is cancelled while waiting is simply left unused.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable

import anyio

from batchrunner.errors import UsageError

logger = logging.getLogger(__name__)

MIN_RPS = 1.0  # an adaptive cut never goes below this many requests per second
GROWTH = 1.1  # per second without a 429
RECOVERED = 4.0  # lifted (back to the ceiling) once this many times the rate it was cut to


class RateLimiter:
    """Space request starts ``1 / rps`` seconds apart; ``rps=None`` means no fixed limit.

    ``rps`` is the ceiling; :meth:`throttled` lowers the rate in force below it for a while.
    ``clock`` (seconds, monotonic) and ``sleep`` are injectable so tests can run it on a fake
    clock.
    """

    def __init__(
        self,
        rps: float | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = anyio.sleep,
    ) -> None:
        if rps is not None and (not math.isfinite(rps) or rps <= 0):
            raise UsageError(f"the request rate must be a positive number per second, got {rps}")
        self.ceiling = rps
        self.rps = rps  # the rate in force
        self._interval = 0.0 if rps is None else 1.0 / rps
        self._clock = clock
        self._sleep = sleep
        self._next_slot = -math.inf
        self._lock = anyio.Lock()
        self._cut: tuple[float, float] | None = None  # (when, to what rate) of the last cut
        self._recent: deque[float] = deque()  # request starts in the last second

    def throttled(self) -> None:
        """The provider answered 429 to a request that a rate limit would have spaced out:
        halve the rate to what was really sent in the last second (once a second at most)."""
        now = self._clock()
        if self._cut is not None and now - self._cut[0] < 1.0:
            return
        self._forget(now)
        sent = float(len(self._recent))
        rate = max(MIN_RPS, min(sent, self.rps or sent) / 2)
        if self.ceiling is not None:
            rate = min(rate, self.ceiling)
        self._cut = (now, rate)
        self._set(rate)
        logger.info("provider throttling: request rate now %.1f per second", rate)

    def _forget(self, now: float) -> None:
        while self._recent and self._recent[0] <= now - 1.0:
            self._recent.popleft()

    def _set(self, rps: float | None) -> None:
        self.rps = rps
        self._interval = 0.0 if rps is None else 1.0 / rps

    def _recover(self, now: float) -> None:
        assert self._cut is not None
        when, cut_to = self._cut
        rate = cut_to * GROWTH ** (now - when)
        if rate >= cut_to * RECOVERED or (self.ceiling is not None and rate >= self.ceiling):
            self._cut = None
            self._set(self.ceiling)
        else:
            self._set(rate)

    def __repr__(self) -> str:
        return f"RateLimiter(rps={self.rps!r})"

    async def acquire(self) -> None:
        """Return when this caller may start a request (at once when unlimited)."""
        if self._cut is None and self.rps is None:
            self._recent.append(self._clock())
            if len(self._recent) > 4096:
                self._forget(self._recent[-1])
            return
        async with self._lock:
            now = self._clock()
            self._recent.append(now)
            if len(self._recent) > 4096:
                self._forget(now)
            if self._cut is not None:
                self._recover(now)
            if self.rps is None:
                return
            slot = max(now, self._next_slot)
            self._next_slot = slot + self._interval
        if slot > now:
            await self._sleep(slot - now)

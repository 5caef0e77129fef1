"""A process-wide request-rate limit shared by every task that talks to the API.

:class:`RateLimiter` is a GCRA ("next free slot") limiter without bursts: each
:meth:`~RateLimiter.acquire` books the next slot, ``1 / rps`` seconds after the previous one, and
sleeps until it. Booking happens under an :class:`anyio.Lock`, sleeping outside it, so waiting
tasks never hold the lock and requests start in booking order. Starts are therefore at least
``1 / rps`` apart: no more than ``rps`` of them in any one-second window.

A slot booked by a task that is cancelled while waiting is simply left unused.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable

import anyio

from batchrunner.errors import UsageError


class RateLimiter:
    """Space request starts ``1 / rps`` seconds apart; ``rps=None`` means no limit.

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
        self.rps = rps
        self._interval = 0.0 if rps is None else 1.0 / rps
        self._clock = clock
        self._sleep = sleep
        self._next_slot = -math.inf
        self._lock = anyio.Lock()

    def __repr__(self) -> str:
        return f"RateLimiter(rps={self.rps!r})"

    async def acquire(self) -> None:
        """Return when this caller may start a request (at once when unlimited)."""
        if self.rps is None:
            return
        async with self._lock:
            now = self._clock()
            slot = max(now, self._next_slot)
            self._next_slot = slot + self._interval
        if slot > now:
            await self._sleep(slot - now)

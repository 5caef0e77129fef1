"""AIMD concurrency: back off hard when the provider throttles, creep back when it doesn't.

The limit starts at ``--concurrency``. Each 429 halves it (at most once per ``cooldown``
seconds, so one burst of 429s counts once), never below 1; each successful submit adds
``1 / limit``, so a full round of successes adds about one slot, up to the ceiling. The limit in
force is an :class:`anyio.CapacityLimiter`'s ``total_tokens``; lowering it never interrupts a job
already holding a slot, it only holds back new submits.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

import anyio

logger = logging.getLogger(__name__)


class AdaptiveLimit:
    def __init__(
        self,
        ceiling: int,
        *,
        cooldown: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[int], None] | None = None,
    ):
        self.ceiling = max(1, ceiling)
        self.value = float(self.ceiling)
        self.slots = anyio.CapacityLimiter(self.ceiling)
        self.cooldown = cooldown
        self._clock = clock
        self._last_decrease = -math.inf
        self._on_change = on_change
        self.decreases = 0

    @property
    def current(self) -> int:
        return int(self.slots.total_tokens)

    def throttled(self) -> None:
        """The provider answered 429: multiplicative decrease."""
        now = self._clock()
        if now - self._last_decrease < self.cooldown:
            return
        self._last_decrease = now
        self.decreases += 1
        self._set(max(1.0, self.value / 2))
        logger.info("provider throttling: concurrency limit now %d", self.current)

    def succeeded(self) -> None:
        """A submit went through: additive increase."""
        if self.value < self.ceiling:
            self._set(min(float(self.ceiling), self.value + 1 / self.value))

    def _set(self, value: float) -> None:
        before = self.current
        self.value = value
        self.slots.total_tokens = max(1, math.floor(value))
        if self.current != before and self._on_change is not None:
            self._on_change(self.current)

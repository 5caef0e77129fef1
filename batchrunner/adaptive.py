"""AIMD concurrency: back off hard when the provider throttles, creep back when it doesn't.

The limit in force is an :class:`anyio.CapacityLimiter`'s ``total_tokens``, between 1 and the
ceiling (``--concurrency``). Lowering it never interrupts a job already holding a slot; it only
holds back new submits.

* **Slow start.** The limit starts at 1 and grows by two per successful submit. A job keeps
  its slot until it completes, so each answered submit lets two more go out: the submits under
  way double every round trip (1, 2, 4, 8, ...), and against a provider that never throttles
  the limit reaches a ceiling of 50 in six round trips, not 49 submits one after another.
* **Multiplicative decrease.** A 429 halves the limit, but not below the number of jobs the
  provider has demonstrably accepted (they are in flight right now, so it can hold that many),
  and always by at least one. A burst of 429s therefore settles on the provider's real cap
  instead of collapsing to 1.
* **Additive increase.** After the first 429, each successful submit adds ``1 / limit``: about
  one slot per round of submits, probing gently for more room.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import anyio

logger = logging.getLogger(__name__)

SLOW_START_STEP = 2.0  # slots opened per successful submit until the first 429


class AdaptiveLimit:
    """The limit; ``on_change`` hears each new value from the first 429 on (a run the provider
    never throttles opens to the ceiling in a few round trips: that is not worth a word)."""

    def __init__(self, ceiling: int, *, on_change: Callable[[int], None] | None = None):
        self.ceiling = max(1, ceiling)
        self.value = 1.0
        self.slow_start = True
        self.slots = anyio.CapacityLimiter(1)
        self._on_change = on_change

    @property
    def current(self) -> int:
        return int(self.slots.total_tokens)

    def throttled(self, accepted_in_flight: int) -> None:
        """The provider answered 429 while ``accepted_in_flight`` of our jobs were queued there."""
        self.slow_start = False
        floor = min(self.value - 1, float(accepted_in_flight))
        self._set(max(1.0, self.value / 2, floor))
        logger.info("provider throttling: concurrency limit now %d", self.current)

    def succeeded(self) -> None:
        """A submit went through."""
        step = SLOW_START_STEP if self.slow_start else 1.0 / self.value
        self._set(min(float(self.ceiling), self.value + step))

    def _set(self, value: float) -> None:
        before = self.current
        self.value = value
        self.slots.total_tokens = max(1, math.floor(value))
        if self.current != before and not self.slow_start and self._on_change is not None:
            self._on_change(self.current)  # only once throttled: slow start is no news
